/// A failed system call: what was attempted and the errno it left.
///
/// `write /run/flannel/subnet.env.tmp-1234: No space left on device (ENOSPC)`
public struct SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was attempted, e.g. `TUNSETIFF twill0`.
    public var operation: String
    public var errno: Errno

    /// Captures the calling thread's current errno unless one is given.
    public init(_ operation: String, errno: Errno = .current) {
        self.operation = operation
        self.errno = errno
    }

    public init(_ operation: String, errno: Int32) {
        self.init(operation, errno: Errno(errno))
    }

    public var description: String { "\(operation): \(errno)" }
}
