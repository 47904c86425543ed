import Metrics
import Synchronization
import TwillDatapath
import TwillLease

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The one health model of the agent: what it holds and whether its loops make progress.
/// `/readyz`, `/healthz`, the systemd watchdog and the node status all read it, never their
/// own guesses.
///
/// - Ready: the node holds its lease (not past its expiry), subnet.env on disk matches it,
///   the backend is up, and no new network config is being applied.
/// - Alive: every long-running loop has reported progress within its deadline, and the data
///   path is not broken beyond self-repair. An unreachable etcd does not make the agent
///   unhealthy (restarting it would not help); it makes it unready once the lease runs out.
public final class AgentState: Sendable {
    /// The agent's long-running loops.
    public enum Loop: String, CaseIterable, Sendable {
        case watch, lease, kernel, iptables
    }

    struct Values {
        var lease: Lease?
        /// When the lease runs out unless renewed; nil for a reservation, which never does.
        var expiry: ContinuousClock.Instant?
        var backendType: String?
        var backendUp = false
        /// Set when repairs keep failing: the data path is broken beyond self-repair.
        var datapathFailure: String?
        /// Why subnet.env does not match the lease (nil when it does).
        var subnetEnvProblem: String? = "subnet.env not written yet"
        /// A new network config is being applied.
        var changingOver: String?
        var peers: [PeerLease] = []
        var heartbeats: [Loop: (last: ContinuousClock.Instant, deadline: Duration)] = [:]
        var stuck: [Loop: String] = [:]
        var etcdReachable = true
        var configProblem: String?
        var rejections: [LeaseRejection: Int] = [:]
        var kernelReconciles = 0
        var resyncs = 0
        var conflicts = 0
        var repairs = 0
    }
    private let values = Mutex(Values())

    public init() {}

    // MARK: Readers

    public var lease: Lease? { values.withLock { $0.lease } }
    public var peerCount: Int { values.withLock { $0.peers.count } }
    /// The other nodes' leases the backend was last given.
    public var peers: [PeerLease] { values.withLock { $0.peers } }
    /// Reconciles run because the kernel changed under the backend.
    public var kernelReconcileCount: Int { values.withLock { $0.kernelReconciles } }
    /// Full re-lists after a compaction or a restore.
    public var resyncCount: Int { values.withLock { $0.resyncs } }
    /// Times another node took this node's subnet.
    public var conflictCount: Int { values.withLock { $0.conflicts } }
    /// Data path repairs (a device recreated, packet threads restarted).
    public var repairCount: Int { values.withLock { $0.repairs } }
    /// Why the last network config change was refused, while it stands.
    public var configProblem: String? { values.withLock { $0.configProblem } }
    public var etcdReachable: Bool { values.withLock { $0.etcdReachable } }
    /// Whether the backend is up.
    public var backendUp: Bool { values.withLock { $0.backendUp } }
    /// Leases not used, by reason (only reasons with some).
    public var rejections: [LeaseRejection: Int] { values.withLock { $0.rejections.filter { $0.value > 0 } } }
    /// Time left on the lease; nil without one or for a reservation.
    public var leaseExpiresIn: Duration? { values.withLock { $0.expiry.map { $0 - .now } } }

    /// Ready, with the reasons when not.
    public var readiness: (ready: Bool, reasons: [String]) {
        values.withLock { v in
            var reasons: [String] = []
            if let lease = v.lease {
                if let expiry = v.expiry, expiry < .now {
                    reasons.append(
                        "the lease of \(lease.subnet.ipv4) has expired and could not be renewed (etcd reachable: \(v.etcdReachable))")
                }
            } else {
                reasons.append("no subnet lease yet")
            }
            if let p = v.subnetEnvProblem { reasons.append(p) }
            if let c = v.changingOver { reasons.append(c) }
            if !v.backendUp { reasons.append("the backend\(v.backendType.map { " (\($0))" } ?? "") is not up") }
            if let f = v.datapathFailure { reasons.append("data path: \(f)") }
            return (reasons.isEmpty, reasons)
        }
    }

    public var isReady: Bool { readiness.ready }

