/// An IP address of either family.
///
/// Useful where configuration or peers may use IPv4 or IPv6 interchangeably. Ordering puts
/// every IPv4 address before every IPv6 address, then orders by numeric value.
public enum IPAddress: Hashable, Comparable, Sendable, CustomStringConvertible,
    LosslessStringConvertible, Codable
{
    /// An IPv4 address.
    case v4(IPv4Address)
    /// An IPv6 address.
    case v6(IPv6Address)

    /// Parses an IPv4 or IPv6 address, choosing IPv6 if the text contains a `:`.
    ///
    /// Deciding by `:` (rather than trying both parsers) keeps error reasons specific: a
    /// bad IPv6 text is never reported as a bad IPv4 text and vice versa.
    ///
    /// - Throws: ``AddressError`` with kind ``AddressError/Kind/ipAddress`` and the reason
    ///   reported by the family-specific parser.
    public init(parsing text: String) throws(AddressError) {
        do throws(AddressError) {
            if text.contains(":") {
                self = .v6(try IPv6Address(parsing: text))
            } else {
                self = .v4(try IPv4Address(parsing: text))
            }
        } catch {
            throw error.rewrapped(as: .ipAddress, input: text)
        }
    }

    /// Parses an IPv4 or IPv6 address, returning nil if the text is not valid.
    ///
    /// Use ``init(parsing:)`` to learn why a text was rejected.
    public init?(_ description: String) {
        guard let address = try? IPAddress(parsing: description) else { return nil }
        self = address
    }

    /// The dotted-quad or RFC 5952 canonical text form.
    public var description: String {
        switch self {
        case .v4(let address): address.description
        case .v6(let address): address.description
        }
    }

    /// The IPv4 address, if this is one.
    public var v4: IPv4Address? {
        if case .v4(let address) = self { address } else { nil }
    }

    /// The IPv6 address, if this is one.
    public var v6: IPv6Address? {
        if case .v6(let address) = self { address } else { nil }
    }

    /// Whether this is a loopback address (`127.0.0.0/8` or `::1`).
    public var isLoopback: Bool {
        switch self {
        case .v4(let address): address.isLoopback
        case .v6(let address): address.isLoopback
        }
    }

    /// Whether this is a multicast address (`224.0.0.0/4` or `ff00::/8`).
    public var isMulticast: Bool {
        switch self {
        case .v4(let address): address.isMulticast
        case .v6(let address): address.isMulticast
        }
    }

    /// Whether this is the unspecified address (`0.0.0.0` or `::`).
    public var isUnspecified: Bool {
        switch self {
        case .v4(let address): address.isUnspecified
        case .v6(let address): address.isUnspecified
        }
    }

    /// Orders IPv4 before IPv6, then by numeric value within a family.
    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): a < b
        case (.v6(let a), .v6(let b)): a < b
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }

    /// Decodes an address of either family from a single string.
    ///
    /// - Throws: `DecodingError.dataCorrupted` naming the text and the reason if it is invalid.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do throws(AddressError) {
            self = try IPAddress(parsing: text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    /// Encodes the address as a single string in its canonical text form.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
