import Logging
import TwillAddress
import TwillEtcd

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Subnet leases in etcd, in flannel's layout: read the network config, acquire a subnet
/// atomically, keep it alive, give it back, and (for operators) reserve subnets.
public final class SubnetRegistry: Sendable {
    public let etcd: any EtcdAPI
    public let layout: EtcdLayout
    let logger: Logger
    /// How many times acquisition retries after losing a race for a subnet.
    public let maxAttempts: Int

    public init(etcd: any EtcdAPI, layout: EtcdLayout = EtcdLayout(), logger: Logger = Logger(label: "twill.lease"), maxAttempts: Int = 10)
    {
        self.etcd = etcd
        self.layout = layout
        self.logger = logger
        self.maxAttempts = maxAttempts
    }

    // MARK: Config

    /// The network config at `<prefix>/config`, validated.
    public func networkConfig() async throws(LeaseError) -> NetworkConfig {
        let kv: KeyValue?
        do { kv = try await etcd.get(layout.configKey).kvs.first } catch { throw .etcd(error) }
        guard let kv else { throw .configNotFound(key: layout.configKey) }
        do { return try NetworkConfig(json: kv.value) } catch {
            throw .invalidConfig(key: layout.configKey, reason: error.reason)
        }
    }

    // MARK: Reading leases

    /// Every lease, parsed; malformed ones are logged (naming the key) and skipped, never deleted.
    public func leases() async throws(LeaseError) -> (revision: Int64, leases: [Lease]) {
        let s = try await snapshot()
        return (s.revision, s.leases)
    }

    /// Leases plus every subnet whose key exists at all: a key with an unreadable value is
    /// still somebody's, so its subnets are never handed out (nor deleted).
    func snapshot() async throws(LeaseError) -> Snapshot {
        let result: RangeResult
        do { result = try await etcd.list(prefix: layout.subnetsPrefix) } catch { throw .etcd(error) }
        let keys = result.kvs.compactMap { try? layout.subnet(fromKey: $0.key) }
        return Snapshot(
            revision: result.header.revision, leases: result.kvs.compactMap { parse($0) },
            occupied: Set(keys.compactMap(\.ipv4Subnet)), occupied6: Set(keys.compactMap(\.ipv6)))
    }

    struct Snapshot {
        var revision: Int64
        var leases: [Lease]
        var occupied: Set<IPv4Network>
        var occupied6: Set<IPv6Network>
    }

    /// A lease from its key and value, or nil (with a warning) when it cannot be read.
    func parse(_ kv: KeyValue) -> Lease? {
        do {
            guard let subnet = try layout.subnet(fromKey: kv.key) else { return nil }
            let attrs = try LeaseAttributes(json: kv.value, key: kv.key)
            return Lease(
                subnet: subnet, attributes: attrs, etcdLease: kv.lease, modRevision: kv.modRevision, createRevision: kv.createRevision)
        } catch {
            logger.warning("skipping a lease that cannot be read", metadata: ["key": "\(kv.key)", "error": "\(error)"])
            return nil
        }
    }

    // MARK: Acquire

