import Synchronization
import Testing
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite struct OSThreadTests {
    @Test func runsTheBodyOnANamedThreadAndJoinsOnce() throws {
        let seen = Mutex<String?>(nil)
        let t = try OSThread.spawn(name: "twill-test-a-very-long-name") {
            let fd = open("/proc/thread-self/comm", O_RDONLY)
            let bytes = (try? Syscall.readAll(fd, operation: "read comm")) ?? []
            Syscall.close(fd)
            seen.withLock { $0 = String(decoding: bytes, as: UTF8.self).trimmingWhitespace() }
        }
        t.join()
        t.join()
        #expect(seen.withLock { $0 } == "twill-test-a-ve")
    }
}
