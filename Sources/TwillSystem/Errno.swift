import CTwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// An errno value with its name and the C library's text, so that every failed system call
/// is reported the same way: `No space left on device (ENOSPC)`.
public struct Errno: Error, RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The positive errno value.
    public var rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ value: Int32) { self.rawValue = value }

    /// The calling thread's errno, as the last failed call left it.
    public static var current: Errno { Errno(twill_errno()) }

    /// The symbolic name, e.g. `ENOSPC` (`errno 4242` for a value the C library does not know).
    public var name: String {
        guard let name = twill_errno_name(rawValue) else { return "errno \(rawValue)" }
        return String(cString: name)
    }

    /// The C library's explanation, e.g. `No space left on device`.
    public var message: String { String(cString: strerror(rawValue)) }

    public var description: String { "\(message) (\(name))" }

    public static func == (lhs: Errno, rhs: Int32) -> Bool { lhs.rawValue == rhs }
}