    /// Takes a subnet for the node with `attributes.publicIP`, in flannel's order:
    /// 1. a lease that already names this public IP and fits the config (taken over; a lease
    ///    that no longer fits is deleted, a reservation that no longer fits is left alone);
    /// 2. `previous` (from the last subnet.env) when free and fitting;
    /// 3. a random free subnet.
    /// With IPv6 enabled the key names an IPv6 subnet too, chosen the same way (`previous6`,
    /// else a random free one); a node whose old key lacks the IPv6 part (IPv6 was just
    /// enabled) keeps its IPv4 subnet. Creation is atomic (create-if-absent); since two keys
    /// can name one subnet (`a&b`, `a&c`), a create is checked against older keys holding
    /// either of its subnets and given up if one does. A lost race retries, at most
    /// `maxAttempts` times.
    ///
    /// - Parameters:
    ///   - avoid: subnets never to take, even when their lease names this node (one another
    ///     node has just taken from us, say).
    ///   - etcdLease: an etcd lease to attach the new key to, when still alive (a node moving
    ///     to another subnet keeps its lease ID); 0 grants a fresh one.
    public func acquire(
        config: NetworkConfig, attributes: LeaseAttributes, previous: IPv4Network?, previous6: IPv6Network? = nil, ttl: Int64,
        avoid: Set<IPv4Network> = [], avoid6: Set<IPv6Network> = [], etcdLease: Int64 = 0
    ) async throws(LeaseError) -> Lease {
        var rng = SystemRandomNumberGenerator()
        var lost: Set<IPv4Network> = []
        var lost6: Set<IPv6Network> = []
        for attempt in 1...maxAttempts {
            let snap = try await snapshot()
            let mine = snap.leases.filter { Self.sameNode($0.attributes, attributes) && !Self.avoided($0.subnet, avoid, avoid6) }
            for lease in mine {
                if config.fits(lease.subnet) {
                    if let taken = try await takeOver(lease, attributes: attributes, ttl: ttl) { return taken }
                    continue
                }
                if lease.isReservation {
                    logger.warning(
                        "a reservation for this node does not fit the network config; ignoring it", metadata: ["key": "\(lease.subnet)"])
                } else {
                    logger.notice(
                        "this node's old lease no longer fits the network config; deleting it", metadata: ["key": "\(lease.subnet)"])
                    _ = try? await etcd.txn(
                        compare: [.unchanged(layout.key(for: lease.subnet), modRevision: lease.modRevision)],
                        success: [.delete(key: layout.key(for: lease.subnet))], failure: [])
                }
            }
            // Our own unfitting leases were just deleted; everything else is taken. Their
            // subnets that still fit are this node's first choice (enabling IPv6 keeps the
            // IPv4 subnet, and workloads their addresses).
            let ownStale = mine.filter { !config.fits($0.subnet) && !$0.isReservation }
            let taken = snap.occupied.subtracting(ownStale.compactMap(\.subnet.ipv4Subnet)).union(avoid).union(lost)
            let taken6 = snap.occupied6.subtracting(ownStale.compactMap(\.subnet.ipv6)).union(avoid6).union(lost6)
            let keep4 = ownStale.compactMap(\.subnet.ipv4Subnet).first { config.fits($0) }
            let keep6 = ownStale.compactMap(\.subnet.ipv6).first { config.fits($0) }

            var v4 = SubnetKey.ipv6OnlyPart
            if config.enableIPv4 {
                if let prev = previous, config.fits(prev), !taken.contains(prev) {
                    v4 = prev
                } else if let k = keep4, !taken.contains(k) {
                    v4 = k
                } else if let choice = SubnetPicker.pick(config, taken: taken, using: &rng) {
                    v4 = choice
                } else {
                    let usage = SubnetPicker.usage(config, taken: taken)
                    throw .outOfSubnets(
                        network: config.network.map { "\($0)" } ?? "?", subnetLength: config.subnetLength, total: usage.total,
                        taken: usage.taken)
                }
            }
            var v6: IPv6Network?
            if config.enableIPv6 {
                if let prev = previous6, config.fits(prev), !taken6.contains(prev) {
                    v6 = prev
                } else if let k = keep6, !taken6.contains(k) {
                    v6 = k
                } else if let choice = SubnetPicker.pick(config, taken: taken6, using: &rng) {
                    v6 = choice
                } else {
                    throw .outOfSubnets(
                        network: config.ipv6Network.map { "\($0)" } ?? "?", subnetLength: config.ipv6SubnetLength,
                        total: config.ipv6SubnetRange?.count ?? 0, taken: taken6.filter { config.fits($0) }.count)
                }
            }
            let key = SubnetKey(ipv4: v4, ipv6: v6)
            if let lease = try await create(key, attributes: attributes, ttl: ttl, etcdLease: etcdLease) {
                if let older = try await olderHolder(of: lease, config: config) {
                    // Raced with another node for one of the subnets under a different key.
                    logger.notice(
                        "another node's older key holds a subnet just leased; giving it up",
                        metadata: ["key": "\(key)", "older": "\(older)"])
                    try await retire(lease)
                    if lease.etcdLease != etcdLease { try? await etcd.revoke(lease: lease.etcdLease) }
                    if let s = key.ipv4Subnet, let o = older.ipv4Subnet, o.overlaps(s) { lost.insert(s) }
                    if let s = key.ipv6, let o = older.ipv6, o.overlaps(s) { lost6.insert(s) }
                    continue
                }
                if key.ipv4Subnet != nil, key.ipv4 == previous {
                    logger.info("reusing the subnet from the previous subnet.env", metadata: ["subnet": "\(key.ipv4)"])
                }
                return lease
            }
            logger.debug("lost the race for a subnet, trying another", metadata: ["key": "\(key)", "attempt": "\(attempt)"])
        }
        throw .contention(attempts: maxAttempts)
    }

