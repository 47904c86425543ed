#if canImport(Glibc)
import Glibc
#endif

/// A failed netlink call, said so an operator can act: the object it was about, the errno
/// text and name, and the kernel's own explanation when it gave one (extended ack).
///
/// Example: `route 198.18.1.0/24 via 203.0.113.2 dev eth9: No such device (ENODEV)`.
public struct NetlinkError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What the call was about, e.g. `route 198.18.1.0/24 via 203.0.113.2 dev eth0` or `link "flannel.1"`.
    public var object: String
    /// The positive errno value.
    public var errno: Int32
    /// The kernel's extended-ack message, when it sent one.
    public var kernelMessage: String?

    public init(object: String, errno: Int32, kernelMessage: String? = nil) {
        self.object = object
        self.errno = errno
        self.kernelMessage = kernelMessage
    }

    /// The errno's symbolic name, e.g. `ENODEV`.
    public var errnoName: String { errnoNames[errno] ?? "errno \(errno)" }

    public var description: String {
        let text = String(cString: strerror(errno))
        var s = "\(object): \(text) (\(errnoName))"
        if let m = kernelMessage, !m.isEmpty { s += ": kernel says \"\(m)\"" }
        return s
    }

    /// No such object (ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL): what a delete of something
    /// already gone reports.
    public var isNotFound: Bool { [ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL].contains(errno) }
    /// The object exists already (EEXIST).
    public var isExists: Bool { errno == EEXIST }
}

private let errnoNames: [Int32: String] = [
    EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO",
    ENXIO: "ENXIO", E2BIG: "E2BIG", EBADF: "EBADF", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM",
    EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", ENODEV: "ENODEV",
    ENOTDIR: "ENOTDIR", EINVAL: "EINVAL", ENFILE: "ENFILE", EMFILE: "EMFILE", ENOSPC: "ENOSPC",
    ERANGE: "ERANGE", EOPNOTSUPP: "EOPNOTSUPP", EAFNOSUPPORT: "EAFNOSUPPORT",
    EADDRINUSE: "EADDRINUSE", EADDRNOTAVAIL: "EADDRNOTAVAIL", ENETDOWN: "ENETDOWN",
    ENETUNREACH: "ENETUNREACH", ENOBUFS: "ENOBUFS", ETIMEDOUT: "ETIMEDOUT",
    ECONNREFUSED: "ECONNREFUSED", EHOSTUNREACH: "EHOSTUNREACH", EPROTONOSUPPORT: "EPROTONOSUPPORT",
    EMSGSIZE: "EMSGSIZE", ENOTCONN: "ENOTCONN", ENOSYS: "ENOSYS",
    ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP", ENAMETOOLONG: "ENAMETOOLONG", EPROTO: "EPROTO",
    EBADMSG: "EBADMSG", EOVERFLOW: "EOVERFLOW",
]
