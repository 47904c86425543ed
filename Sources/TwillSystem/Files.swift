#if canImport(Glibc)
import Glibc
#endif

/// Reading whole small files (subnet.env, CNI configs, /proc), with errors that name them.
public enum Files {
    /// The file's bytes; nil when it does not exist.
    public static func read(_ path: String) throws(SystemError) -> [UInt8]? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if Errno.current.rawValue == ENOENT { return nil }
            throw SystemError("open \(path)")
        }
        defer { Syscall.close(fd) }
        return try Syscall.readAll(fd, operation: "read \(path)")
    }

    /// The file as UTF-8 text; nil when it does not exist.
    public static func readText(_ path: String) throws(SystemError) -> String? {
        try read(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Whether `path` exists and this process may execute it.
    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

    /// Whether `path` exists.
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
}

extension StringProtocol {
    /// Without leading and trailing whitespace (spaces, tabs, newlines).
    public func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}

/// The process's standard streams, without Foundation's FileHandle.
public enum StandardIO {
    /// All of standard input.
    public static func readInput() -> [UInt8] { (try? Syscall.readAll(0, operation: "read stdin")) ?? [] }

    /// Writes `bytes` to standard output (1) or standard error (2); errors are ignored
    /// (there is nowhere left to report them).
    public static func write(_ bytes: [UInt8], to fd: Int32 = 1) {
        try? Syscall.writeAll(fd, bytes, operation: "write")
    }

    public static func write(_ text: String, to fd: Int32 = 1) { write(Array(text.utf8), to: fd) }
}

/// What `stat` says identifies a file's current contents: the same device, inode, size and
/// modification time means it was not replaced or written since.
public struct FileIdentity: Sendable, Equatable {
    public var device: UInt64
    public var inode: UInt64
    public var size: Int64
    public var modified: Int64
    public var modifiedNanoseconds: Int64

    /// nil when `path` does not exist (or cannot be stat'ed).
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        modified = Int64(st.st_mtim.tv_sec)
        modifiedNanoseconds = Int64(st.st_mtim.tv_nsec)
    }
}
