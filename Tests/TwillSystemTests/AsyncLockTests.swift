import Synchronization
import Testing
import TwillSystem

@Suite struct AsyncLockTests {
    /// Sections that suspend in the middle never overlap, and every waiter gets its turn.
    @Test func sectionsDoNotOverlapAcrossSuspensions() async {
        let lock = AsyncLock()
        final class Counts: Sendable { let value = Mutex((now: 0, most: 0, done: 0)) }
        let counts = Counts()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    await lock.withLock {
                        counts.value.withLock {
                            $0.now += 1
                            $0.most = max($0.most, $0.now)
                        }
                        for _ in 0..<5 { await Task.yield() }
                        counts.value.withLock {
                            $0.now -= 1
                            $0.done += 1
                        }
                    }
                }
            }
        }
        let result = counts.value.withLock { $0 }
        #expect(result.most == 1)
        #expect(result.done == 64)
    }

    /// An error thrown inside releases the lock.
    @Test func throwingReleases() async {
        struct Failure: Error {}
        let lock = AsyncLock()
        await #expect(throws: Failure.self) {
            try await lock.withLock { () async throws(Failure) in throw Failure() }
        }
        let value = await lock.withLock { 7 }
        #expect(value == 7)
    }
}
