import TwillSystem

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
    public var errnoName: String { Errno(errno).name }

    public var description: String {
        var s = "\(object): \(Errno(errno))"
        if let m = kernelMessage, !m.isEmpty { s += ": kernel says \"\(m)\"" }
        return s
    }

    /// No such object (ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL): what a delete of something
    /// already gone reports.
    public var isNotFound: Bool { [ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL].contains(errno) }
    /// The object exists already (EEXIST).
    public var isExists: Bool { errno == EEXIST }
}
