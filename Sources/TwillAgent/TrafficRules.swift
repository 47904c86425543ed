import Logging
import Synchronization
import TwillSystem

/// The node's forward and masquerade rules (flannel's `--ip-masq` and
/// `--iptables-forward-rules`), kept by one firewall tool: ``IPTablesRules`` (iptables) or
/// ``NFTablesRules`` (nftables, the network config's `EnableNFTables`).
protocol TrafficRules: Sendable {
    /// "iptables" or "nftables", for logs and for telling the modes apart.
    var mode: String { get }
    /// Installs or repairs the rules off the cooperative pool; true when something changed.
    @discardableResult func ensureOffPool() async throws -> Bool
    /// Keeps the rules in place every `resync` until cancelled.
    func run(resync: Duration, firstPassNow: Bool, onPass: (@Sendable (String?) -> Void)?) async
    /// Removes the rules; never throws.
    func teardown()
    /// Whether `other` manages exactly the same rules with the same tool.
    func sameRules(as other: any TrafficRules) -> Bool
}

/// What one pass of a rules resync did.
enum RulesPass: Sendable {
    /// Not run: the loop was cancelled while the pass waited for its turn.
    case skipped
    /// In place; true when something had to be installed or repaired.
    case success(Bool)
    case failure(String)
}

/// The resync loop both modes share (flannel's `--iptables-resync`).
enum RulesResync {
    /// Runs `pass` every `period` until the task is cancelled. Periods under 100 ms are
    /// raised to 100 ms so a misconfiguration cannot spin the firewall tool. Failures are
    /// logged, not thrown: a passing problem (a held xtables lock) must not stop the agent;
    /// repeats of one failure are logged about once a minute, recovery once.
    static func run(
        what: String, period resync: Duration, firstPassNow: Bool, logger: Logger,
        onPass: (@Sendable (String?) -> Void)?, pass: @escaping @Sendable (CancelFlag) async -> RulesPass
    ) async {
        let cancelled = CancelFlag()
        let period = max(resync, .milliseconds(100))
        await withTaskCancellationHandler {
            var lastFailure: String?
            var repeats = 0
            var first = firstPassNow
            while !Task.isCancelled {
                if !first {
                    do { try await Task.sleep(for: period) } catch { return }
                }
                first = false
                let outcome = await pass(cancelled)
                switch outcome {
                case .skipped:
                    return
                case .success(let changed):
                    onPass?(nil)
                    if let last = lastFailure {
                        logger.info("\(what) in place again", metadata: ["failed_passes": "\(repeats + 1)", "last_error": "\(last)"])
                    } else if changed {
                        // The pass already logged what it repaired; say why it ran.
                        logger.debug("resync repaired \(what)", metadata: ["period": "\(period)"])
                    }
                    lastFailure = nil
                    repeats = 0
                case .failure(let message):
                    onPass?(message)
                    if message != lastFailure {
                        logger.error("cannot ensure \(what)", metadata: ["error": "\(message)"])
                        lastFailure = message
                        repeats = 0
                    } else {
                        repeats += 1
                        // About once a minute at flannel's default 5 s period.
                        if repeats % 12 == 0 {
                            logger.error(
                                "still cannot ensure \(what)", metadata: ["error": "\(message)", "failed_passes": "\(repeats + 1)"])
                        }
                    }
                }
            }
        } onCancel: {
            cancelled.set()
        }
    }
}

/// Runs a mode's passes and teardown one at a time, on a dispatch queue of its own so that
/// the firewall tool's blocking waits never occupy Swift's cooperative threads.
final class RulesWorker: Sendable {
    /// Serialises passes and teardown, which would otherwise interleave their reads and
    /// writes of the same rules.
    private let lock = Mutex(())
    private let lane: Blocking.Lane

    init(label: String) { lane = Blocking.Lane(label: label) }

    /// Runs `body` under the lock on the calling thread.
    func locked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        try lock.withLock { _ throws(E) -> T in try body() }
    }

    /// One pass on the queue, unless the loop was cancelled by the time the lock is taken
    /// (so that a teardown that follows the cancellation is never undone by a pass that was
    /// already waiting for the lock).
    func pass(unless cancelled: CancelFlag, _ body: @escaping @Sendable () throws -> Bool) async -> RulesPass {
        await lane.run { () -> RulesPass in
            self.lock.withLock { _ in
                if cancelled.isSet { return .skipped }
                do { return .success(try body()) } catch { return .failure("\(error)") }
            }
        }
    }
}

/// Set once by a cancellation handler, read by the queued pass.
final class CancelFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
}
