import Logging
import TwillEtcd

/// What changed under the prefix, as the agent wants to hear it.
public enum ClusterEvent: Sendable, Equatable {
    /// Why everything was listed again.
    public enum ResetReason: String, Sendable, Equatable {
        case initial
        /// The watch fell behind a compaction.
        case compacted
        /// etcd's revision went backwards or its cluster changed: a restore from a snapshot.
        case restored
    }
    /// Everything under the prefix now: sent first, and again after a compaction or a restore.
    /// `config` is the value at `<prefix>/config` (nil when absent), `leases` every key under
    /// `<prefix>/subnets/`.
    case reset(config: KeyValue?, leases: [KeyValue], revision: Int64, reason: ResetReason)
    /// `<prefix>/config` was written (or deleted: nil).
    case config(KeyValue?)
    /// A key under `<prefix>/subnets/` was written.
    case leasePut(KeyValue)
    /// A key under `<prefix>/subnets/` was deleted (or expired).
    case leaseDeleted(key: String)
    /// The watch is alive and etcd answers (`true`), or every endpoint failed and it is
    /// retrying (`false`): a heartbeat at least every few seconds either way.
    case connectivity(reachable: Bool)
}

/// Watches everything under the prefix (the network config and every lease) with one etcd
/// watch: lists once, then watches from the listed revision + 1, resuming after any failure
/// from the last delivered revision (the client moves between members by itself). When the
/// revision it needs has been compacted, or etcd was restored to an older revision, it lists
/// again and reports a ``ClusterEvent/reset(config:leases:revision:reason:)``: no event is
/// lost, and it never spins (errors back off, bounded).
public struct ClusterWatcher: Sendable {
    public let etcd: any EtcdAPI
    public let layout: EtcdLayout
    public let logger: Logger
    /// Longest wait between retries after errors.
    public var maxBackoff: Duration = .seconds(10)

    public init(etcd: any EtcdAPI, layout: EtcdLayout, logger: Logger = Logger(label: "twill.watch")) {
        self.etcd = etcd
        self.layout = layout
        self.logger = logger
    }

    /// Events until the consuming task is cancelled.
    public func events() -> AsyncStream<ClusterEvent> { events(watchingFrom: nil) }

    /// With a revision: no first list, the watch starts there (as a watcher that was away
    /// resumes; tests use it to fall behind a compaction).
    func events(watchingFrom start: Int64?) -> AsyncStream<ClusterEvent> {
        let (stream, continuation) = AsyncStream<ClusterEvent>.makeStream()
        let task = Task { await run(continuation, start: start) }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private var watchedPrefix: String { layout.prefix.hasSuffix("/") ? layout.prefix : layout.prefix + "/" }

    private func run(_ out: AsyncStream<ClusterEvent>.Continuation, start: Int64?) async {
        var resume: Int64 = start ?? 0
        var backoff = Duration.seconds(1)
        var reason: ClusterEvent.ResetReason? = start == nil ? .initial : nil

        while !Task.isCancelled {
            if let why = reason {
                do {
                    let all = try await etcd.list(prefix: watchedPrefix)
                    let config = all.kvs.first { $0.key == layout.configKey }
                    let leases = all.kvs.filter { $0.key.hasPrefix(layout.subnetsPrefix) }
                    out.yield(.reset(config: config, leases: leases, revision: all.header.revision, reason: why))
                    resume = all.header.revision + 1
                    reason = nil
                    backoff = .seconds(1)
                } catch {
                    logger.warning(
                        "cannot list the network config and leases; retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
                    out.yield(.connectivity(reachable: false))
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, maxBackoff)
                    continue
                }
            }
            do {
                for try await response in etcd.watch(prefix: watchedPrefix, fromRevision: resume) {
                    for event in response.events { deliver(event, out) }
                    resume = max(resume, response.resumeRevision)
                    if response.events.isEmpty { out.yield(.connectivity(reachable: true)) }
                    backoff = .seconds(1)
                }
                if Task.isCancelled { break }
            } catch let e as EtcdError {
                if Task.isCancelled { break }
                switch e {
                case .compacted(let compactRevision):
                    logger.notice(
                        "watch fell behind a compaction; listing again",
                        metadata: ["from_revision": "\(resume)", "compact_revision": "\(compactRevision)"])
                    reason = .compacted
                    continue
                case .revisionWentBackwards, .clusterChanged:
                    logger.error("etcd was restored or replaced; listing everything again", metadata: ["error": "\(e)"])
                    reason = .restored
                    continue
                default:
                    logger.warning(
                        "watch ended; resuming", metadata: ["error": "\(e)", "from_revision": "\(resume)", "retry_in": "\(backoff)"])
                    out.yield(.connectivity(reachable: false))
                }
            } catch {
                if Task.isCancelled { break }
                logger.warning("watch ended; resuming", metadata: ["error": "\(error)", "from_revision": "\(resume)"])
            }
            // Never spin: wait before watching again.
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, maxBackoff)
        }
        out.finish()
    }

    private func deliver(_ event: WatchEvent, _ out: AsyncStream<ClusterEvent>.Continuation) {
        let key = event.kv.key
        if key == layout.configKey {
            out.yield(.config(event.kind == .put ? event.kv : nil))
        } else if key.hasPrefix(layout.subnetsPrefix) {
            out.yield(event.kind == .put ? .leasePut(event.kv) : .leaseDeleted(key: key))
        }
    }
}