    /// Whether a key names a subnet to avoid (an IPv6-only key's 0.0.0.0/0 is no subnet).
    static func avoided(_ key: SubnetKey, _ avoid: Set<IPv4Network>, _ avoid6: Set<IPv6Network>) -> Bool {
        if let v4 = key.ipv4Subnet, avoid.contains(v4) { return true }
        if let v6 = key.ipv6, avoid6.contains(v6) { return true }
        return false
    }

    /// Whether a lease value names the node `attributes` describes: by PublicIP, or for a node
    /// without IPv4 (an IPv6-only network, PublicIP 0.0.0.0) by PublicIPv6.
    static func sameNode(_ lease: LeaseAttributes, _ attributes: LeaseAttributes) -> Bool {
        if attributes.publicIP != .any { return lease.publicIP == attributes.publicIP }
        return attributes.publicIPv6 != nil && lease.publicIPv6 == attributes.publicIPv6
    }

    /// The key of an older lease (lower create revision) naming one of `lease`'s subnets, if
    /// any. Only keys that suit `config` count (others are no node's valid lease: peers ignore
    /// them, as the picker does), and none of this node's own.
    func olderHolder(of lease: Lease, config: NetworkConfig) async throws(LeaseError) -> SubnetKey? {
        let result: RangeResult
        do { result = try await etcd.list(prefix: layout.subnetsPrefix) } catch { throw .etcd(error) }
        for kv in result.kvs where kv.createRevision < lease.createRevision {
            guard let other = try? layout.subnet(fromKey: kv.key), other != lease.subnet, config.fits(other) else { continue }
            if let value = try? LeaseAttributes(json: kv.value, key: kv.key), Self.sameNode(value, lease.attributes) { continue }
            if let a = other.ipv4Subnet, let b = lease.subnet.ipv4Subnet, a.overlaps(b) { return other }
            if let a = other.ipv6, let b = lease.subnet.ipv6, a.overlaps(b) { return other }
        }
        return nil
    }

    /// Creates the lease key only if absent, attached to `etcdLease` when it is still alive,
    /// else to a fresh etcd lease. nil when the key is taken.
    ///
    /// A create that etcd applied but whose answer was lost (the member hung after the commit)
    /// is retried on another member and then finds the key holding exactly our value on our
    /// etcd lease: that is ours, not a lost race.
    func create(_ subnet: SubnetKey, attributes: LeaseAttributes, ttl: Int64, etcdLease: Int64 = 0) async throws(LeaseError) -> Lease? {
        let key = layout.key(for: subnet)
        let value = attributes.json()
        do {
            var id = etcdLease
            if id != 0 {
                do { _ = try await etcd.keepAlive(lease: id) } catch .leaseNotFound { id = 0 }
            }
            let granted = id == 0
            if granted { id = try await etcd.grant(ttl: ttl).id }
            let r = try await etcd.txn(
                compare: [.absent(key)], success: [.put(key: key, value: value, lease: id)], failure: [.get(key: key)])
            if r.succeeded {
                return Lease(
                    subnet: subnet, attributes: attributes, etcdLease: id, modRevision: r.header.revision, createRevision: r.header.revision
                )
            }
            if case .range(let existing)? = r.responses.first, let kv = existing.kvs.first, kv.value == value, kv.lease == id {
                return Lease(
                    subnet: subnet, attributes: attributes, etcdLease: id, modRevision: kv.modRevision, createRevision: kv.createRevision)
            }
            if granted { try? await etcd.revoke(lease: id) }
            return nil
        } catch {
            throw .etcd(error)
        }
    }

