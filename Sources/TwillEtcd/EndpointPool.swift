import Metrics
import Synchronization

/// What the client knows about one endpoint's health, for `twill status` and /metrics.
public struct EndpointHealth: Sendable, Equatable {
    public var endpoint: String
    /// Whether its last request succeeded (true until it has failed).
    public var healthy: Bool
    /// The endpoint the client tries first.
    public var preferred: Bool
    /// Failures in a row.
    public var consecutiveFailures: Int
    /// Why its last request failed, when it did.
    public var lastError: String?
}

/// The endpoints of one client and their health: the order to try them in.
///
/// The endpoint that answered last is tried first. An endpoint that failed goes behind every
/// endpoint that has not failed within ``EtcdConfiguration/endpointCooldown`` (so a member
/// that is up but hung, or cut off from the quorum, is not preferred again and again), and
/// failed ones are ordered by how long ago they failed, oldest first, so each gets its turn.
final class EndpointPool: Sendable {
    let endpoints: [String]
    private let cooldown: Duration
    private struct Entry {
        var lastFailure: ContinuousClock.Instant?
        var failures = 0
        var lastError: String?
    }
    private struct State {
        var entries: [Entry]
        var preferred = 0
    }
    private let state: Mutex<State>

    init(endpoints: [String], cooldown: Duration) {
        self.endpoints = endpoints
        self.cooldown = cooldown
        state = Mutex(State(entries: Array(repeating: Entry(), count: endpoints.count)))
    }

    /// Endpoint indices in the order to try them.
    func order(now: ContinuousClock.Instant = .now) -> [Int] {
        state.withLock { s in
            let count = endpoints.count
            let rotated = (0..<count).map { (s.preferred + $0) % count }
            func recentlyFailed(_ i: Int) -> Bool {
                guard let t = s.entries[i].lastFailure else { return false }
                return now - t < cooldown
            }
            let good = rotated.filter { !recentlyFailed($0) }
            let bad = rotated.filter(recentlyFailed).sorted { s.entries[$0].lastFailure! < s.entries[$1].lastFailure! }
            return good + bad
        }
    }

    func succeeded(_ index: Int) {
        let changed = state.withLock { s -> Bool in
            let wasFailing = s.entries[index].failures > 0
            s.entries[index] = Entry()
            s.preferred = index
            return wasFailing
        }
        if changed { Gauge(label: "twill_etcd_endpoint_healthy", dimensions: [("endpoint", endpoints[index])]).record(1) }
    }

    func failed(_ index: Int, reason: String, kind: String) {
        state.withLock { s in
            s.entries[index].lastFailure = .now
            s.entries[index].failures += 1
            s.entries[index].lastError = reason
        }
        Gauge(label: "twill_etcd_endpoint_healthy", dimensions: [("endpoint", endpoints[index])]).record(0)
        Counter(label: "twill_etcd_failovers_total", dimensions: [("endpoint", endpoints[index]), ("reason", kind)]).increment()
    }

    func health() -> [EndpointHealth] {
        state.withLock { s in
            endpoints.indices.map { i in
                EndpointHealth(
                    endpoint: endpoints[i], healthy: s.entries[i].failures == 0, preferred: i == s.preferred,
                    consecutiveFailures: s.entries[i].failures, lastError: s.entries[i].lastError)
            }
        }
    }
}
