import Logging
import Synchronization
import TwillAddress
import TwillEtcd
import TwillLease

/// This node's subnet lease: taken, kept alive through etcd outages, defended.
///
/// One task drives it (``step()``, a few times a second); the watch reports changes of the
/// node's own key (``noteOwnKey(_:)``) and readers see ``lease``.
/// - Renewal: every ``RenewSchedule/interval``; failures are retried at a pace set by the
///   time the lease has left (``RenewSchedule``), each attempt bounded so that the lease
///   cannot run out while it waits; the client tries every endpoint.
/// - Deleted or expired: put back, on the same subnet (and etcd lease while it lives).
/// - Overwritten with another node's value: that node may already have workloads there, so
///   this node leaves the subnet to it and moves to a fresh one (the caller reconfigures).
/// - Overwritten with something unreadable: repaired (it is nobody's lease).
final class LeaseKeeper: Sendable {
    /// What the watch saw at this node's key. It names the key, so that news that arrives
    /// after the node moved to another subnet is not taken for news of the new one.
    enum OwnKeyNews: Sendable, Equatable {
        case changed(KeyValue)
        case deleted(key: String)

        var key: String {
            switch self {
            case .changed(let kv): kv.key
            case .deleted(let key): key
            }
        }
    }

    /// A change of subnet the node must follow.
    struct Move: Sendable, Equatable {
        var from: Lease
        var to: Lease
        var reason: String
    }

    let registry: SubnetRegistry
    let ttl: Int64
    let schedule: RenewSchedule
    let requestTimeout: Duration
    let logger: Logger
    let state: AgentState
    /// The clock renewals and expiry are judged by: `ContinuousClock`'s now, or a test's
    /// manual clock. etcd request deadlines stay on the real clock.
    let now: @Sendable () -> ContinuousClock.Instant

    private struct Current {
        var lease: Lease?
        var expiry: ContinuousClock.Instant?
        var config: NetworkConfig?
        var attributes: LeaseAttributes?
        var nextRenewal: ContinuousClock.Instant
        var failures = 0
        var news: OwnKeyNews?
    }
    private let current: Mutex<Current>

    init(
        registry: SubnetRegistry, ttl: Int64, schedule: RenewSchedule, requestTimeout: Duration, logger: Logger, state: AgentState,
        now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) {
        self.now = now
        self.current = Mutex(Current(nextRenewal: now()))
        self.registry = registry
        self.ttl = ttl
        self.schedule = schedule
        self.requestTimeout = requestTimeout
        self.logger = logger
        self.state = state
    }

    var lease: Lease? { current.withLock { $0.lease } }

    private var layout: EtcdLayout { registry.layout }

    /// The etcd key of the lease held now.
    var ownKey: String? { lease.map { layout.key(for: $0.subnet) } }

    // MARK: Taking a lease

    /// The lease for `config` with `attributes`: this node's current one when it still fits
    /// (its value rewritten if the backend changed), else a new one (the old key deleted).
    /// At first start: flannel's order (our old lease, then `previous`, then a free subnet).
    func establish(config: NetworkConfig, attributes: LeaseAttributes, previous: IPv4Network?, previous6: IPv6Network? = nil)
        async throws(LeaseError) -> Lease
    {
        let held = lease
        var result: Lease
        if let held, config.fits(held.subnet) {
            if held.attributes == attributes {
                result = held
            } else if let updated = try await registry.update(held, attributes: attributes) {
                logger.info(
                    "updated this node's lease for the new backend",
                    metadata: ["subnet": "\(held.subnet.ipv4)", "backend": "\(attributes.backendType ?? "udp")"])
                result = updated
            } else {
                result = try await registry.acquire(
                    config: config, attributes: attributes, previous: nil, ttl: ttl,
                    avoid: [held.subnet.ipv4], avoid6: Set([held.subnet.ipv6].compactMap { $0 }), etcdLease: held.etcdLease)
            }
        } else if let held {
            logger.notice("this node's subnet does not fit the new network config; leasing another", metadata: ["key": "\(held.subnet)"])
            result = try await registry.acquire(config: config, attributes: attributes, previous: nil, ttl: ttl, etcdLease: held.etcdLease)
            if result.subnet != held.subnet { try? await registry.retire(held) }
        } else {
            result = try await registry.acquire(config: config, attributes: attributes, previous: previous, previous6: previous6, ttl: ttl)
        }
        let now = self.now()
        current.withLock { c in
            c.lease = result
            c.config = config
            c.attributes = attributes
            c.expiry = result.isReservation ? nil : now + .seconds(ttl)
            c.nextRenewal = now + schedule.interval
            c.failures = 0
            c.news = nil
        }
        state.setLease(result, expiry: result.isReservation ? nil : now + .seconds(ttl), ttl: ttl)
        return result
    }

