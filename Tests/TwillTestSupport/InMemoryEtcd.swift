import Foundation
import Synchronization
import TwillEtcd

/// An etcd in memory, behind ``EtcdAPI``: for the lease, watch and agent logic in the unit
/// tier (no etcd process, no sockets). It keeps etcd's rules that Twill depends on:
///
/// - one store revision, raised once per write request (a transaction with several writes is
///   one revision); keys carry create/mod revision, version and lease;
/// - leases with a TTL on an injected ``ManualClock``: ``advance(by:)`` past a lease's expiry
///   deletes its keys in one revision, as etcd's lessor does;
/// - watches from a revision, replaying what was written since; `created` first; progress
///   notifications on ``sendProgress()``; a watch from a compacted revision ends with
///   ``EtcdError/compacted(revision:)``;
/// - injected failures per operation (``failNext(_:with:)``), and watch streams broken on
///   demand (``breakWatches(with:)``).
///
/// The real client's behaviour over HTTP (failover, timeouts, TLS, malformed answers) is
/// tested against a real etcd in `TwillEtcdTests`; this is for logic behind the protocol.
public final class InMemoryEtcd: EtcdAPI, Sendable {
    /// The operations failures can be injected into.
    public enum Operation: String, Sendable, CaseIterable {
        case get, list, put, delete, txn, grant, keepAlive, revoke, timeToLive, watch
    }

    /// The endpoint name messages carry.
    public let endpoint = "memory://etcd"
    /// The clock leases expire on.
    public let clock: ManualClock

    private struct Lease {
        var grantedTTL: Int64
        var expiry: ContinuousClock.Instant
        var keys: Set<String> = []
    }

    private struct Watcher {
        var prefix: String
        var continuation: AsyncThrowingStream<WatchResponse, any Error>.Continuation
    }

    private struct State {
        var revision: Int64 = 1
        var compacted: Int64 = 0
        var kvs: [String: KeyValue] = [:]
        /// Every event with its revision, for watches that start in the past.
        var history: [WatchEvent] = []
        var leases: [Int64: Lease] = [:]
        var nextLease: Int64 = 0x7000
        var watchers: [Int: Watcher] = [:]
        var nextWatcher = 0
        var failures: [Operation: [EtcdError]] = [:]
        var calls: [Operation: Int] = [:]
    }

    private let state = Mutex(State())

    public init(clock: ManualClock = ManualClock()) {
        self.clock = clock
    }

    // MARK: Test controls

    /// The current store revision.
    public var revision: Int64 { state.withLock { $0.revision } }

    /// How many times `operation` was called (failed calls included).
    public func calls(_ operation: Operation) -> Int { state.withLock { $0.calls[operation] ?? 0 } }

    /// The next call of `operation` throws `error` (queued: call again for the one after).
    public func failNext(_ operation: Operation, with error: EtcdError) {
        state.withLock { $0.failures[operation, default: []].append(error) }
    }

    /// Moves the clock on and expires the leases whose time is up, deleting their keys.
    public func advance(by duration: Duration) {
        clock.advance(by: duration)
        expireLeases()
    }

    /// Compacts the history up to `revision` (the current one when nil): watches from before
    /// it end with ``EtcdError/compacted(revision:)``.
    public func compact(upTo revision: Int64? = nil) {
        state.withLock { s in
            let r = min(revision ?? s.revision, s.revision)
            s.compacted = max(s.compacted, r)
            s.history.removeAll { $0.kv.modRevision < r }
        }
    }

    /// Sends every open watch a progress notification at the current revision.
    public func sendProgress() {
        let (watchers, revision) = state.withLock { s in (Array(s.watchers.values), s.revision) }
        for w in watchers {
            w.continuation.yield(
                WatchResponse(kind: .progress, revision: revision, events: [], resumeRevision: revision + 1, endpoint: endpoint))
        }
    }

    /// Ends every open watch by throwing `error`, as a member going away does.
    public func breakWatches(with error: EtcdError) {
        let watchers = state.withLock { s in
            defer { s.watchers.removeAll() }
            return Array(s.watchers.values)
        }
        for w in watchers { w.continuation.finish(throwing: error) }
    }

