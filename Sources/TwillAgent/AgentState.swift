import Synchronization
import TwillLease

/// What the agent has achieved so far, readable from any thread (health checks, metrics).
public final class AgentState: Sendable {
    struct Values {
        var lease: Lease?
        var ready = false
        var peers = 0
        var resyncs = 0
    }
    private let values = Mutex(Values())

    public init() {}

    /// True once subnet.env is written and the backend is up.
    public var isReady: Bool { values.withLock { $0.ready } }
    public var lease: Lease? { values.withLock { $0.lease } }
    public var peerCount: Int { values.withLock { $0.peers } }
    public var resyncCount: Int { values.withLock { $0.resyncs } }

    func setReady(_ lease: Lease) { values.withLock { $0.lease = lease; $0.ready = true } }
    func setLease(_ lease: Lease) { values.withLock { $0.lease = lease } }
    func setPeers(_ n: Int) { values.withLock { $0.peers = n } }
    func countResync() { values.withLock { $0.resyncs += 1 } }
}
