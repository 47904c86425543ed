import TwillAddress
import TwillEtcd

/// Why a key under `<prefix>/subnets/` is not used as a peer.
public enum LeaseRejection: String, Sendable, CaseIterable, Comparable {
    /// The key or the value cannot be read.
    case malformed
    /// The key is not the canonical form of its subnet (host bits set, leading zeros...).
    case keyMismatch = "key_mismatch"
    /// The subnet lies (partly) outside the network.
    case outsideNetwork = "outside_network"
    /// The subnet is not exactly SubnetLen long.
    case wrongLength = "wrong_length"
    /// PublicIP is not a unicast address another node could have (0.0.0.0, loopback,
    /// multicast, broadcast, reserved).
    case badPublicIP = "bad_public_ip"
    /// PublicIP is this node's, but the key is not this node's lease.
    case ownPublicIP = "own_public_ip"
    /// The subnet overlaps this node's own subnet.
    case overlapsOwnSubnet = "overlaps_own_subnet"
    /// The subnet overlaps an older peer lease (the one created first wins).
    case conflict

    public static func < (a: LeaseRejection, b: LeaseRejection) -> Bool { a.rawValue < b.rawValue }
}

/// Every lease key etcd holds, and the peers among them that the data path may use.
///
/// This is the one validation step between etcd and any backend: a lease is a peer only when
/// its key parses and is canonical, its value parses, its subnet lies inside the network and
/// is exactly SubnetLen long, its PublicIP is a unicast address that is not this node's, and
/// it does not overlap this node's subnet. Among peers that overlap each other the lease
/// created first (lowest create revision) wins. This node's own key is never a peer.
///
/// A value type: feed it the watch's events and apply the returned ``Change`` to the backend.
public struct PeerSet: Sendable {
    /// What the validation needs to know about this node and the network.
    public struct Context: Sendable, Equatable {
        public var network: IPv4Network
        public var subnetLength: Int
        /// The etcd key of this node's lease, when it holds one.
        public var ownKey: String?
        public var ownSubnet: IPv4Network?
        public var ownPublicIP: IPv4Address
        /// This node's lease value: another key holding exactly it is this node's too (an old
        /// lease, or a new one the node is moving to), left out without complaint.
        public var ownAttributes: LeaseAttributes?
        /// The IPv6 overlay and its subnets' length, when IPv6 is enabled: a lease's IPv6
        /// part is then checked as its IPv4 part is (without it, the IPv6 part is ignored).
        public var ipv6Network: IPv6Network?
        public var ipv6SubnetLength: Int
        public var ownSubnet6: IPv6Network?
        /// False for an IPv6-only network (`EnableIPv4: false`): leases are judged by their
        /// IPv6 part and PublicIPv6 alone (flannel's keys `0.0.0.0-0&<v6>-<len>`).
        public var ipv4: Bool
        public var ownPublicIPv6: IPv6Address?

        public init(
            network: IPv4Network, subnetLength: Int, ownKey: String?, ownSubnet: IPv4Network?, ownPublicIP: IPv4Address,
            ownAttributes: LeaseAttributes? = nil, ipv6Network: IPv6Network? = nil, ipv6SubnetLength: Int = 64,
            ownSubnet6: IPv6Network? = nil, ipv4: Bool = true, ownPublicIPv6: IPv6Address? = nil
        ) {
            self.ipv4 = ipv4
            self.ownPublicIPv6 = ownPublicIPv6
            self.network = network
            self.subnetLength = subnetLength
            self.ownKey = ownKey
            self.ownSubnet = ownSubnet
            self.ownPublicIP = ownPublicIP
            self.ownAttributes = ownAttributes
            self.ipv6Network = ipv6Network
            self.ipv6SubnetLength = ipv6SubnetLength
            self.ownSubnet6 = ownSubnet6
        }
    }