    /// Takes over this node's existing lease: keeps its etcd lease when alive (one lease,
    /// refreshed, never re-granted needlessly), keeps a reservation permanent, and updates the
    /// value only if nobody changed it meanwhile. nil when it changed under us.
    func takeOver(_ lease: Lease, attributes: LeaseAttributes, ttl: Int64) async throws(LeaseError) -> Lease? {
        do {
            var etcdLease = lease.etcdLease
            if !lease.isReservation {
                do { _ = try await etcd.keepAlive(lease: etcdLease) } catch .leaseNotFound { etcdLease = try await etcd.grant(ttl: ttl).id }
            }
            if etcdLease == lease.etcdLease && lease.attributes == attributes {
                logger.info(
                    "taking over this node's existing lease",
                    metadata: ["subnet": "\(lease.subnet.ipv4)", "reservation": "\(lease.isReservation)"])
                return lease
            }
            var moved = lease
            moved.etcdLease = etcdLease
            guard let updated = try await write(moved, attributes: attributes) else { return nil }
            logger.info(
                "taking over this node's existing lease",
                metadata: ["subnet": "\(lease.subnet.ipv4)", "reservation": "\(lease.isReservation)"])
            return updated
        } catch {
            throw .etcd(error)
        }
    }

    /// Writes `attributes` into this node's key on `lease.etcdLease`, only if the key is
    /// unchanged since `lease.modRevision`. nil when someone changed it.
    func write(_ lease: Lease, attributes: LeaseAttributes) async throws(EtcdError) -> Lease? {
        let key = layout.key(for: lease.subnet)
        let r = try await etcd.txn(
            compare: [.unchanged(key, modRevision: lease.modRevision)],
            success: [.put(key: key, value: attributes.json(), lease: lease.etcdLease)], failure: [.get(key: key)])
        if r.succeeded {
            return Lease(
                subnet: lease.subnet, attributes: attributes, etcdLease: lease.etcdLease, modRevision: r.header.revision,
                createRevision: lease.createRevision)
        }
        // Our own earlier attempt, applied but unanswered.
        if case .range(let existing)? = r.responses.first, let kv = existing.kvs.first, kv.value == attributes.json(),
            kv.lease == lease.etcdLease
        {
            return Lease(
                subnet: lease.subnet, attributes: attributes, etcdLease: kv.lease, modRevision: kv.modRevision,
                createRevision: kv.createRevision)
        }
        return nil
    }

    // MARK: Keeping a lease

    /// Refreshes the etcd lease behind `lease` (one keepalive). Returns its TTL in seconds,
    /// nil when etcd no longer has it (expired or revoked). A reservation needs no refresh:
    /// its TTL is reported as 0.
    public func keepAlive(_ lease: Lease) async throws(LeaseError) -> Int64? {
        guard !lease.isReservation else { return 0 }
        do {
            return try await etcd.keepAlive(lease: lease.etcdLease)
        } catch .leaseNotFound {
            return nil
        } catch {
            throw .etcd(error)
        }
    }

    /// What etcd holds at this node's key now (nil when deleted).
    public func current(_ lease: Lease) async throws(LeaseError) -> KeyValue? {
        do { return try await etcd.get(layout.key(for: lease.subnet)).kvs.first } catch { throw .etcd(error) }
    }

    /// Puts this node's key back after it was deleted or expired: on the same etcd lease while
    /// that lives (the lease ID stays), else on a fresh one. nil when another node created the
    /// key meanwhile.
    public func restore(_ lease: Lease, ttl: Int64) async throws(LeaseError) -> Lease? {
        guard !lease.isReservation else {
            // A reservation deleted by an operator is theirs to put back; keep the subnet as
            // an ordinary lease meanwhile.
            return try await create(lease.subnet, attributes: lease.attributes, ttl: ttl)
        }
        return try await create(lease.subnet, attributes: lease.attributes, ttl: ttl, etcdLease: lease.etcdLease)
    }

