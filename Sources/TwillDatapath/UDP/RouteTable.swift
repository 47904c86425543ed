import TwillAddress

/// An immutable lookup structure over peer leases: longest-prefix match of an inner
/// destination to a peer, and "which peers send from this PublicIP" for sender checks.
///
/// Built once per lease change, read by the engine's threads without locks. Lookups use
/// flat sorted arrays and binary search, so they neither allocate nor hash.
public struct RouteTable: Sendable {
    /// The peers, deduplicated by subnet (the first lease listed for a subnet wins), in the
    /// order the lookups' indices refer to.
    public let peers: [PeerLease]

    /// Distinct prefix lengths, longest first, with the range of `networks` holding them.
    private let groups: [(mask: UInt32, range: Range<Int>)]
    /// Network addresses, sorted within each group.
    private let networks: [UInt32]
    /// Peer index for each entry of `networks`.
    private let networkPeers: [Int32]
    /// Peer PublicIPs, sorted, and the peer index of each.
    private let senders: [UInt32]
    private let senderPeers: [Int32]
    /// The same for the peers' IPv6 subnets (dual-stack leases): prefix groups, network
    /// addresses (high and low halves, sorted within each group), peer indices.
    private let groups6: [(maskHigh: UInt64, maskLow: UInt64, range: Range<Int>)]
    private let networks6High: [UInt64]
    private let networks6Low: [UInt64]
    private let networkPeers6: [Int32]

    /// Builds the table from leases.
    public init(peers leases: [PeerLease]) {
        var seen = Set<IPv4Network>()
        var unique: [PeerLease] = []
        for lease in leases where seen.insert(lease.subnet).inserted { unique.append(lease) }
        peers = unique

        let byLength = unique.indices.sorted { a, b in
            let (x, y) = (unique[a].subnet, unique[b].subnet)
            if x.prefixLength != y.prefixLength { return x.prefixLength > y.prefixLength }
            return x.address < y.address
        }
        var groups: [(mask: UInt32, range: Range<Int>)] = []
        var networks: [UInt32] = []
        var networkPeers: [Int32] = []
        var start = 0
        for (position, index) in byLength.enumerated() {
            let subnet = unique[index].subnet
            networks.append(subnet.address.rawValue)
            networkPeers.append(Int32(index))
            let next = position + 1
            if next == byLength.count || unique[byLength[next]].subnet.prefixLength != subnet.prefixLength {
                groups.append((subnet.netmask.rawValue, start..<next))
                start = next
            }
        }
        self.groups = groups
        self.networks = networks
        self.networkPeers = networkPeers

        let bySender = unique.indices.sorted { unique[$0].publicIP < unique[$1].publicIP }
        senders = bySender.map { unique[$0].publicIP.rawValue }
        senderPeers = bySender.map { Int32($0) }

        // IPv6: the first lease listed for an IPv6 subnet wins it too.
        var seen6 = Set<IPv6Network>()
        let with6 = unique.indices.filter { unique[$0].subnet6.map { seen6.insert($0).inserted } ?? false }
        let byLength6 = with6.sorted { a, b in
            let (x, y) = (unique[a].subnet6!, unique[b].subnet6!)
            if x.prefixLength != y.prefixLength { return x.prefixLength > y.prefixLength }
            return x.address < y.address
        }
        var groups6: [(maskHigh: UInt64, maskLow: UInt64, range: Range<Int>)] = []
        var high: [UInt64] = [], low: [UInt64] = [], peers6: [Int32] = []
        start = 0
        for (position, index) in byLength6.enumerated() {
            let subnet = unique[index].subnet6!
            high.append(subnet.address.high)
            low.append(subnet.address.low)
            peers6.append(Int32(index))
            let next = position + 1
            if next == byLength6.count || unique[byLength6[next]].subnet6!.prefixLength != subnet.prefixLength {
                groups6.append((subnet.netmask.high, subnet.netmask.low, start..<next))
                start = next
            }
        }
        self.groups6 = groups6
        networks6High = high
        networks6Low = low
        networkPeers6 = peers6
    }

