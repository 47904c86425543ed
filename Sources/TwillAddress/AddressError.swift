/// The error thrown when text or raw values do not describe a valid IP address or network.
///
/// The error carries the rejected input verbatim and a short human-readable reason, so
/// callers can surface it directly in logs or configuration diagnostics, e.g.
/// `invalid IPv4 address "10.0.0.256": octet 256 is larger than 255`.
public struct AddressError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of value was being parsed or constructed; only affects the wording of
    /// ``description``.
    public enum Kind: String, Equatable, Hashable, Sendable, CaseIterable {
        /// An ``IPv4Address``.
        case ipv4Address = "IPv4 address"
        /// An ``IPv4Network``.
        case ipv4Network = "IPv4 network"
        /// An ``IPv6Address``.
        case ipv6Address = "IPv6 address"
        /// An ``IPv6Network``.
        case ipv6Network = "IPv6 network"
        /// An ``IPAddress`` of either family.
        case ipAddress = "IP address"
    }

    /// The kind of value that was rejected.
    public let kind: Kind

    /// The text (or a textual rendering of the value) that was rejected.
    public let input: String

    /// What is wrong with ``input``, e.g. `octet 256 is larger than 255`.
    public let reason: String

    /// Creates an error for a rejected input.
    ///
    /// - Parameters:
    ///   - kind: The kind of value that was being parsed or constructed.
    ///   - input: The rejected text or a rendering of the rejected value.
    ///   - reason: A short explanation of what is wrong.
    public init(kind: Kind, input: String, reason: String) {
        self.kind = kind
        self.input = input
        self.reason = reason
    }

    /// A one-line message naming the kind, the input and the reason, e.g.
    /// `invalid IPv4 address "10.0.0.256": octet 256 is larger than 255`.
    public var description: String {
        // String(reflecting:) quotes the input and escapes control characters, so odd
        // input (newlines, tabs) cannot garble a log line.
        "invalid \(kind.rawValue) \(String(reflecting: input)): \(reason)"
    }

    /// Returns the same failure re-attributed to an enclosing value, keeping the reason.
    ///
    /// Used when an address is parsed as part of a larger text (a network, or an
    /// IPv4 tail inside an IPv6 address) so the error names what the caller passed in.
    func rewrapped(as kind: Kind, input: String, reasonPrefix: String = "") -> AddressError {
        AddressError(kind: kind, input: input, reason: reasonPrefix + reason)
    }
}

/// Shared helpers for the strict text parsers.
enum ParseSupport {
    /// Whether a scalar is one of the whitespace characters we want to call out by name.
    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace
    }

    /// A quoted, escaped rendering of a single scalar for error reasons.
    static func quoted(_ scalar: Unicode.Scalar) -> String {
        String(reflecting: String(Character(scalar)))
    }

    /// A quoted, escaped rendering of some text for error reasons.
    static func quoted(_ text: some StringProtocol) -> String {
        String(reflecting: String(text))
    }

    /// Parses a strict decimal prefix length (no sign, no leading zeros) in `0...maximum`.
    ///
    /// Returns the reason on failure rather than throwing, so each network type can wrap
    /// it with its own kind and input.
    static func parsePrefixLength(_ text: Substring, maximum: Int) -> Result<Int, PrefixFailure> {
        if text.isEmpty {
            return .failure(PrefixFailure(reason: "prefix length after \"/\" is empty"))
        }
        var value = 0
        for scalar in text.unicodeScalars {
            guard let digit = decimalValue(scalar) else {
                return .failure(
                    PrefixFailure(
                        reason: "prefix length \(quoted(text)) is not a decimal number"))
            }
            // Cap accumulation so absurdly long digit strings cannot overflow.
            if value <= maximum { value = value * 10 + digit }
        }
        if text.utf8.count > 1, text.utf8.first == UInt8(ascii: "0") {
            return .failure(
                PrefixFailure(
                    reason: "leading zeros are not allowed in prefix length \(quoted(text))"))
        }
        if value > maximum {
            return .failure(
                PrefixFailure(
                    reason: "prefix length \(text) is larger than \(maximum)"))
        }
        return .success(value)
    }

    /// The value of an ASCII decimal digit, or nil.
    static func decimalValue(_ scalar: Unicode.Scalar) -> Int? {
        switch scalar.value {
        case 0x30...0x39: return Int(scalar.value - 0x30)
        default: return nil
        }
    }

    /// The value of an ASCII hexadecimal digit (either case), or nil.
    static func hexValue(_ scalar: Unicode.Scalar) -> UInt16? {
        switch scalar.value {
        case 0x30...0x39: return UInt16(scalar.value - 0x30)
        case 0x41...0x46: return UInt16(scalar.value - 0x41 + 10)
        case 0x61...0x66: return UInt16(scalar.value - 0x61 + 10)
        default: return nil
        }
    }

    /// Splits a network text at its single "/" into address and prefix parts, or returns a reason.
    static func splitNetwork(_ text: String) -> Result<(Substring, Substring), PrefixFailure> {
        guard let slash = text.firstIndex(of: "/") else {
            return .failure(PrefixFailure(reason: "missing prefix length (\"/n\")"))
        }
        let addressPart = text[..<slash]
        let prefixPart = text[text.index(after: slash)...]
        if prefixPart.contains("/") {
            return .failure(PrefixFailure(reason: "more than one \"/\""))
        }
        return .success((addressPart, prefixPart))
    }
}

/// A reason-only failure used by helpers that do not know which kind of value is being parsed.
struct PrefixFailure: Error {
    let reason: String
}