    /// Rewrites this node's lease value (the backend changed, so BackendType and BackendData
    /// did), only if nobody changed the key since we last wrote it. nil when someone did.
    /// With `force`, writes even when the attributes are the same (to repair a value someone
    /// replaced with something unreadable; `lease.modRevision` must be that write's).
    public func update(_ lease: Lease, attributes: LeaseAttributes, force: Bool = false) async throws(LeaseError) -> Lease? {
        guard force || attributes != lease.attributes else { return lease }
        do { return try await write(lease, attributes: attributes) } catch { throw .etcd(error) }
    }

    /// Deletes this node's old key after moving to another subnet, only if it still holds what
    /// this node last wrote: a key another node has taken is never touched.
    public func retire(_ lease: Lease) async throws(LeaseError) {
        let key = layout.key(for: lease.subnet)
        do {
            _ = try await etcd.txn(compare: [.unchanged(key, modRevision: lease.modRevision)], success: [.delete(key: key)], failure: [])
        } catch {
            throw .etcd(error)
        }
    }

    // MARK: Renew

    /// What a renewal did.
    public enum RenewOutcome: Sendable, Equatable {
        /// Still ours, kept alive.
        case renewed(Lease)
        /// The lease had expired or been deleted and was taken again: the same subnet when it
        /// was still free, else a new one (the caller must reconfigure).
        case reacquired(Lease)
    }

    /// Refreshes `lease` (one keepalive) and checks its key is still there and ours. An
    /// expired or deleted lease is re-acquired: the same subnet when still free. A key another
    /// node has taken is left to it: a new subnet is acquired.
    public func renew(_ lease: Lease, config: NetworkConfig, ttl: Int64) async throws(LeaseError) -> RenewOutcome {
        if try await keepAlive(lease) != nil {
            let current = try await current(lease)
            if let kv = current, let l = parse(kv), l.attributes == lease.attributes {
                return .renewed(
                    Lease(
                        subnet: lease.subnet, attributes: l.attributes, etcdLease: kv.lease, modRevision: kv.modRevision,
                        createRevision: kv.createRevision))
            }
            if current != nil {
                logger.error(
                    "this node's lease key holds another node's value; leaving it to that node and acquiring a new subnet",
                    metadata: ["subnet": "\(lease.subnet.ipv4)"])
                return .reacquired(
                    try await acquire(
                        config: config, attributes: lease.attributes, previous: nil, ttl: ttl,
                        avoid: [lease.subnet.ipv4], avoid6: Set([lease.subnet.ipv6].compactMap { $0 }),
                        etcdLease: lease.etcdLease))
            }
        }
        logger.warning("this node's lease is gone (expired or deleted); acquiring again", metadata: ["subnet": "\(lease.subnet.ipv4)"])
        if config.fits(lease.subnet), let same = try await restore(lease, ttl: ttl) {
            return .reacquired(same)
        }
        return .reacquired(
            try await acquire(
                config: config, attributes: lease.attributes, previous: nil, ttl: ttl, avoid: [lease.subnet.ipv4],
                avoid6: Set([lease.subnet.ipv6].compactMap { $0 })))
    }

    /// Gives the subnet back: revokes the etcd lease (deleting the key). Reservations stay.
    public func release(_ lease: Lease) async throws(LeaseError) {
        guard !lease.isReservation else { return }
        do { try await etcd.revoke(lease: lease.etcdLease) } catch .leaseNotFound {} catch { throw .etcd(error) }
    }

    // MARK: Operator commands

    /// Reserves `subnet` for the node with `publicIP`: a lease key with no etcd lease, which
    /// never expires. An existing lease of the same node becomes permanent; another node's
    /// lease is never overwritten.
    public func reserve(_ subnet: IPv4Network, publicIP: IPv4Address) async throws(LeaseError) -> Lease {
        try await reserve(SubnetKey(ipv4: subnet), attributes: LeaseAttributes(publicIP: publicIP))
    }