    /// A key newly rejected (or rejected for another reason than before): log it once.
    public struct Rejected: Error, Sendable, Equatable {
        public var key: String
        public var reason: LeaseRejection
        /// What exactly is wrong, for the log line.
        public var detail: String
    }

    /// What one update did to the set of peers.
    public struct Change: Sendable, Equatable {
        public var added: [Lease] = []
        public var removed: [Lease] = []
        /// Peers whose value changed (PublicIP, BackendData...): the new lease.
        public var changed: [Lease] = []
        public var rejected: [Rejected] = []
        public var isEmpty: Bool { added.isEmpty && removed.isEmpty && changed.isEmpty && rejected.isEmpty }
    }

    public let layout: EtcdLayout
    public private(set) var context: Context
    /// Every key under subnets/, as etcd holds it.
    private var raw: [String: KeyValue] = [:]
    /// The peers, by key.
    public private(set) var accepted: [String: Lease] = [:]
    /// Every rejected key with its reason.
    public private(set) var rejections: [String: LeaseRejection] = [:]

    public init(layout: EtcdLayout, context: Context) {
        self.layout = layout
        self.context = context
    }

    /// The peers, ordered by subnet.
    public var peers: [Lease] { accepted.values.sorted(by: Self.bySubnet) }

    /// Subnet order (IPv4 first, then IPv6, which is what tells IPv6-only leases apart).
    static func bySubnet(_ a: Lease, _ b: Lease) -> Bool {
        if a.subnet.ipv4.address != b.subnet.ipv4.address { return a.subnet.ipv4.address < b.subnet.ipv4.address }
        return (a.subnet.ipv6?.address ?? .any) < (b.subnet.ipv6?.address ?? .any)
    }

    /// Rejected keys per reason (every reason present, zero included), for a gauge.
    public var rejectionCounts: [LeaseRejection: Int] {
        var counts = Dictionary(uniqueKeysWithValues: LeaseRejection.allCases.map { ($0, 0) })
        for r in rejections.values { counts[r, default: 0] += 1 }
        return counts
    }

    /// The raw key-value of `key`, if etcd holds one.
    public func value(of key: String) -> KeyValue? { raw[key] }

    /// Replaces everything (a list after a start, a compaction or a restore).
    public mutating func reset(_ kvs: [KeyValue]) -> Change {
        raw = [:]
        for kv in kvs where kv.key.hasPrefix(layout.subnetsPrefix) { raw[kv.key] = kv }
        return recompute()
    }

    public mutating func put(_ kv: KeyValue) -> Change {
        guard kv.key.hasPrefix(layout.subnetsPrefix) else { return Change() }
        raw[kv.key] = kv
        return recompute()
    }

    public mutating func delete(key: String) -> Change {
        guard raw.removeValue(forKey: key) != nil else { return Change() }
        return recompute()
    }

    /// This node's lease or the network changed: peers are judged again.
    public mutating func update(context: Context) -> Change {
        guard context != self.context else { return Change() }
        self.context = context
        return recompute()
    }

