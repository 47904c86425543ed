/// An IPv4 address stored as a 32-bit integer in host byte order.
///
/// `10.0.0.1` has ``rawValue`` `0x0A000001`. Ordering follows the numeric value, so sorting
/// addresses sorts them the way humans expect. Text parsing is strict (see
/// ``init(parsing:)``) because lenient forms like `010.0.0.1` are read as octal by some
/// tools and decimal by others, which is a classic source of routing mistakes.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible,
    LosslessStringConvertible, Codable
{
    /// The address as a 32-bit integer in host byte order (`10.0.0.1` is `0x0A000001`).
    public var rawValue: UInt32

    /// The unspecified address, `0.0.0.0`.
    public static let any = IPv4Address(rawValue: 0)

    /// The conventional loopback address, `127.0.0.1`.
    public static let loopback = IPv4Address(127, 0, 0, 1)

    /// The limited broadcast address, `255.255.255.255`.
    public static let allOnes = IPv4Address(rawValue: .max)

    /// Creates an address from its 32-bit value in host byte order.
    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    /// Creates an address from its four octets in network order, e.g. `IPv4Address(10, 0, 0, 1)`.
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses a strict dotted-quad address such as `10.0.0.1`.
    ///
    /// Exactly four decimal octets in `0...255` separated by single dots are accepted.
    /// Leading zeros (`01`), empty parts, whitespace, signs and any other character are
    /// rejected, each with a specific ``AddressError/reason``.
    ///
    /// - Throws: ``AddressError`` with kind ``AddressError/Kind/ipv4Address``.
    public init(parsing text: String) throws(AddressError) {
        self.rawValue = try Self.parse(text[...])
    }

    /// Parses a strict dotted-quad address, returning nil if the text is not valid.
    ///
    /// Use ``init(parsing:)`` to learn why a text was rejected.
    public init?(_ description: String) {
        guard let value = try? Self.parse(description[...]) else { return nil }
        self.rawValue = value
    }

    /// The four octets in network order (most significant first).
    public var octets: [UInt8] {
        [
            UInt8(truncatingIfNeeded: rawValue >> 24), UInt8(truncatingIfNeeded: rawValue >> 16),
            UInt8(truncatingIfNeeded: rawValue >> 8), UInt8(truncatingIfNeeded: rawValue),
        ]
    }

    /// Creates an address from exactly four octets in network order.
    ///
    /// - Throws: ``AddressError`` if the collection does not hold exactly four elements.
    public init(octets: some Collection<UInt8>) throws(AddressError) {
        guard octets.count == 4 else {
            throw AddressError(
                kind: .ipv4Address, input: "\(Array(octets))",
                reason: "expected 4 octets, found \(octets.count)")
        }
        var value: UInt32 = 0
        for octet in octets { value = value << 8 | UInt32(octet) }
        self.rawValue = value
    }

    /// The address `n` positions after (or, for negative `n`, before) this one.
    ///
    /// - Returns: nil if the result would fall below `0.0.0.0` or above `255.255.255.255`;
    ///   addresses never wrap around.
    public func advanced(by n: Int64) -> IPv4Address? {
        let (sum, overflow) = Int64(rawValue).addingReportingOverflow(n)
        guard !overflow, let value = UInt32(exactly: sum) else { return nil }
        return IPv4Address(rawValue: value)
    }

    /// Whether the address is in `127.0.0.0/8`.
    public var isLoopback: Bool { rawValue >> 24 == 127 }

    /// Whether the address is in `224.0.0.0/4`.
    public var isMulticast: Bool { rawValue >> 28 == 0xE }

    /// Whether the address is `0.0.0.0`.
    public var isUnspecified: Bool { rawValue == 0 }

    /// Whether the address is in the link-local block `169.254.0.0/16`.
    public var isLinkLocal: Bool { rawValue >> 16 == 0xA9FE }

    /// Whether the address is in one of the RFC 1918 private blocks
    /// (`10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`).
    public var isPrivate: Bool {
        rawValue >> 24 == 10 || rawValue >> 20 == 0xAC1 || rawValue >> 16 == 0xC0A8
    }

    /// The dotted-quad form, e.g. `10.0.0.1`.
    public var description: String {
        var text = ""
        text.reserveCapacity(15)
        text += String(rawValue >> 24)
        text += "."
        text += String(rawValue >> 16 & 0xFF)
        text += "."
        text += String(rawValue >> 8 & 0xFF)
        text += "."
        text += String(rawValue & 0xFF)
        return text
    }

    /// Orders addresses by numeric value.
    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool {
        lhs.rawValue < rhs.rawValue
    }

    /// Decodes an address from a single dotted-quad string.
    ///
    /// - Throws: `DecodingError.dataCorrupted` naming the text and the reason if it is invalid.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do throws(AddressError) {
            self = try IPv4Address(parsing: text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    /// Encodes the address as a single dotted-quad string.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// The strict dotted-quad parser shared by the address, network and IPv6 parsers.
    ///
    /// Works on a `Substring` so callers can parse part of a larger text without copying;
    /// errors name the substring as the input and callers re-wrap them as needed.
    static func parse(_ text: Substring) throws(AddressError) -> UInt32 {
        func fail(_ reason: String) -> AddressError {
            AddressError(kind: .ipv4Address, input: String(text), reason: reason)
        }
        if text.isEmpty { throw fail("address is empty") }

        // Character check first: "a.b.c.d" or " 1.2.3.4" should be reported as the bad
        // character, not as a misleading octet-count or empty-octet complaint.
        for scalar in text.unicodeScalars {
            if ParseSupport.decimalValue(scalar) != nil || scalar == "." { continue }
            if ParseSupport.isWhitespace(scalar) {
                throw fail("whitespace (\(ParseSupport.quoted(scalar))) is not allowed")
            }
            if scalar == "+" || scalar == "-" {
                throw fail("signs (\(ParseSupport.quoted(scalar))) are not allowed")
            }
            if scalar == ":" { throw fail("\":\" is not allowed (is this an IPv6 address?)") }
            if scalar == "/" { throw fail("\"/\" is not allowed (is this a network?)") }
            throw fail("unexpected character \(ParseSupport.quoted(scalar))")
        }

        let parts = text.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for (index, part) in parts.enumerated() where part.isEmpty {
            if index == 0 { throw fail("address must not start with \".\"") }
            if index == parts.count - 1 { throw fail("address must not end with \".\"") }
            throw fail("empty octet between dots")
        }
        guard parts.count == 4 else {
            throw fail("expected 4 octets, found \(parts.count)")
        }

        var value: UInt32 = 0
        for part in parts {
            // Every byte is an ASCII digit here, so the part is valid UTF-8 on its own.
            let partText = String(decoding: part, as: UTF8.self)
            if part.count > 1, part.first == UInt8(ascii: "0") {
                throw fail("leading zeros are not allowed in \(ParseSupport.quoted(partText))")
            }
            var octet: UInt32 = 0
            for byte in part where octet <= 255 {
                octet = octet * 10 + UInt32(byte - UInt8(ascii: "0"))
            }
            if octet > 255 || part.count > 3 {
                throw fail("octet \(partText) is larger than 255")
            }
            value = value << 8 | octet
        }
        return value
    }
}
