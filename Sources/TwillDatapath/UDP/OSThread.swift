import CDatapath
#if canImport(Glibc)
import Glibc
#endif

/// A plain pthread running a closure: the engine's packet loops must not run on Swift's
/// cooperative pool (they block in poll and never yield).
struct OSThread: Sendable {
    let handle: pthread_t

    /// Starts `body` on a new thread named `name` (at most 15 characters are kept).
    static func spawn(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) -> OSThread {
        final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        let threadName = String(name.prefix(15))
        let context = Unmanaged.passRetained(Box({ twill_set_thread_name(threadName); body() })).toOpaque()
        var handle = pthread_t()
        let rc = pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(context).release()
            throw SystemError("pthread_create \(name)", errno: rc)
        }
        return OSThread(handle: handle)
    }

    /// Waits for the thread to finish.
    func join() {
        _ = pthread_join(handle, nil)
    }
}
