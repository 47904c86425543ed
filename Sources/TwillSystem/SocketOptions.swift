import CTwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// Socket set-up with typed errors: opening a socket, setting and reading integer options,
/// binding. The packet path sends and receives through ``Syscall/retryOnInterrupt(_:)``;
/// this is for the calls made once, when a socket is made or taken over.
public enum Socket {
    /// A non-blocking, close-on-exec socket of `family` (`AF_INET`, `AF_INET6`) and `type`.
    public static func open(family: Int32, type: Int32) throws(SystemError) -> Int32 {
        try Syscall.valueOrThrow("socket") {
            socket(family, type | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
    }

    /// Sets an integer option; throws naming `what` (e.g. `SO_REUSEPORT`).
    public static func setOption(_ fd: Int32, level: Int32, name: Int32, value: Int32, what: @autoclosure () -> String)
        throws(SystemError)
    {
        var v = value
        try Syscall.valueOrThrow(what()) { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// Sets an integer option the kernel may refuse without harm (a privileged variant with
    /// an unprivileged fallback, say); false when refused.
    @discardableResult
    public static func trySetOption(_ fd: Int32, level: Int32, name: Int32, value: Int32) -> Bool {
        var v = value
        return setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) == 0
    }

    /// An integer option's value.
    public static func option(_ fd: Int32, level: Int32, name: Int32, what: @autoclosure () -> String) throws(SystemError) -> Int32 {
        var v: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        try Syscall.valueOrThrow(what()) { getsockopt(fd, level, name, &v, &length) }
        return v
    }

    /// Binds `fd` to the address in `address` (a `sockaddr_in` or `sockaddr_in6`).
    public static func bind<Address>(_ fd: Int32, _ address: Address, what: @autoclosure () -> String) throws(SystemError) {
        var a = address
        try Syscall.valueOrThrow(what()) {
            withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<Address>.size)) }
            }
        }
    }
}