    /// Gives the subnet back (`--release-on-exit`).
    func release() async throws(LeaseError) {
        guard let lease else { return }
        try await registry.release(lease)
    }

    // MARK: Keeping it

    /// The watch saw this node's key change or go; acted on at the next ``step()``.
    func noteOwnKey(_ news: OwnKeyNews) {
        current.withLock { c in
            guard let lease = c.lease, layout.key(for: lease.subnet) == news.key else { return }
            c.news = news
        }
    }

    /// Acts on news of the own key, and renews when due. Returns the move the node must
    /// follow, if the subnet changed.
    func step() async -> Move? {
        let (news, due) = current.withLock { c -> (OwnKeyNews?, Bool) in
            defer { c.news = nil }
            return (c.news, now() >= c.nextRenewal)
        }
        if let news {
            switch await handle(news) {
            case .moved(let move): return move
            case .failed:
                // Try again next step, unless the node moved meanwhile or newer news came.
                current.withLock { c in
                    if c.news == nil, let lease = c.lease, layout.key(for: lease.subnet) == news.key { c.news = news }
                }
            case .done: break
            }
        }
        guard due else { return nil }
        return await renew()
    }

    private enum Outcome {
        case done
        case moved(Move)
        case failed
    }

    /// Runs `body` with every etcd request bounded so that the lease cannot expire meanwhile.
    private func bounded<T: Sendable>(_ body: () async throws(LeaseError) -> T) async throws(LeaseError) -> T {
        let remaining = current.withLock { $0.expiry.map { $0 - now() } }
        let deadline = ContinuousClock.now + schedule.attemptDeadline(remaining: remaining, requestTimeout: requestTimeout)
        let result: Result<T, LeaseError> = await EtcdClient.$deadline.withValue(deadline) {
            do throws(LeaseError) { return .success(try await body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    private func renew() async -> Move? {
        guard let lease = lease else { return nil }
        do {
            let ttl = try await bounded { () async throws(LeaseError) in try await registry.keepAlive(lease) }
            guard let ttl else {
                logger.warning(
                    "this node's etcd lease is gone (expired or revoked); leasing the subnet again",
                    metadata: [
                        "subnet": "\(lease.subnet.ipv4)", "etcd_lease": "\(lease.etcdLease)",
                    ])
                return try await reacquire(lease, because: "the etcd lease expired")
            }
            let now = self.now()
            let recovered = current.withLock { c -> Int in
                defer {
                    c.failures = 0
                    c.nextRenewal = now + schedule.interval
                    if !lease.isReservation { c.expiry = now + .seconds(ttl > 0 ? ttl : self.ttl) }
                }
                return c.failures
            }
            if recovered > 0 {
                logger.notice(
                    "renewed the subnet lease again", metadata: ["subnet": "\(lease.subnet.ipv4)", "failed_attempts": "\(recovered)"])
            } else {
                logger.debug("renewed subnet lease", metadata: ["subnet": "\(lease.subnet.ipv4)", "ttl": "\(ttl)"])
            }
            state.setLease(lease, expiry: lease.isReservation ? nil : now + .seconds(ttl > 0 ? ttl : self.ttl), ttl: self.ttl)
            // The watch reports changes at once; this check covers a watch that missed one.
            let kv = try await bounded { () async throws(LeaseError) in try await registry.current(lease) }
            if kv.map({ $0.value != lease.attributes.json() }) ?? true {
                noteOwnKey(kv.map { .changed($0) } ?? .deleted(key: layout.key(for: lease.subnet)))
            }
            return nil
        } catch {
            let (attempt, remaining) = current.withLock { c -> (Int, Duration?) in
                c.failures += 1
                return (c.failures, c.expiry.map { $0 - now() })
            }
            let delay = schedule.retryDelay(attempt: attempt, remaining: remaining)
            let retryAt = now() + delay
            current.withLock { $0.nextRenewal = retryAt }
            if attempt == 1 || attempt % 10 == 0 {
                logger.warning(
                    "could not renew the subnet lease; retrying",
                    metadata: [
                        "subnet": "\(lease.subnet.ipv4)", "error": "\(error)", "attempt": "\(attempt)", "retry_in": "\(delay)",
                        "expires_in": "\(remaining.map { "\($0)" } ?? "never")",
                    ])
            }
            return nil
        }
    }

    private func handle(_ news: OwnKeyNews) async -> Outcome {
        guard let lease = lease, let attributes = current.withLock({ $0.attributes }) else { return .done }
        let key = layout.key(for: lease.subnet)
        guard news.key == key else { return .done }
        do {
            switch news {
            case .deleted:
                logger.warning("this node's lease key was deleted; putting it back", metadata: ["key": "\(key)"])
                if let move = try await reacquire(lease, because: "its key was deleted") { return .moved(move) }
                return .done
            case .changed(let kv):
                if kv.value == attributes.json() {
                    // Ours (our own write, or someone rewrote the same value): follow its lease.
                    adopt(kv, for: lease)
                    return .done
                }
                guard let other = try? LeaseAttributes(json: kv.value, key: kv.key) else {
                    logger.warning(
                        "this node's lease key holds an unreadable value; writing this node's value back",
                        metadata: [
                            "key": "\(key)", "value": "\(String(decoding: kv.value.prefix(80), as: UTF8.self))",
                        ])
                    var seen = lease
                    seen.modRevision = kv.modRevision
                    if let repaired = try await bounded({ () async throws(LeaseError) in
                        try await registry.update(seen, attributes: attributes, force: true)
                    }) {
                        current.withLock { $0.lease = repaired }
                    }
                    return .done
                }
                return .moved(try await move(away: lease, takenBy: other, kv: kv))
            }
        } catch {
            logger.warning(
                "could not act on a change of this node's lease key; retrying", metadata: ["key": "\(key)", "error": "\(error)"])
            return .failed
        }
    }

    private func adopt(_ kv: KeyValue, for lease: Lease) {
        current.withLock { c in
            guard var l = c.lease, l.subnet == lease.subnet else { return }
            l.modRevision = kv.modRevision
            l.createRevision = kv.createRevision
            l.etcdLease = kv.lease
            c.lease = l
        }
    }

    /// Another node's value is in our key: leave the subnet to it and take another.
    private func move(away lease: Lease, takenBy other: LeaseAttributes, kv: KeyValue) async throws(LeaseError) -> Move {
        let key = layout.key(for: lease.subnet)
        guard let (config, attributes) = current.withLock({ c in c.config.flatMap { cfg in c.attributes.map { (cfg, $0) } } }) else {
            throw .refused("no network config yet")
        }
        state.countConflict()
        logger.error(
            "another node took this node's subnet; moving to a fresh subnet (workloads here keep addresses in the old one: restart them)",
            metadata: [
                "key": "\(key)", "this_node": "\(SubnetRegistry.node(attributes))", "other_node": "\(SubnetRegistry.node(other))",
                "other_backend": "\(other.backendType ?? "udp")", "our_backend": "\(attributes.backendType ?? "udp")",
            ])
        let fresh = try await bounded { () async throws(LeaseError) in
            try await registry.acquire(
                config: config, attributes: attributes, previous: nil, ttl: ttl,
                avoid: [lease.subnet.ipv4], avoid6: Set([lease.subnet.ipv6].compactMap { $0 }), etcdLease: lease.etcdLease)
        }
        install(fresh)
        logger.notice(
            "moved to a new subnet", metadata: ["old": "\(lease.subnet)", "new": "\(fresh.subnet)", "etcd_lease": "\(fresh.etcdLease)"])
        return Move(from: lease, to: fresh, reason: "\(lease.subnet) was taken by \(SubnetRegistry.node(other))")
    }

    /// The lease's key or etcd lease is gone: the same subnet if nobody took it, else another.
    private func reacquire(_ lease: Lease, because reason: String) async throws(LeaseError) -> Move? {
        if let restored = try await bounded({ () async throws(LeaseError) in try await registry.restore(lease, ttl: ttl) }) {
            install(restored)
            logger.notice(
                "this node's lease is back", metadata: ["subnet": "\(restored.subnet.ipv4)", "etcd_lease": "\(restored.etcdLease)"])
            return nil
        }
        // Someone created the key in between: whose is it?
        if let kv = try await bounded({ () async throws(LeaseError) in try await registry.current(lease) }),
            let other = try? LeaseAttributes(json: kv.value, key: kv.key), other != lease.attributes
        {
            return try await move(away: lease, takenBy: other, kv: kv)
        }
        throw .refused("\(layout.key(for: lease.subnet)) changed while \(reason); trying again")
    }

    private func install(_ lease: Lease) {
        let now = self.now()
        let expiry: ContinuousClock.Instant? = lease.isReservation ? nil : now + .seconds(ttl)
        current.withLock { c in
            c.lease = lease
            c.expiry = expiry
            c.failures = 0
            c.nextRenewal = now + schedule.interval
            // News of the old key is not news of this one.
            c.news = nil
        }
        state.setLease(lease, expiry: expiry, ttl: ttl)
    }
}
