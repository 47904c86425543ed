import Synchronization

/// A mutual-exclusion lock for async code: one holder at a time across suspension points,
/// waiters served in arrival order. `Mutex` cannot be held across an `await`; this can.
///
/// Waiting is not cancellable: keep the sections short (one backend call), so that a
/// cancelled task waits at most for the holder to finish.
public final class AsyncLock: Sendable {
    private struct State {
        var held = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    public init() {}

    /// Runs `body` while holding the lock.
    public func withLock<T: Sendable, E: Error>(_ body: () async throws(E) -> T) async throws(E) -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        let free = state.withLock { s -> Bool in
            guard s.held else {
                s.held = true
                return true
            }
            return false
        }
        if free { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                // Released between the check above and here: take it at once.
                guard s.held else {
                    s.held = true
                    return true
                }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    private func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard !s.waiters.isEmpty else {
                s.held = false
                return nil
            }
            // Handed over: the lock stays held, now by the first waiter.
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}