    /// ``reserve(_:publicIP:)`` for any key: dual stack (`v4&v6`) or IPv6-only
    /// (`0.0.0.0-0&v6`), for the node `attributes` names (PublicIP, or PublicIPv6 when it has
    /// no IPv4).
    public func reserve(_ subnet: SubnetKey, attributes attrs: LeaseAttributes) async throws(LeaseError) -> Lease {
        let key = layout.key(for: subnet)
        do {
            if let kv = try await etcd.get(key).kvs.first {
                guard let existing = parse(kv) else {
                    throw LeaseError.refused("\(key) holds a value Twill cannot read; fix or delete it first")
                }
                guard Self.sameNode(existing.attributes, attrs) else {
                    throw LeaseError.refused(
                        "\(subnet) is leased by \(Self.node(existing.attributes)), not \(Self.node(attrs)); release it first")
                }
                let r = try await etcd.txn(
                    compare: [.unchanged(key, modRevision: kv.modRevision)], success: [.put(key: key, value: kv.value, lease: 0)],
                    failure: [])
                guard r.succeeded else { throw LeaseError.refused("\(key) changed while reserving; try again") }
                return Lease(subnet: existing.subnet, attributes: existing.attributes, etcdLease: 0, modRevision: r.header.revision)
            }
            // Never a subnet another key holds already (with or without the other family).
            if let holder = try await holderKey(of: subnet) {
                throw LeaseError.refused("\(subnet) overlaps the lease \(holder); release it first")
            }
            let r = try await etcd.txn(compare: [.absent(key)], success: [.put(key: key, value: attrs.json(), lease: 0)], failure: [])
            guard r.succeeded else { throw LeaseError.refused("\(subnet) was taken while reserving; try again") }
            return Lease(subnet: subnet, attributes: attrs, etcdLease: 0, modRevision: r.header.revision)
        } catch {
            throw Self.leaseError(error)
        }
    }

    /// How a node is named in messages: its PublicIP, or PublicIPv6 for an IPv6-only node.
    public static func node(_ a: LeaseAttributes) -> String {
        a.publicIP == .any ? a.publicIPv6.map { "\($0)" } ?? "0.0.0.0" : "\(a.publicIP)"
    }

    /// Another key naming one of `subnet`'s subnets, if any.
    func holderKey(of subnet: SubnetKey) async throws(LeaseError) -> SubnetKey? {
        let result: RangeResult
        do { result = try await etcd.list(prefix: layout.subnetsPrefix) } catch { throw .etcd(error) }
        for kv in result.kvs {
            guard let other = try? layout.subnet(fromKey: kv.key), other != subnet else { continue }
            if let a = other.ipv4Subnet, let b = subnet.ipv4Subnet, a.overlaps(b) { return other }
            if let a = other.ipv6, let b = subnet.ipv6, a.overlaps(b) { return other }
        }
        return nil
    }

    /// Deletes the lease (or reservation) of `subnet`; returns what was there, nil if nothing.
    public func remove(_ subnet: IPv4Network) async throws(LeaseError) -> Lease? {
        try await remove { $0.ipv4Subnet == subnet }
    }

    /// Deletes the lease (or reservation) holding IPv6 subnet `subnet` (dual stack or IPv6-only).
    public func remove(_ subnet: IPv6Network) async throws(LeaseError) -> Lease? {
        try await remove { $0.ipv6 == subnet }
    }

    /// Deletes the key whose subnets `matches` (under whatever form it has: `v4`, `v4&v6`,
    /// `0.0.0.0-0&v6`), only if unchanged since it was read.
    private func remove(where matches: (SubnetKey) -> Bool) async throws(LeaseError) -> Lease? {
        do {
            let all = try await etcd.list(prefix: layout.subnetsPrefix).kvs
            guard let kv = all.first(where: { (try? layout.subnet(fromKey: $0.key)).flatMap { $0 }.map(matches) ?? false }) else {
                return nil
            }
            let r = try await etcd.txn(
                compare: [.unchanged(kv.key, modRevision: kv.modRevision)], success: [.delete(key: kv.key)], failure: [])
            guard r.succeeded else { throw LeaseError.refused("\(kv.key) changed while releasing; try again") }
            return parse(kv)
        } catch {
            throw Self.leaseError(error)
        }
    }

    /// Operator commands mix their own refusals with etcd's failures; both become LeaseError.
    static func leaseError(_ error: any Error) -> LeaseError {
        switch error {
        case let e as LeaseError: e
        case let e as EtcdError: .etcd(e)
        default: .refused("\(error)")
        }
    }
}
