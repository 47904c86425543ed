/// An IPv6 address stored as two big-endian 64-bit halves.
///
/// ``high`` holds the first eight bytes and ``low`` the last eight, so the numeric order of
/// `(high, low)` is the address order. Two `UInt64`s are used instead of `UInt128` so the
/// module has no OS-version availability constraints.
public struct IPv6Address: Hashable, Comparable, Sendable, CustomStringConvertible,
    LosslessStringConvertible, Codable
{
    /// The first eight bytes of the address, as a big-endian integer.
    public var high: UInt64

    /// The last eight bytes of the address, as a big-endian integer.
    public var low: UInt64

    /// The unspecified address, `::`.
    public static let any = IPv6Address(high: 0, low: 0)

    /// The loopback address, `::1`.
    public static let loopback = IPv6Address(high: 0, low: 1)

    /// Creates an address from its two big-endian halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Creates an address from eight 16-bit groups in network order.
    ///
    /// - Throws: ``AddressError`` if the collection does not hold exactly eight elements.
    public init(groups: some Collection<UInt16>) throws(AddressError) {
        guard groups.count == 8 else {
            throw AddressError(
                kind: .ipv6Address, input: "\(Array(groups))",
                reason: "expected 8 groups, found \(groups.count)")
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, group) in groups.enumerated() {
            if index < 4 { high = high << 16 | UInt64(group) } else { low = low << 16 | UInt64(group) }
        }
        self.init(high: high, low: low)
    }

    /// Creates the IPv4-mapped address `::ffff:a.b.c.d` for an IPv4 address.
    public init(ipv4Mapped address: IPv4Address) {
        self.init(high: 0, low: 0xFFFF_0000_0000 | UInt64(address.rawValue))
    }

    /// Parses any RFC 4291 text form, e.g. `2001:db8::1`, `::`, `::ffff:10.0.0.1`.
    ///
    /// Accepted: one to four hex digits per group (either case, leading zeros allowed), at
    /// most one `::` standing for one or more zero groups, and a strict dotted-quad IPv4
    /// tail in place of the last two groups. Rejected with a specific reason: more than four
    /// digits in a group, several `::`, a wrong number of groups, single leading or trailing
    /// colons, whitespace, and zone identifiers such as `%eth0` (a zone is not part of the
    /// address, so it must be handled by the caller).
    ///
    /// - Throws: ``AddressError`` with kind ``AddressError/Kind/ipv6Address``.
    public init(parsing text: String) throws(AddressError) {
        self = try Self.parse(text[...])
    }

    /// Parses an RFC 4291 text form, returning nil if the text is not valid.
    ///
    /// Use ``init(parsing:)`` to learn why a text was rejected.
    public init?(_ description: String) {
        guard let address = try? Self.parse(description[...]) else { return nil }
        self = address
    }

    /// The eight 16-bit groups in network order.
    public var groups: [UInt16] {
        (0..<8).map { group(at: $0) }
    }

    /// The 16 bytes in network order.
    public var bytes: [UInt8] {
        (0..<16).map { index in
            let half = index < 8 ? high : low
            return UInt8(truncatingIfNeeded: half >> UInt64(56 - 8 * (index % 8)))
        }
    }

    /// Creates an address from exactly 16 bytes in network order.
    ///
    /// - Throws: ``AddressError`` if the collection does not hold exactly 16 elements.
    public init(bytes: some Collection<UInt8>) throws(AddressError) {
        guard bytes.count == 16 else {
            throw AddressError(
                kind: .ipv6Address, input: "\(Array(bytes))",
                reason: "expected 16 bytes, found \(bytes.count)")
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.init(high: high, low: low)
    }

    /// The address `n` positions after (or, for negative `n`, before) this one.
    ///
    /// - Returns: nil if the result would fall below `::` or above
    ///   `ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff`; addresses never wrap around.
    public func advanced(by n: Int64) -> IPv6Address? {
        // n.magnitude is a UInt64, so Int64.min is handled without overflow.
        if n >= 0 {
            let (newLow, carry) = low.addingReportingOverflow(n.magnitude)
            if !carry { return IPv6Address(high: high, low: newLow) }
            guard high != .max else { return nil }
            return IPv6Address(high: high + 1, low: newLow)
        } else {
            let (newLow, borrow) = low.subtractingReportingOverflow(n.magnitude)
            if !borrow { return IPv6Address(high: high, low: newLow) }
            guard high != 0 else { return nil }
            return IPv6Address(high: high - 1, low: newLow)
        }
    }

    /// Whether the address is `::1`.
    public var isLoopback: Bool { high == 0 && low == 1 }

    /// Whether the address is in `ff00::/8`.
    public var isMulticast: Bool { high >> 56 == 0xFF }

    /// Whether the address is `::`.
    public var isUnspecified: Bool { high == 0 && low == 0 }

    /// Whether the address is in the link-local unicast block `fe80::/10`.
    public var isLinkLocal: Bool { high >> 54 == 0x3FA }

    /// Whether the address is in the unique local block `fc00::/7`.
    public var isUniqueLocal: Bool { high >> 57 == 0x7E }

    /// The embedded IPv4 address if this is an IPv4-mapped address (`::ffff:a.b.c.d`).
    public var ipv4Mapped: IPv4Address? {
        guard high == 0, low >> 32 == 0xFFFF else { return nil }
        return IPv4Address(rawValue: UInt32(truncatingIfNeeded: low))
    }

    /// The RFC 5952 canonical text form.
    ///
    /// Lowercase hex without leading zeros; the longest run of two or more zero groups is
    /// written as `::` (the leftmost one on a tie); a single zero group stays `0`.
    /// IPv4-mapped addresses use the mixed form `::ffff:a.b.c.d` as RFC 5952 section 5
    /// recommends.
    public var description: String {
        if let v4 = ipv4Mapped { return "::ffff:\(v4)" }

        // Find the longest run of zero groups; strict '>' keeps the leftmost on ties.
        var bestStart = -1
        var bestLength = 0
        var runStart = -1
        for index in 0..<8 {
            if group(at: index) == 0 {
                if runStart < 0 { runStart = index }
                let runLength = index - runStart + 1
                if runLength > bestLength {
                    bestStart = runStart
                    bestLength = runLength
                }
            } else {
                runStart = -1
            }
        }
        if bestLength < 2 { bestStart = -1 }

        var text = ""
        text.reserveCapacity(39)
        var index = 0
        while index < 8 {
            if index == bestStart {
                text += "::"
                index += bestLength
                continue
            }
            // A separator is needed unless we are at the start or right after "::".
            if index > 0, !text.hasSuffix(":") { text += ":" }
            text += String(group(at: index), radix: 16)
            index += 1
        }
        return text
    }

    /// Orders addresses by numeric value.
    public static func < (lhs: IPv6Address, rhs: IPv6Address) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// Decodes an address from a single string in any RFC 4291 text form.
    ///
    /// - Throws: `DecodingError.dataCorrupted` naming the text and the reason if it is invalid.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do throws(AddressError) {
            self = try IPv6Address(parsing: text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    /// Encodes the address as a single canonical (RFC 5952) string.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// The 16-bit group at `index` in `0..<8`.
    func group(at index: Int) -> UInt16 {
        let half = index < 4 ? high : low
        return UInt16(truncatingIfNeeded: half >> UInt64(48 - 16 * (index % 4)))
    }

    /// The RFC 4291 parser shared by the address and network parsers.
    static func parse(_ text: Substring) throws(AddressError) -> IPv6Address {
        func fail(_ reason: String) -> AddressError {
            AddressError(kind: .ipv6Address, input: String(text), reason: reason)
        }
        if text.isEmpty { throw fail("address is empty") }

        // Character check first so that zones, whitespace and stray characters get a
        // precise message instead of a confusing group-count complaint.
        for (offset, scalar) in zip(0..., text.unicodeScalars) {
            if scalar == ":" || scalar == "." || ParseSupport.hexValue(scalar) != nil { continue }
            if scalar == "%" {
                let zone = String(text.unicodeScalars.dropFirst(offset))
                throw fail(
                    "zone identifiers (\(ParseSupport.quoted(zone))) are not supported; "
                        + "strip the zone before parsing")
            }
            if ParseSupport.isWhitespace(scalar) {
                throw fail("whitespace (\(ParseSupport.quoted(scalar))) is not allowed")
            }
            if scalar == "/" { throw fail("\"/\" is not allowed (is this a network?)") }
            if scalar == "[" || scalar == "]" { throw fail("brackets are not part of an address") }
            throw fail("unexpected character \(ParseSupport.quoted(scalar))")
        }
        if text.contains(":::") { throw fail("\":::\" is not valid") }
        guard text.contains(":") else {
            throw fail("no \":\" found")
        }

        // Split around the single allowed "::".
        let head: Substring
        let tail: Substring
        let compressed: Bool
        if let range = text.firstRange(of: "::") {
            head = text[..<range.lowerBound]
            tail = text[range.upperBound...]
            compressed = true
            if tail.contains("::") { throw fail("\"::\" may appear only once") }
        } else {
            head = text
            tail = text[text.endIndex...]
            compressed = false
        }

        // The IPv4 tail, if any, must be the very last part of the whole text.
        let headGroups = try parseGroups(head, isLast: !compressed, whole: text)
        let tailGroups = try parseGroups(tail, isLast: true, whole: text)
        let count = headGroups.count + tailGroups.count
        if compressed {
            guard count <= 7 else {
                throw fail("\"::\" must stand for at least one zero group, but \(count) groups are present")
            }
        } else {
            guard count == 8 else { throw fail("expected 8 groups, found \(count)") }
        }

        var groups = [UInt16](repeating: 0, count: 8)
        for (index, value) in headGroups.enumerated() { groups[index] = value }
        for (index, value) in tailGroups.enumerated() { groups[8 - tailGroups.count + index] = value }
        do throws(AddressError) {
            return try IPv6Address(groups: groups)
        } catch {
            // Unreachable: exactly eight groups are always supplied.
            throw fail(error.reason)
        }
    }

    /// Parses colon-separated hex groups (one side of "::" or the whole uncompressed text).
    ///
    /// - Parameters:
    ///   - part: The text to split; empty means no groups.
    ///   - isLast: Whether this part ends the address, so its final element may be an IPv4 tail.
    ///   - whole: The complete input, for error messages.
    private static func parseGroups(
        _ part: Substring, isLast: Bool, whole: Substring
    ) throws(AddressError) -> [UInt16] {
        func fail(_ reason: String) -> AddressError {
            AddressError(kind: .ipv6Address, input: String(whole), reason: reason)
        }
        if part.isEmpty { return [] }
        let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
        var groups: [UInt16] = []
        groups.reserveCapacity(8)
        for (index, piece) in pieces.enumerated() {
            if piece.isEmpty {
                if part.startIndex == whole.startIndex, index == 0 {
                    throw fail("address must not start with a single \":\"")
                }
                if part.endIndex == whole.endIndex, index == pieces.count - 1 {
                    throw fail("address must not end with a single \":\"")
                }
                throw fail("empty group")
            }
            if piece.contains(".") {
                guard isLast, index == pieces.count - 1 else {
                    throw fail("an embedded IPv4 address is only allowed as the last part")
                }
                let v4: UInt32
                do throws(AddressError) {
                    v4 = try IPv4Address.parse(piece)
                } catch {
                    throw fail("embedded IPv4 address \(ParseSupport.quoted(piece)): \(error.reason)")
                }
                groups.append(UInt16(truncatingIfNeeded: v4 >> 16))
                groups.append(UInt16(truncatingIfNeeded: v4))
                continue
            }
            guard piece.utf8.count <= 4 else {
                throw fail("group \(ParseSupport.quoted(piece)) has more than 4 hex digits")
            }
            var value: UInt16 = 0
            for scalar in piece.unicodeScalars {
                // Characters were validated up front; treat anything else as a bug-proof error.
                guard let digit = ParseSupport.hexValue(scalar) else {
                    throw fail("unexpected character \(ParseSupport.quoted(scalar))")
                }
                value = value << 4 | digit
            }
            groups.append(value)
        }
        return groups
    }
}
