import CTwillSystem

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
    /// The path `ip netns add NAME` makes for a named namespace.
    public static func path(named name: String) -> String { "/run/netns/\(name)" }

    /// Runs `body` on a fresh thread that has joined the network namespace at `path`
    /// (e.g. `/run/netns/NAME`, or `/proc/PID/ns/net`), and returns its result.
    ///
    /// - Throws: ``SystemError`` when the namespace cannot be opened or joined; whatever
    ///   `body` throws.
    public static func run<T: Sendable>(inNamespace path: String, _ body: @Sendable () throws -> T) throws -> T {
        let box = ResultBox<T>()
        try withoutActuallyEscaping(body) { escapable in
            let work: @Sendable () -> Void = {
                let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    box.result = .failure(SystemError("open network namespace \(path)"))
                    return
                }
                defer { Syscall.close(fd) }
                guard twill_setns_net(fd) == 0 else {
                    box.result = .failure(SystemError("join network namespace \(path)"))
                    return
                }
                box.result = Result { try escapable() }
            }
            try OSThread.spawn(name: "twill-netns", work).join()
        }
        guard let result = box.result else { throw SystemError("network namespace \(path): the thread produced no result", errno: EINVAL) }
        return try result.get()
    }
}

/// Written by one thread before it ends, read after `join`: the join orders the accesses.
private final class ResultBox<T: Sendable>: @unchecked Sendable {
    var result: Result<T, any Error>?
}
