import Foundation
import Metrics
import Synchronization
import TwillDatapath
import TwillLease

/// What the agent has achieved so far, readable from any thread (health checks, metrics).
public final class AgentState: Sendable {
    struct Values {
        var lease: Lease?
        var ready = false
        var peers: [PeerLease] = []
        var kernelReconciles = 0
        var resyncs = 0
    }
    private let values = Mutex(Values())

    public init() {}

    /// True once subnet.env is written and the backend is up.
    public var isReady: Bool { values.withLock { $0.ready } }
    public var lease: Lease? { values.withLock { $0.lease } }
    public var peerCount: Int { values.withLock { $0.peers.count } }
    /// The other nodes' leases the backend was last given.
    public var peers: [PeerLease] { values.withLock { $0.peers } }
    /// Reconciles run because the kernel changed under the backend.
    public var kernelReconcileCount: Int { values.withLock { $0.kernelReconciles } }
    public var resyncCount: Int { values.withLock { $0.resyncs } }

    func setReady(_ lease: Lease, ttl: Int64) {
        values.withLock { $0.lease = lease; $0.ready = true }
        Gauge(label: "twill_ready").record(1)
        recordExpiry(lease, ttl: ttl)
    }
    func setLease(_ lease: Lease, ttl: Int64) {
        values.withLock { $0.lease = lease }
        recordExpiry(lease, ttl: ttl)
    }
    func setPeers(_ peers: [PeerLease]) {
        values.withLock { $0.peers = peers }
        Gauge(label: "twill_peers").record(peers.count)
    }
    func countKernelReconcile() {
        values.withLock { $0.kernelReconciles += 1 }
        Counter(label: "twill_kernel_reconciles_total").increment()
    }
    func countResync() {
        values.withLock { $0.resyncs += 1 }
        Counter(label: "twill_watch_resyncs_total").increment()
    }

    /// When the lease runs out unless renewed (Unix time); 0 for a reservation, which never does.
    private func recordExpiry(_ lease: Lease, ttl: Int64) {
        let expiry = lease.isReservation ? 0 : Date().timeIntervalSince1970 + Double(ttl)
        Gauge(label: "twill_lease_expiry_timestamp_seconds", dimensions: [("subnet", "\(lease.subnet.ipv4)")]).record(expiry)
    }
}