    /// How many watch streams are open.
    public var openWatches: Int { state.withLock { $0.watchers.count } }

    /// The key's value, read directly (no revision, no failure injection).
    public func value(_ key: String) -> KeyValue? { state.withLock { $0.kvs[key] } }

    // MARK: EtcdAPI

    public func get(_ key: String) async throws(EtcdError) -> RangeResult {
        try enter(.get)
        return state.withLock { s in
            let kvs = s.kvs[key].map { [$0] } ?? []
            return RangeResult(header: ResponseHeader(revision: s.revision), kvs: kvs, count: Int64(kvs.count))
        }
    }

    public func list(prefix: String) async throws(EtcdError) -> RangeResult {
        try enter(.list)
        return state.withLock { s in Self.range(s, prefix: prefix) }
    }

    @discardableResult
    public func put(_ key: String, value: Data, lease: Int64) async throws(EtcdError) -> ResponseHeader {
        try enter(.put)
        let result = state.withLock { s -> Result<(ResponseHeader, [WatchEvent]), EtcdError> in
            if lease != 0, s.leases[lease] == nil { return .failure(.leaseNotFound(id: lease)) }
            let revision = s.revision + 1
            let event = Self.write(&s, key: key, value: value, lease: lease, revision: revision)
            s.revision = revision
            Self.record(&s, [event], endpoint: endpoint)
            return .success((ResponseHeader(revision: revision), [event]))
        }
        return try result.get().0
    }

    @discardableResult
    public func delete(_ key: String) async throws(EtcdError) -> Int64 {
        try enter(.delete)
        let events = state.withLock { s -> [WatchEvent] in
            guard s.kvs[key] != nil else { return [] }
            let revision = s.revision + 1
            let event = Self.remove(&s, key: key, revision: revision)
            s.revision = revision
            Self.record(&s, [event], endpoint: endpoint)
            return [event]
        }
        return Int64(events.count)
    }

    public func txn(compare: [Compare], success: [RequestOp], failure: [RequestOp]) async throws(EtcdError) -> TxnResult {
        try enter(.txn)
        let result = state.withLock { s -> Result<TxnResult, EtcdError> in
            let succeeded = compare.allSatisfy { Self.holds($0, s.kvs[$0.key]) }
            let ops = succeeded ? success : failure
            for case .put(_, _, let lease) in ops where lease != 0 && s.leases[lease] == nil {
                return .failure(.leaseNotFound(id: lease))
            }
            let writes = ops.contains { op in
                switch op {
                case .put: return true
                case .delete(let key): return s.kvs[key] != nil
                case .get, .list: return false
                }
            }
            let revision = writes ? s.revision + 1 : s.revision
            var responses: [ResponseOp] = []
            var events: [WatchEvent] = []
            for op in ops {
                switch op {
                case .put(let key, let value, let lease):
                    events.append(Self.write(&s, key: key, value: value, lease: lease, revision: revision))
                    responses.append(.put)
                case .delete(let key):
                    if s.kvs[key] != nil {
                        events.append(Self.remove(&s, key: key, revision: revision))
                        responses.append(.delete(deleted: 1))
                    } else {
                        responses.append(.delete(deleted: 0))
                    }
                case .get(let key):
                    let kvs = s.kvs[key].map { [$0] } ?? []
                    responses.append(.range(RangeResult(header: ResponseHeader(revision: revision), kvs: kvs, count: Int64(kvs.count))))
                case .list(let prefix):
                    var r = Self.range(s, prefix: prefix)
                    r.header.revision = revision
                    responses.append(.range(r))
                }
            }
            s.revision = revision
            Self.record(&s, events, endpoint: endpoint)
            return .success(TxnResult(header: ResponseHeader(revision: revision), succeeded: succeeded, responses: responses))
        }
        return try result.get()
    }

    public func grant(ttl: Int64) async throws(EtcdError) -> LeaseGrant {
        try enter(.grant)
        let now = clock.now
        return state.withLock { s in
            s.nextLease += 1
            s.leases[s.nextLease] = Lease(grantedTTL: ttl, expiry: now + .seconds(ttl))
            return LeaseGrant(id: s.nextLease, ttl: ttl)
        }
    }

