import CTwillSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A plain joinable POSIX thread running a Swift closure: for work that must not run on
/// Swift's cooperative pool (packet loops that block in poll, a netlink monitor, setns).
public final class OSThread: Sendable {
    private let handle: pthread_t
    private let joined = Atomic<Bool>(false)

    private init(handle: pthread_t) { self.handle = handle }

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept, for ps/top).
    public static func spawn(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) -> OSThread {
        let threadName = String(decoding: name.utf8.prefix(15), as: UTF8.self)
        let context = Unmanaged.passRetained(Context(name: threadName, body: body)).toOpaque()
        var handle = pthread_t()
        let rc = pthread_create(
            &handle, nil,
            { raw in
                let context = Unmanaged<Context>.fromOpaque(raw!).takeRetainedValue()
                twill_set_thread_name(context.name)
                context.body()
                return nil
            }, context)
        guard rc == 0 else {
            Unmanaged<Context>.fromOpaque(context).release()
            throw SystemError("pthread_create \(name)", errno: rc)
        }
        return OSThread(handle: handle)
    }

    /// Waits for the thread to end; later calls return at once.
    public func join() {
        guard !joined.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = pthread_join(handle, nil)
    }

    private final class Context: Sendable {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
}
