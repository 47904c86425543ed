/// The address families a network or a node runs: IPv4, IPv6, or both (flannel's
/// `EnableIPv4` and `EnableIPv6`). An IPv6-only network is `[.ipv6]`, not a sentinel.
public struct IPFamilies: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let ipv4 = IPFamilies(rawValue: 1)
    public static let ipv6 = IPFamilies(rawValue: 2)
    public static let dualStack: IPFamilies = [.ipv4, .ipv6]

    public init(ipv4: Bool, ipv6: Bool) {
        self = []
        if ipv4 { insert(.ipv4) }
        if ipv6 { insert(.ipv6) }
    }

    /// "IPv4", "IPv6", "dual stack" or "no family".
    public var description: String {
        switch self {
        case .ipv4: "IPv4"
        case .ipv6: "IPv6"
        case .dualStack: "dual stack"
        default: "no family"
        }
    }
}
