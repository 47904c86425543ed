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

    /// Peer PublicIPv6s (high and low halves, sorted) and the peer index of each: the
    /// senders over an IPv6 underlay.
    private let senders6High: [UInt64]
    private let senders6Low: [UInt64]
    private let senderPeers6: [Int32]

    /// Builds the table from leases.
    public init(peers leases: [PeerLease]) {
        // The first lease listed for a subnet wins it (an IPv6-only lease, whose IPv4 part is
        // 0.0.0.0/0, by its IPv6 subnet).
        var seen = Set<IPv4Network>()
        var seenOnly6 = Set<IPv6Network?>()
        var unique: [PeerLease] = []
        for lease in leases {
            let first = lease.ipv4Subnet.map { seen.insert($0).inserted } ?? seenOnly6.insert(lease.subnet6).inserted
            if first { unique.append(lease) }
        }
        peers = unique

        // An IPv6-only lease has no IPv4 subnet: it must never route IPv4.
        let byLength = unique.indices.filter { unique[$0].ipv4Subnet != nil }.sorted { a, b in
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

        let bySender = unique.indices.filter { unique[$0].publicIP != .any }.sorted { unique[$0].publicIP < unique[$1].publicIP }
        senders = bySender.map { unique[$0].publicIP.rawValue }
        senderPeers = bySender.map { Int32($0) }
        let bySender6 = unique.indices.filter { unique[$0].publicIPv6 != nil }.sorted { unique[$0].publicIPv6! < unique[$1].publicIPv6! }
        senders6High = bySender6.map { unique[$0].publicIPv6!.high }
        senders6Low = bySender6.map { unique[$0].publicIPv6!.low }
        senderPeers6 = bySender6.map { Int32($0) }

        // IPv6: the first lease listed for an IPv6 subnet wins it too.
        var seen6 = Set<IPv6Network>()
        let with6 = unique.indices.filter { unique[$0].subnet6.map { seen6.insert($0).inserted } ?? false }
        let byLength6 = with6.sorted { a, b in
            let (x, y) = (unique[a].subnet6!, unique[b].subnet6!)
            if x.prefixLength != y.prefixLength { return x.prefixLength > y.prefixLength }
            return x.address < y.address
        }
        var groups6: [(maskHigh: UInt64, maskLow: UInt64, range: Range<Int>)] = []
        var high: [UInt64] = []
        var low: [UInt64] = []
        var peers6: [Int32] = []
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
            let lo = Self.lowerBound(networks6High, networks6Low, group.range, h, l)
            if lo < group.range.upperBound, networks6High[lo] == h, networks6Low[lo] == l { return Int(networkPeers6[lo]) }
        }
        return nil
    }

    /// A datagram's outer source: an IPv4 address, or an IPv6 one over an IPv6 underlay.
    public enum Sender: Sendable, Equatable {
        case v4(IPv4Address)
        case v6(IPv6Address)
    }

    /// The index of a peer sending from `sender`, if any.
    @inline(__always)
    public func peer(sender: Sender) -> Int? {
        switch sender {
        case .v4(let a): peer(publicIP: a)
        case .v6(let a): peer(publicIPv6: a)
        }
    }

    /// Checks an inner IPv4 source against the leases of whoever sends from `sender`.
    @inline(__always)
    public func checkSender(_ sender: Sender, innerSource: IPv4Address) -> SenderCheck {
        switch sender {
        case .v4(let a): checkSender(outerSource: a, innerSource: innerSource)
        case .v6(let a): checkSender(outerSource: a, innerSource: innerSource)
        }
    }

    /// Checks an inner IPv6 source against the leases of whoever sends from `sender`.
    @inline(__always)
    public func checkSender(_ sender: Sender, innerSource: IPv6Address) -> SenderCheck {
        switch sender {
        case .v4(let a): checkSender(outerSource: a, innerSource: innerSource)
        case .v6(let a): checkSender(outerSource: a, innerSource: innerSource)
        }
    }

    /// The positions in the IPv6 sender index of the peers with PublicIPv6 `outer`.
    @inline(__always)
    private func senderPositions6(_ outer: IPv6Address) -> Range<Int>? {
        let lo = Self.lowerBound(senders6High, senders6Low, 0..<senders6High.count, outer.high, outer.low)
        var end = lo
        while end < senders6High.count, senders6High[end] == outer.high, senders6Low[end] == outer.low { end += 1 }
        return end > lo ? lo..<end : nil
    }

    /// The index of a peer with this PublicIPv6 (the sender over an IPv6 underlay), if any.
    @inline(__always)
    public func peer(publicIPv6: IPv6Address) -> Int? {
        senderPositions6(publicIPv6).map { Int(senderPeers6[$0.lowerBound]) }
    }

    /// ``checkSender(outerSource:innerSource:)`` over an IPv6 underlay: the outer source is a
    /// peer's PublicIPv6, the inner source (IPv4 or IPv6) in that peer's subnet.
    @inline(__always)
    public func checkSender(outerSource: IPv6Address, innerSource: IPv4Address) -> SenderCheck {
        check6(outerSource) { $0.ipv4Subnet?.contains(innerSource) == true }
    }

    @inline(__always)
    public func checkSender(outerSource: IPv6Address, innerSource: IPv6Address) -> SenderCheck {
        check6(outerSource) { $0.subnet6?.contains(innerSource) == true }
    }

    /// The first peer sending from `outer` whose lease `covers` the inner source.
    @inline(__always)
    private func check6(_ outer: IPv6Address, _ covers: (PeerLease) -> Bool) -> SenderCheck {
        guard let positions = senderPositions6(outer) else { return .unknownSender }
        for position in positions {
            let index = Int(senderPeers6[position])
            if covers(peers[index]) { return .peer(index) }
        }
        return .spoofedInnerSource
    }

    /// ``checkSender(outerSource:innerSource:)`` for an IPv6 inner packet: the inner source
    /// must lie in the IPv6 subnet of a lease with that PublicIP.
    @inline(__always)
    public func checkSender(outerSource: IPv4Address, innerSource: IPv6Address) -> SenderCheck {
        check4(outerSource) { $0.subnet6?.contains(innerSource) == true }
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
        check4(outerSource) { $0.subnet.contains(innerSource) }
    }

    /// The first peer sending from IPv4 `outer` whose lease `covers` the inner source.
    @inline(__always)
    private func check4(_ outer: IPv4Address, _ covers: (PeerLease) -> Bool) -> SenderCheck {
        guard var position = Self.lowerBound(senders, 0..<senders.count, outer.rawValue),
            senders[position] == outer.rawValue
        else { return .unknownSender }
        while position < senders.count, senders[position] == outer.rawValue {
            let index = Int(senderPeers[position])
            if covers(peers[index]) { return .peer(index) }
            position += 1
        }
        return .spoofedInnerSource
    }

    /// The index of a peer with this PublicIP (the first by subnet order), if any.
    @inline(__always)
    public func peer(publicIP: IPv4Address) -> Int? {
        guard let position = Self.lowerBound(senders, 0..<senders.count, publicIP.rawValue),
            senders[position] == publicIP.rawValue
        else { return nil }
        return Int(senderPeers[position])
    }

    @inline(__always)
    private static func search(_ values: [UInt32], _ range: Range<Int>, _ key: UInt32) -> Int? {
        guard let position = lowerBound(values, range, key), values[position] == key else { return nil }
        return position
    }

    /// The first position in `range` whose 128-bit value (`high`, `low`) is >= the key's, or
    /// the range's end.
    @inline(__always)
    private static func lowerBound(_ high: [UInt64], _ low: [UInt64], _ range: Range<Int>, _ keyHigh: UInt64, _ keyLow: UInt64) -> Int {
        var lo = range.lowerBound
        var hi = range.upperBound
        while lo < hi {
            let mid = (lo + hi) >> 1
            if high[mid] < keyHigh || (high[mid] == keyHigh && low[mid] < keyLow) { lo = mid + 1 } else { hi = mid }
        }
        return lo
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
