import Logging
import Synchronization
import TwillDatapath
import TwillLease
import TwillSystem

/// The one door to a session's backend, and the peers it was last given.
///
/// Everything that changes the data path goes through here, one at a time: a start for a
/// new subnet, lease changes from the watch, and the kernel loop's reconciles must not
/// interleave inside the backend. Reconciles read the peer list under the same lock, so a
/// reconcile never undoes a newer change. The list is what the backend was given, not the
/// health model's copy for status.
final class PeerStore: Sendable {
    let backend: any Backend
    private let logger: Logger
    private let lock = AsyncLock()
    /// What the backend was last given, by key (read and written under `lock`).
    private let given = Mutex<[PeerLease.Key: PeerLease]>([:])
    /// A change failed or the kernel changed: the next kernel-loop pass reconciles.
    private let dirty = Atomic<Bool>(false)

    init(backend: any Backend, logger: Logger) {
        self.backend = backend
        self.logger = logger
    }

    /// The peers the backend has now.
    var peers: [PeerLease] { given.withLock { Array($0.values) } }

    /// Starts the backend for `local` with `peers`, as they are known before the watch lists.
    func start(local: NodeAddressing, peers: [PeerLease]) async throws {
        try await lock.withLock { () async throws in
            try await backend.start(local: local, peers: peers)
            given.withLock { $0 = Dictionary(peers.map { ($0.key, $0) }, uniquingKeysWith: { _, b in b }) }
        }
    }

    /// Gives the backend one change: removed peers first (a subnet that moved between nodes
    /// is then never routed twice), then added and changed ones. A failure marks the store
    /// dirty: the next reconcile gives the backend everything again.
    func apply(_ change: PeerSet.Change) async {
        let removed = change.removed.map(Agent.peer)
        let added = (change.added + change.changed).map(Agent.peer)
        guard !removed.isEmpty || !added.isEmpty else { return }
        do {
            try await lock.withLock { () async throws in
                for p in removed {
                    given.withLock { _ = $0.removeValue(forKey: p.key) }
                    try await backend.peerRemoved(p)
                }
                for p in added {
                    given.withLock { $0[p.key] = p }
                    try await backend.peerAdded(p)
                }
            }
        } catch {
            logger.error("backend could not apply a lease change; the next reconcile retries", metadata: ["error": "\(error)"])
            markDirty()
        }
    }

    /// Gives the backend the whole set (after a list, or a move to another subnet).
    func reset(_ peers: [PeerLease]) async throws {
        try await lock.withLock { () async throws in
            given.withLock { $0 = Dictionary(peers.map { ($0.key, $0) }, uniquingKeysWith: { _, b in b }) }
            try await backend.reconcile(peers: peers)
        }
    }

    /// Reconciles the backend with the peers it was last given (the kernel loop's repair).
    func reconcile() async throws {
        try await lock.withLock { () async throws in
            try await backend.reconcile(peers: given.withLock { Array($0.values) })
        }
    }

    func markDirty() { dirty.store(true, ordering: .relaxed) }

    /// Whether a reconcile was asked for since the last call.
    func takeDirty() -> Bool { dirty.exchange(false, ordering: .relaxed) }
}