    public func keepAlive(lease: Int64) async throws(EtcdError) -> Int64 {
        try enter(.keepAlive)
        expireLeases()
        let now = clock.now
        let ttl = state.withLock { s -> Int64? in
            guard var l = s.leases[lease] else { return nil }
            l.expiry = now + .seconds(l.grantedTTL)
            s.leases[lease] = l
            return l.grantedTTL
        }
        guard let ttl else { throw .leaseNotFound(id: lease) }
        return ttl
    }

    public func revoke(lease: Int64) async throws(EtcdError) {
        try enter(.revoke)
        let found = state.withLock { s -> Bool in
            guard let l = s.leases.removeValue(forKey: lease) else { return false }
            Self.deleteKeys(&s, l.keys, endpoint: endpoint)
            return true
        }
        guard found else { throw .leaseNotFound(id: lease) }
    }

    public func timeToLive(lease: Int64) async throws(EtcdError) -> LeaseStatus? {
        try enter(.timeToLive)
        expireLeases()
        let now = clock.now
        return state.withLock { s in
            guard let l = s.leases[lease] else { return nil }
            let left = l.expiry - now
            return LeaseStatus(id: lease, ttl: max(0, left.components.seconds), grantedTTL: l.grantedTTL, keys: l.keys.sorted())
        }
    }