    /// The index in ``peers`` of the peer whose IPv6 subnet is the longest match for
    /// `destination`, or nil if none covers it.
    @inline(__always)
    public func lookup(_ destination: IPv6Address) -> Int? {
        for group in groups6 {
            let (h, l) = (destination.high & group.maskHigh, destination.low & group.maskLow)
            var lo = group.range.lowerBound, hi = group.range.upperBound
            while lo < hi {
                let mid = (lo + hi) >> 1
                if networks6High[mid] < h || (networks6High[mid] == h && networks6Low[mid] < l) { lo = mid + 1 } else { hi = mid }
            }
            if lo < group.range.upperBound, networks6High[lo] == h, networks6Low[lo] == l { return Int(networkPeers6[lo]) }
        }
        return nil
    }

    /// ``checkSender(outerSource:innerSource:)`` for an IPv6 inner packet: the inner source
    /// must lie in the IPv6 subnet of a lease with that PublicIP.
    @inline(__always)
    public func checkSender(outerSource: IPv4Address, innerSource: IPv6Address) -> SenderCheck {
        guard var position = Self.lowerBound(senders, 0..<senders.count, outerSource.rawValue),
              senders[position] == outerSource.rawValue else { return .unknownSender }
        while position < senders.count, senders[position] == outerSource.rawValue {
            let index = Int(senderPeers[position])
            if peers[index].subnet6?.contains(innerSource) == true { return .peer(index) }
            position += 1
        }
        return .spoofedInnerSource
    }

    /// The index in ``peers`` of the peer whose subnet is the longest match for
    /// `destination`, or nil if none covers it.
    @inline(__always)
    public func lookup(_ destination: IPv4Address) -> Int? {
        let address = destination.rawValue
        for group in groups {
            let key = address & group.mask
            if let position = Self.search(networks, group.range, key) { return Int(networkPeers[position]) }
        }
        return nil
    }

    /// The outcome of checking a received datagram's outer and inner source.
    public enum SenderCheck: Equatable, Sendable {
        /// The sender is a peer and the inner source lies in that peer's subnet.
        case peer(Int)
        /// No peer has this PublicIP.
        case unknownSender
        /// Peers have this PublicIP but none of their subnets contains the inner source.
        case spoofedInnerSource
    }

    /// Checks that `outerSource` is a peer's PublicIP and `innerSource` lies inside a subnet
    /// leased with that PublicIP (a node may hold more than one lease).
    @inline(__always)
    public func checkSender(outerSource: IPv4Address, innerSource: IPv4Address) -> SenderCheck {
        guard var position = Self.lowerBound(senders, 0..<senders.count, outerSource.rawValue),
              senders[position] == outerSource.rawValue else { return .unknownSender }
        while position < senders.count, senders[position] == outerSource.rawValue {
            let index = Int(senderPeers[position])
            if peers[index].subnet.contains(innerSource) { return .peer(index) }
            position += 1
        }
        return .spoofedInnerSource
    }

    /// The index of a peer with this PublicIP (the first by subnet order), if any.
    @inline(__always)
    public func peer(publicIP: IPv4Address) -> Int? {
        guard let position = Self.lowerBound(senders, 0..<senders.count, publicIP.rawValue),
              senders[position] == publicIP.rawValue else { return nil }
        return Int(senderPeers[position])
    }

    @inline(__always)
    private static func search(_ values: [UInt32], _ range: Range<Int>, _ key: UInt32) -> Int? {
        guard let position = lowerBound(values, range, key), values[position] == key else { return nil }
        return position
    }

    /// The first position in `range` whose value is >= `key`, or nil if none.
    @inline(__always)
    private static func lowerBound(_ values: [UInt32], _ range: Range<Int>, _ key: UInt32) -> Int? {
        var low = range.lowerBound
        var high = range.upperBound
        while low < high {
            let mid = (low + high) >> 1
            if values[mid] < key { low = mid + 1 } else { high = mid }
        }
        return low < range.upperBound ? low : nil
    }
}
