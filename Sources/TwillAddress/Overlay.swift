/// One family's part of the overlay: the whole network and this node's subnet in it.
public struct OverlayPart<Network: Hashable & Sendable>: Hashable, Sendable {
    public var network: Network
    public var subnet: Network

    public init(network: Network, subnet: Network) {
        self.network = network
        self.subnet = subnet
    }
}

/// The overlay a node runs, per family: an IPv4 part, an IPv6 part, or both. An IPv6-only
/// node has no IPv4 part (not a `0.0.0.0/0` placeholder); code that does something per
/// family reads the part and does nothing when it is absent.
public struct Overlay: Hashable, Sendable {
    public var v4: OverlayPart<IPv4Network>?
    public var v6: OverlayPart<IPv6Network>?

    public init(v4: OverlayPart<IPv4Network>? = nil, v6: OverlayPart<IPv6Network>? = nil) {
        self.v4 = v4
        self.v6 = v6
    }

    /// The families with a part.
    public var families: IPFamilies { IPFamilies(ipv4: v4 != nil, ipv6: v6 != nil) }
}
