import Logging
import TwillAddress
import TwillEtcd

/// A change in the set of leases, as the data path wants to hear it.
public enum LeaseEvent: Sendable, Equatable {
    /// The full set of other nodes' leases: sent first, and again after every resync.
    case snapshot([Lease])
    /// Another node's lease appeared or changed.
    case added(Lease)
    /// Another node's lease went away (expired, released or deleted).
    case removed(Lease)
    /// This node's own lease key changed or was deleted (nil): time to check the lease.
    case ownChanged(SubnetKey, Lease?)
}

/// Watches every lease: lists once, then watches from the listed revision + 1. When etcd has
/// compacted the revision it needs, it lists again, diffs against what it knew and emits the
/// differences, then resumes: no event is lost and it never spins (errors back off, bounded).
public struct LeaseWatcher: Sendable {
    public let registry: SubnetRegistry
    /// This node's public IP: its own lease is reported as `ownChanged`, not as a peer.
    public let ownPublicIP: IPv4Address?
    /// Longest wait between retries after errors.
    public var maxBackoff: Duration = .seconds(10)
    /// Counts resyncs (re-lists after compaction), for metrics.
    public var onResync: (@Sendable () -> Void)?

    public init(registry: SubnetRegistry, ownPublicIP: IPv4Address?) {
        self.registry = registry
        self.ownPublicIP = ownPublicIP
    }

    /// Lease events until the consuming task is cancelled.
    public func events() -> AsyncStream<LeaseEvent> {
        events(resumingFrom: nil)
    }

    /// Events as if the caller already knew `state` (the other nodes' leases at a revision):
    /// watching starts from there, re-listing if that revision has been compacted since.
    func events(resumingFrom state: (revision: Int64, known: [Lease])?) -> AsyncStream<LeaseEvent> {
        let (stream, continuation) = AsyncStream<LeaseEvent>.makeStream()
        let task = Task { await run(continuation, resumingFrom: state) }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private func isOwn(_ lease: Lease) -> Bool { lease.attributes.publicIP == ownPublicIP }

    private func run(_ out: AsyncStream<LeaseEvent>.Continuation, resumingFrom state: (revision: Int64, known: [Lease])?) async {
        let logger = registry.logger
        var known: [SubnetKey: Lease] = [:]
        var revision: Int64 = 0
        var backoff = Duration.seconds(1)
        var needList = true
        var firstList = true
        if let state {
            known = Dictionary(state.known.map { ($0.subnet, $0) }, uniquingKeysWith: { a, _ in a })
            revision = state.revision
            needList = false
            firstList = false
        }

        while !Task.isCancelled {
            if needList {
                do {
                    let (rev, all) = try await registry.leases()
                    let others = all.filter { !isOwn($0) }
                    let fresh = Dictionary(others.map { ($0.subnet, $0) }, uniquingKeysWith: { a, _ in a })
                    if firstList {
                        out.yield(.snapshot(others))
                        firstList = false
                    } else {
                        onResync?()
                        for (key, old) in known where fresh[key] == nil { out.yield(.removed(old)) }
                        for (key, new) in fresh where known[key] != new { out.yield(.added(new)) }
                        out.yield(.snapshot(others))
                    }
                    known = fresh
                    revision = rev
                    needList = false
                    backoff = .seconds(1)
                } catch {
                    logger.warning("cannot list leases; retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, maxBackoff)
                    continue
                }
            }
            do {
                for try await response in registry.etcd.watch(prefix: registry.layout.subnetsPrefix, fromRevision: revision + 1) {
                    for event in response.events { apply(event, &known, out) }
                    if response.revision > revision { revision = response.revision }
                    backoff = .seconds(1)
                }
                if Task.isCancelled { break }
            } catch EtcdError.compacted(let compactRevision) {
                logger.notice("lease watch fell behind a compaction; listing again", metadata: ["revision": "\(revision)", "compact_revision": "\(compactRevision)"])
                needList = true
                continue
            } catch {
                if Task.isCancelled { break }
                logger.warning("lease watch ended; resuming", metadata: ["error": "\(error)", "from_revision": "\(revision + 1)", "retry_in": "\(backoff)"])
            }
            // Never spin: wait before watching again.
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, maxBackoff)
        }
        out.finish()
    }

    private func apply(_ event: WatchEvent, _ known: inout [SubnetKey: Lease], _ out: AsyncStream<LeaseEvent>.Continuation) {
        let subnet: SubnetKey
        do {
            guard let s = try registry.layout.subnet(fromKey: event.kv.key) else { return }
            subnet = s
        } catch {
            registry.logger.warning("ignoring a key under subnets/ that is not a lease", metadata: ["key": "\(event.kv.key)", "error": "\(error)"])
            return
        }
        switch event.kind {
        case .delete:
            if let old = known.removeValue(forKey: subnet) {
                out.yield(.removed(old))
            } else {
                out.yield(.ownChanged(subnet, nil))
            }
        case .put:
            guard let lease = registry.parse(event.kv) else {
                // Unreadable now: treat as gone for routing, never delete it.
                if let old = known.removeValue(forKey: subnet) { out.yield(.removed(old)) }
                return
            }
            if isOwn(lease) {
                if let old = known.removeValue(forKey: subnet) { out.yield(.removed(old)) }
                out.yield(.ownChanged(subnet, lease))
                return
            }
            if known[subnet] != lease {
                known[subnet] = lease
                out.yield(.added(lease))
            }
        }
    }
}