    /// A lease, or why it is not a peer (before overlaps between peers are considered).
    public func judge(_ kv: KeyValue) -> Result<Lease, Rejected> {
        func reject(_ reason: LeaseRejection, _ detail: String) -> Result<Lease, Rejected> {
            .failure(Rejected(key: kv.key, reason: reason, detail: detail))
        }
        let subnet: SubnetKey
        do {
            guard let s = try layout.subnet(fromKey: kv.key) else { return reject(.malformed, "not a lease key") }
            subnet = s
        } catch {
            return reject(.malformed, "\(error)")
        }
        guard layout.key(for: subnet) == kv.key else {
            return reject(.keyMismatch, "the key does not name its subnet \(subnet.ipv4) canonically (expected \(layout.key(for: subnet)))")
        }
        let attributes: LeaseAttributes
        do { attributes = try LeaseAttributes(json: kv.value, key: kv.key) } catch {
            return reject(.malformed, "\(error)")
        }
        if !context.ipv4 { return judge6(kv, subnet, attributes) }
        guard let net = subnet.ipv4Subnet else {
            return reject(
                .wrongLength, "it names no IPv4 subnet (an IPv6-only node); this network's subnets are IPv4 /\(context.subnetLength)")
        }
        guard net.prefixLength == context.subnetLength else {
            return reject(.wrongLength, "\(net) is a /\(net.prefixLength); the network's subnets are /\(context.subnetLength)")
        }
        guard context.network.contains(net) else {
            return reject(.outsideNetwork, "\(net) is not inside the network \(context.network)")
        }
        let ip = attributes.publicIP
        guard Self.isUnicast(ip) else { return reject(.badPublicIP, "PublicIP \(ip) is not a unicast address of a node") }
        guard ip != context.ownPublicIP else {
            return reject(.ownPublicIP, "it names this node's PublicIP \(ip) but is not this node's lease")
        }
        if let own = context.ownSubnet, own.overlaps(net) {
            return reject(.overlapsOwnSubnet, "\(net) overlaps this node's subnet \(own)")
        }
        if let net6 = subnet.ipv6, let network6 = context.ipv6Network {
            guard net6.prefixLength == context.ipv6SubnetLength else {
                return reject(
                    .wrongLength, "\(net6) is a /\(net6.prefixLength); the network's IPv6 subnets are /\(context.ipv6SubnetLength)")
            }
            guard network6.contains(net6) else {
                return reject(.outsideNetwork, "\(net6) is not inside the IPv6 network \(network6)")
            }
            if let own = context.ownSubnet6, own.overlaps(net6) {
                return reject(.overlapsOwnSubnet, "\(net6) overlaps this node's IPv6 subnet \(own)")
            }
        }
        // Only where IPv6 is routed: an IPv4 network ignores PublicIPv6 altogether.
        if context.ipv6Network != nil, let ip6 = attributes.publicIPv6, !Self.isUnicast(ip6) {
            return reject(.badPublicIP, "PublicIPv6 \(ip6) is not a unicast address of a node")
        }
        return .success(
            Lease(
                subnet: subnet, attributes: attributes, etcdLease: kv.lease, modRevision: kv.modRevision,
                createRevision: kv.createRevision))
    }

    /// ``judge(_:)`` in an IPv6-only network: the IPv6 subnet and PublicIPv6 are what count.
    private func judge6(_ kv: KeyValue, _ subnet: SubnetKey, _ attributes: LeaseAttributes) -> Result<Lease, Rejected> {
        func reject(_ reason: LeaseRejection, _ detail: String) -> Result<Lease, Rejected> {
            .failure(Rejected(key: kv.key, reason: reason, detail: detail))
        }
        guard let network6 = context.ipv6Network else { return reject(.outsideNetwork, "this network has no IPv6Network") }
        // An IPv6-only network's keys name no IPv4 subnet (flannel's `0.0.0.0-0&...`): a
        // dual-stack key here is a node on another config, and its IPv4 part must never be routed.
        if let v4 = subnet.ipv4Subnet {
            return reject(.wrongLength, "it names the IPv4 subnet \(v4), but this network is IPv6-only (keys 0.0.0.0-0&<IPv6 subnet>)")
        }
        guard let net6 = subnet.ipv6 else {
            return reject(.wrongLength, "it names no IPv6 subnet; this network's subnets are IPv6 /\(context.ipv6SubnetLength)")
        }
        guard net6.prefixLength == context.ipv6SubnetLength else {
            return reject(.wrongLength, "\(net6) is a /\(net6.prefixLength); the network's IPv6 subnets are /\(context.ipv6SubnetLength)")
        }
        guard network6.contains(net6) else { return reject(.outsideNetwork, "\(net6) is not inside the IPv6 network \(network6)") }
        guard let ip6 = attributes.publicIPv6, Self.isUnicast(ip6) else {
            return reject(.badPublicIP, "PublicIPv6 \(attributes.publicIPv6.map { "\($0)" } ?? "null") is not a unicast address of a node")
        }
        if let own = context.ownPublicIPv6, ip6 == own {
            return reject(.ownPublicIP, "it names this node's PublicIPv6 \(ip6) but is not this node's lease")
        }
        if let own = context.ownSubnet6, own.overlaps(net6) {
            return reject(.overlapsOwnSubnet, "\(net6) overlaps this node's IPv6 subnet \(own)")
        }
        return .success(
            Lease(
                subnet: subnet, attributes: attributes, etcdLease: kv.lease, modRevision: kv.modRevision,
                createRevision: kv.createRevision))
    }

