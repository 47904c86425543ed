import CNetlink
#if canImport(Glibc)
import Glibc
#endif

/// Running code inside another network namespace without moving the process.
///
/// `setns(CLONE_NEWNET)` moves only the calling thread. ``run(inNamespace:_:)`` starts a
/// short-lived dedicated OS thread, moves that thread into the namespace, runs `body` there
/// and ends the thread, so no pooled thread is ever left in a foreign namespace. Sockets
/// (netlink, UDP) and TUN devices opened inside `body` stay bound to that namespace for
/// their whole life, whatever thread uses them later.
public enum NetworkNamespace {
    /// Runs `body` on a fresh thread that has joined the network namespace at `path`
    /// (e.g. `/run/netns/NAME`, or `/proc/PID/ns/net`), and returns its result.
    ///
    /// - Throws: ``NetlinkError`` when the namespace cannot be opened or joined; whatever
    ///   `body` throws.
    public static func run<T: Sendable>(inNamespace path: String, _ body: @Sendable () throws -> T) throws -> T {
        let box = ResultBox<T>()
        try withoutActuallyEscaping(body) { escapable in
            let work: @Sendable () -> Void = {
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    box.result = .failure(NetlinkError(object: "network namespace \(path)", errno: errno))
                    return
                }
                defer { close(fd) }
                guard twill_setns_net(fd) == 0 else {
                    box.result = .failure(NetlinkError(object: "joining network namespace \(path)", errno: errno))
                    return
                }
                box.result = Result { try escapable() }
            }
            let thread = try OSThread(name: "twill-netns", work)
            thread.join()
        }
        guard let r = box.result else {
            throw NetlinkError(object: "network namespace \(path)", errno: EINVAL, kernelMessage: "thread produced no result")
        }
        return try r.get()
    }
}

/// Written by one thread before it ends, read after `join`: the join orders the accesses.
private final class ResultBox<T: Sendable>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

/// A plain joinable POSIX thread running a Swift closure.
final class OSThread: @unchecked Sendable {  // `tid` is written once in init, read in join
    private var tid = pthread_t()
    private var joined = false

    init(name: String, _ body: @escaping @Sendable () -> Void) throws {
        let context = Unmanaged.passRetained(ThreadContext(name: name, body: body)).toOpaque()
        let rc = pthread_create(&tid, nil, { raw in
            let ctx = Unmanaged<ThreadContext>.fromOpaque(raw!).takeRetainedValue()
            twill_set_thread_name(ctx.name)
            ctx.body()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<ThreadContext>.fromOpaque(context).release()
            throw NetlinkError(object: "starting thread \(name)", errno: rc)
        }
    }

    /// Waits for the thread to end (once; later calls return at once).
    func join() {
        guard !joined else { return }
        joined = true
        pthread_join(tid, nil)
    }
}

private final class ThreadContext: Sendable {
    let name: String
    let body: @Sendable () -> Void
    init(name: String, body: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
    }
}
