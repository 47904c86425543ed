#if canImport(Glibc)
import Glibc
#endif

/// The one place system calls are retried on EINTR and turned into typed errors.
///
/// Callers on the packet path use ``retryOnInterrupt(_:)`` directly (no allocation, no
/// throw); control-plane code uses ``valueOrThrow(_:_:)``.
public enum Syscall {
    /// Calls `body` again while it fails with EINTR; returns its last result (-1 with errno
    /// set on any other failure).
    @inline(__always)
    public static func retryOnInterrupt<T: FixedWidthInteger & SignedInteger>(_ body: () -> T) -> T {
        while true {
            let result = body()
            if result >= 0 || Errno.current.rawValue != EINTR { return result }
        }
    }

    /// ``retryOnInterrupt(_:)``, throwing ``SystemError`` naming `operation` on failure.
    @inline(__always)
    @discardableResult
    public static func valueOrThrow<T: FixedWidthInteger & SignedInteger>(
        _ operation: @autoclosure () -> String, _ body: () -> T
    ) throws(SystemError) -> T {
        let result = retryOnInterrupt(body)
        if result < 0 { throw SystemError(operation()) }
        return result
    }

    /// Makes a descriptor taken over from elsewhere (an earlier run, systemd) behave as the
    /// ones this process opens: non-blocking and closed on exec.
    public static func makeNonBlockingCloseOnExec(_ fd: Int32) {
        let status = fcntl(fd, F_GETFL)
        if status >= 0, status & O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, status | O_NONBLOCK) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// Writes all of `bytes` to `fd`, resuming after short writes and EINTR.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, operation: @autoclosure () -> String) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let n = retryOnInterrupt { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
            if n < 0 { throw SystemError(operation()) }
            if n == 0 { throw SystemError(operation(), errno: EIO) }
            offset += n
        }
    }

    /// Writes all of `bytes` to `fd` (see ``writeAll(_:_:operation:)``).
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], operation: @autoclosure () -> String) throws(SystemError) {
        let result: Result<Void, SystemError> = bytes.withUnsafeBytes { p in
            Result { () throws(SystemError) in try writeAll(fd, p, operation: operation()) }
        }
        try result.get()
    }

    /// Reads `fd` to its end.
    public static func readAll(_ fd: Int32, operation: @autoclosure () -> String) throws(SystemError) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { p in retryOnInterrupt { Glibc.read(fd, p.baseAddress, p.count) } }
            if n < 0 { throw SystemError(operation()) }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
        }
    }

    /// Closes `fd`, ignoring errors (close must not be retried on Linux, even after EINTR).
    @inline(__always)
    public static func close(_ fd: Int32) {
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    /// Opens `path`; throws naming the path.
    public static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) throws(SystemError) -> Int32 {
        try valueOrThrow("open \(path)") { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    /// Writes `value` to a /proc/sys file (e.g. `net/ipv4/conf/twill0/accept_local`).
    public static func setSysctl(_ path: String, _ value: String) throws(SystemError) {
        let fd = try open("/proc/sys/" + path, O_WRONLY)
        defer { close(fd) }
        try writeAll(fd, Array(value.utf8), operation: "write /proc/sys/\(path)")
    }
}