    /// Whether `ip` can be another node's address: not 0/8, loopback, link-local broadcast,
    /// multicast or 240/4 (which holds the limited broadcast address).
    public static func isUnicast(_ ip: IPv4Address) -> Bool {
        let first = ip.rawValue >> 24
        return first != 0 && first != 127 && first < 224
    }

    /// Whether `ip` can be another node's IPv6 address: not unspecified, loopback, multicast,
    /// link-local (useless without a zone) or IPv4-mapped.
    public static func isUnicast(_ ip: IPv6Address) -> Bool {
        !ip.isUnspecified && !ip.isLoopback && !ip.isMulticast && !ip.isLinkLocal && ip.ipv4Mapped == nil
    }

    private mutating func recompute() -> Change {
        var candidates: [Lease] = []
        var newRejections: [String: LeaseRejection] = [:]
        var details: [String: String] = [:]
        for (key, kv) in raw where key != context.ownKey {
            if let own = context.ownAttributes, kv.value == own.json() { continue }
            switch judge(kv) {
            case .success(let lease): candidates.append(lease)
            case .failure(let r):
                newRejections[key] = r.reason
                details[key] = r.detail
            }
        }
        // The oldest lease keeps its subnet; a later one overlapping it is refused. Valid
        // peers all have SubnetLen, so overlapping means the same subnet under two keys
        // (with and without an IPv6 part, or with different ones): IPv4 or IPv6.
        candidates.sort { ($0.createRevision, layout.key(for: $0.subnet)) < ($1.createRevision, layout.key(for: $1.subnet)) }
        var holder: [IPv4Network: String] = [:]
        var holder6: [IPv6Network: String] = [:]
        var next: [String: Lease] = [:]
        for lease in candidates {
            let key = layout.key(for: lease.subnet)
            if context.ipv4, let older = holder[lease.subnet.ipv4] {
                newRejections[key] = .conflict
                details[key] = "\(lease.subnet.ipv4) is already leased by the older \(older)"
                continue
            }
            if context.ipv6Network != nil, let v6 = lease.subnet.ipv6, let older = holder6[v6] {
                newRejections[key] = .conflict
                details[key] = "\(v6) is already leased by the older \(older)"
                continue
            }
            holder[lease.subnet.ipv4] = key
            if let v6 = lease.subnet.ipv6 { holder6[v6] = key }
            next[key] = lease
        }
        var change = Change()
        for (key, old) in accepted where next[key] == nil { change.removed.append(old) }
        for (key, new) in next {
            if let old = accepted[key] {
                if old.attributes != new.attributes { change.changed.append(new) }
            } else {
                change.added.append(new)
            }
        }
        for (key, reason) in newRejections where rejections[key] != reason {
            change.rejected.append(Rejected(key: key, reason: reason, detail: details[key] ?? ""))
        }
        change.added.sort(by: Self.bySubnet)
        change.removed.sort(by: Self.bySubnet)
        change.changed.sort(by: Self.bySubnet)
        change.rejected.sort { $0.key < $1.key }
        accepted = next
        rejections = newRejections
        return change
    }
}
