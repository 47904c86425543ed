import CDatapath
#if canImport(Glibc)
import Glibc
#endif

/// Runs a closure inside a named network namespace (`/run/netns/NAME`, as `ip netns add`
/// makes it) on a fresh OS thread, and returns its result.
///
/// setns(2) changes the namespace of the calling thread only, so a throwaway thread keeps
/// every other thread where it was. Sockets and TUN devices created in the closure belong to
/// that namespace for good, whichever thread uses them afterwards.
/// (TwillNetlink grows a public equivalent; this one keeps the udp engine self-contained.)
public enum NamespaceThread {
    /// Runs `body` in the namespace `name` and returns its result or rethrows its error.
    public static func run<T: Sendable>(
        inNamespace name: String, _ body: @escaping @Sendable () throws -> T
    ) throws -> T {
        let outcome = NamespaceOutcome<T>()
        let path = "/run/netns/\(name)"
        let thread = try OSThread.spawn(name: "twill-netns") {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                outcome.value = .failure(SystemError("open \(path)"))
                return
            }
            defer { close(fd) }
            guard twill_setns_net(fd) == 0 else {
                outcome.value = .failure(SystemError("setns \(path)"))
                return
            }
            outcome.value = Result { try body() }
        }
        thread.join()
        return try outcome.value.get()
    }
}

/// The result slot of a namespace thread: written by that thread, read after it is joined.
private final class NamespaceOutcome<T>: @unchecked Sendable {
    var value: Result<T, any Error> = .failure(SystemError("namespace thread did not run", errno: 0))
}