    public func watch(prefix: String, fromRevision: Int64?) -> AsyncThrowingStream<WatchResponse, any Error> {
        let (stream, continuation) = AsyncThrowingStream<WatchResponse, any Error>.makeStream()
        if let error = takeFailure(.watch) {
            continuation.finish(throwing: error)
            return stream
        }
        let id = state.withLock { s -> Int? in
            if let from = fromRevision, from < s.compacted {
                continuation.finish(throwing: EtcdError.compacted(revision: s.compacted))
                return nil
            }
            // Registered and replayed under the lock: no write can fall between the two.
            continuation.yield(
                WatchResponse(
                    kind: .created, revision: s.revision, events: [], resumeRevision: fromRevision ?? s.revision + 1, endpoint: endpoint))
            if let from = fromRevision {
                let past = s.history.filter { $0.kv.modRevision >= from && $0.kv.key.hasPrefix(prefix) }
                for group in Self.byRevision(past) {
                    continuation.yield(Self.response(group, revision: s.revision, endpoint: endpoint))
                }
            }
            let id = s.nextWatcher
            s.nextWatcher += 1
            s.watchers[id] = Watcher(prefix: prefix, continuation: continuation)
            return id
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
            }
        }
        return stream
    }

    // MARK: Internals

    private func enter(_ operation: Operation) throws(EtcdError) {
        if let error = takeFailure(operation) { throw error }
    }

    private func takeFailure(_ operation: Operation) -> EtcdError? {
        state.withLock { s in
            s.calls[operation, default: 0] += 1
            guard var queue = s.failures[operation], !queue.isEmpty else { return nil }
            let error = queue.removeFirst()
            s.failures[operation] = queue
            return error
        }
    }

    private func expireLeases() {
        let now = clock.now
        state.withLock { s in
            let expired = s.leases.filter { $0.value.expiry <= now }
            var keys = Set<String>()
            for (id, lease) in expired {
                s.leases[id] = nil
                keys.formUnion(lease.keys)
            }
            Self.deleteKeys(&s, keys, endpoint: endpoint)
        }
    }

    /// Deletes `keys` in one revision (none when no key exists).
    private static func deleteKeys(_ s: inout State, _ keys: Set<String>, endpoint: String) {
        let present = keys.filter { s.kvs[$0] != nil }.sorted()
        guard !present.isEmpty else { return }
        let revision = s.revision + 1
        let events = present.map { remove(&s, key: $0, revision: revision) }
        s.revision = revision
        record(&s, events, endpoint: endpoint)
    }

    private static func write(_ s: inout State, key: String, value: Data, lease: Int64, revision: Int64) -> WatchEvent {
        let old = s.kvs[key]
        if let oldLease = old?.lease, oldLease != lease { s.leases[oldLease]?.keys.remove(key) }
        if lease != 0 { s.leases[lease]?.keys.insert(key) }
        let kv = KeyValue(
            key: key, value: value, createRevision: old?.createRevision ?? revision, modRevision: revision,
            version: (old?.version ?? 0) + 1, lease: lease)
        s.kvs[key] = kv
        return WatchEvent(kind: .put, kv: kv, previous: old)
    }

    private static func remove(_ s: inout State, key: String, revision: Int64) -> WatchEvent {
        let old = s.kvs.removeValue(forKey: key)
        if let lease = old?.lease, lease != 0 { s.leases[lease]?.keys.remove(key) }
        return WatchEvent(kind: .delete, kv: KeyValue(key: key, value: Data(), modRevision: revision), previous: old)
    }

    private static func range(_ s: State, prefix: String) -> RangeResult {
        let kvs = s.kvs.values.filter { $0.key.hasPrefix(prefix) }.sorted {
            Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8))
        }
        return RangeResult(header: ResponseHeader(revision: s.revision), kvs: kvs, count: Int64(kvs.count))
    }

    /// etcd's compare rules: a missing key compares as version, revisions and lease 0 and an
    /// empty value.
    private static func holds(_ c: Compare, _ kv: KeyValue?) -> Bool {
        func order<T: Comparable>(_ a: T, _ b: T) -> Bool {
            switch c.result {
            case .equal: a == b
            case .notEqual: a != b
            case .greater: a > b
            case .less: a < b
            }
        }
        switch c.target {
        case .version(let v): return order(kv?.version ?? 0, v)
        case .createRevision(let v): return order(kv?.createRevision ?? 0, v)
        case .modRevision(let v): return order(kv?.modRevision ?? 0, v)
        case .lease(let v): return order(kv?.lease ?? 0, v)
        case .value(let v):
            let a = Array(kv?.value ?? Data())
            let b = Array(v)
            switch c.result {
            case .equal: return a == b
            case .notEqual: return a != b
            case .greater: return b.lexicographicallyPrecedes(a)
            case .less: return a.lexicographicallyPrecedes(b)
            }
        }
    }

    private static func byRevision(_ events: [WatchEvent]) -> [[WatchEvent]] {
        var groups: [[WatchEvent]] = []
        for e in events {
            if let last = groups.last?.last, last.kv.modRevision == e.kv.modRevision {
                groups[groups.count - 1].append(e)
            } else {
                groups.append([e])
            }
        }
        return groups
    }

    private static func response(_ events: [WatchEvent], revision: Int64, endpoint: String) -> WatchResponse {
        WatchResponse(
            kind: .events, revision: revision, events: events, resumeRevision: (events.last?.kv.modRevision ?? revision) + 1,
            endpoint: endpoint)
    }

    /// Keeps one write request's events for later watches and delivers them to the open
    /// watches whose prefix they match, under the store's lock so every watch sees writes in
    /// revision order and none twice.
    private static func record(_ s: inout State, _ events: [WatchEvent], endpoint: String) {
        guard !events.isEmpty else { return }
        s.history += events
        for w in s.watchers.values {
            let mine = events.filter { $0.kv.key.hasPrefix(w.prefix) }
            if !mine.isEmpty { w.continuation.yield(response(mine, revision: s.revision, endpoint: endpoint)) }
        }
    }
}

/// A clock that moves only when told to, for TTLs and renewal schedules in unit tests. Its
/// instants are `ContinuousClock` instants (it starts at the real now), so code that stores
/// `ContinuousClock.Instant` takes it unchanged.
public final class ManualClock: Sendable {
    private let base = ContinuousClock.now
    private let offset = Mutex(Duration.zero)

    public init() {}

    /// The clock's now.
    public var now: ContinuousClock.Instant { base + offset.withLock { $0 } }

    /// Moves the clock on.
    public func advance(by duration: Duration) {
        offset.withLock { $0 += duration }
    }
}