    /// Alive, with the reasons when not.
    public var liveness: (alive: Bool, reasons: [String]) {
        let now = ContinuousClock.now
        return values.withLock { v in
            var reasons: [String] = []
            for loop in Loop.allCases {
                guard let beat = v.heartbeats[loop] else { continue }
                let silent = now - beat.last
                if silent > beat.deadline {
                    reasons.append(
                        "the \(loop.rawValue) loop has made no progress for \(silent.roundedSeconds)s"
                            + (v.stuck[loop].map { ": \($0)" } ?? ""))
                }
            }
            if let f = v.datapathFailure { reasons.append("the data path is broken beyond self-repair: \(f)") }
            return (reasons.isEmpty, reasons)
        }
    }

    // MARK: Writers (the agent's)

    /// A loop says it is alive; it must do so again within `deadline`.
    func beat(_ loop: Loop, deadline: Duration) {
        values.withLock {
            $0.heartbeats[loop] = (.now, deadline)
            $0.stuck[loop] = nil
        }
    }

    /// A loop ended (its session is over): it is no longer watched.
    func retire(_ loop: Loop) { values.withLock { $0.heartbeats[loop] = nil } }

    /// What a loop is waiting on, shown if it misses its deadline.
    func waiting(_ loop: Loop, on what: String) { values.withLock { $0.stuck[loop] = what } }

    func setLease(_ lease: Lease?, expiry: ContinuousClock.Instant?, ttl: Int64) {
        values.withLock {
            $0.lease = lease
            $0.expiry = lease?.isReservation == true ? nil : expiry
        }
        guard let lease else { return }
        let unix =
            lease.isReservation
            ? 0 : Date().timeIntervalSince1970 + Double(max(0, (expiry.map { $0 - .now } ?? .seconds(ttl)).roundedSeconds))
        Gauge(label: "twill_lease_expiry_timestamp_seconds", dimensions: [("subnet", "\(lease.subnet.ipv4)")]).record(unix)
        publishReadiness()
    }

    func setBackend(type: String?, up: Bool) {
        values.withLock {
            $0.backendType = type
            $0.backendUp = up
        }
        publishReadiness()
    }

    func setDatapathFailure(_ reason: String?) {
        values.withLock { $0.datapathFailure = reason }
        Gauge(label: "twill_datapath_broken").record(reason == nil ? 0 : 1)
        publishReadiness()
    }

    func setSubnetEnvProblem(_ problem: String?) {
        let changed = values.withLock { v -> Bool in
            defer { v.subnetEnvProblem = problem }
            return v.subnetEnvProblem != problem
        }
        if changed { publishReadiness() }
    }

    func setChangingOver(_ reason: String?) {
        values.withLock { $0.changingOver = reason }
        publishReadiness()
    }

    func setPeers(_ peers: [PeerLease]) {
        values.withLock { $0.peers = peers }
        Gauge(label: "twill_peers").record(peers.count)
        // Peers whose lease is dual stack (an IPv6 subnet as well).
        Gauge(label: "twill_peers_ipv6").record(peers.filter { $0.subnet6 != nil }.count)
    }

    func setEtcdReachable(_ reachable: Bool) {
        values.withLock { $0.etcdReachable = reachable }
        Gauge(label: "twill_etcd_reachable").record(reachable ? 1 : 0)
    }

    func setConfigProblem(_ problem: String?) {
        values.withLock { $0.configProblem = problem }
        Gauge(label: "twill_config_valid").record(problem == nil ? 1 : 0)
        if problem != nil { Counter(label: "twill_config_errors_total").increment() }
    }

    func setRejections(_ counts: [LeaseRejection: Int]) {
        values.withLock { $0.rejections = counts }
        for (reason, n) in counts { Gauge(label: "twill_leases_ignored", dimensions: [("reason", reason.rawValue)]).record(n) }
    }

    func countKernelReconcile() {
        values.withLock { $0.kernelReconciles += 1 }
        Counter(label: "twill_kernel_reconciles_total").increment()
    }

    func countResync(_ reason: ClusterEvent.ResetReason) {
        values.withLock { $0.resyncs += 1 }
        Counter(label: "twill_watch_resyncs_total", dimensions: [("reason", reason.rawValue)]).increment()
    }

    func countConflict() {
        values.withLock { $0.conflicts += 1 }
        Counter(label: "twill_lease_conflicts_total").increment()
    }

    func countRepair(_ what: String) {
        values.withLock { $0.repairs += 1 }
        Counter(label: "twill_datapath_repairs_total", dimensions: [("what", what)]).increment()
    }

    private func publishReadiness() {
        Gauge(label: "twill_ready").record(isReady ? 1 : 0)
    }
}

extension Duration {
    /// Whole seconds, rounded down.
    var roundedSeconds: Int64 { components.seconds }
}
