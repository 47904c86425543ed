#if canImport(Glibc)
import Glibc
#endif

/// Files that readers see whole or not at all: subnet.env, CNI's saved configs, docker-opts.
///
/// ``write(_:to:mode:directoryMode:)`` writes a temporary file of a unique name in the same
/// directory, fsyncs it, renames it over the target and fsyncs the directory. A reader sees
/// the old file or the new one, never half of one; a crash or a full disk leaves the old file
/// intact (and no temporary file behind).
public enum AtomicFile {
    /// Replaces `path` with `bytes`.
    ///
    /// - Parameters:
    ///   - mode: permissions of the new file (applied with fchmod, whatever the umask).
    ///   - directoryMode: when set, missing parent directories are created with it.
    /// - Throws: ``SystemError`` naming the step and the file (ENOSPC on a full disk).
    public static func write(
        _ bytes: some Collection<UInt8>, to path: String, mode: mode_t = 0o644,
        directoryMode: mode_t? = 0o755
    ) throws(SystemError) {
        let directory = parent(of: path)
        if let directoryMode { try makeDirectories(directory, mode: directoryMode) }
        let (fd, temporary) = try createTemporary(near: path, mode: mode)
        // Closed exactly once: a second close after a failed rename would close whatever
        // another thread opened under the same number meanwhile (a TUN queue, a socket).
        var open = true
        do throws(SystemError) {
            try Syscall.writeAll(fd, Array(bytes), operation: "write \(temporary)")
            try Syscall.valueOrThrow("fchmod \(temporary)") { fchmod(fd, mode) }
            try Syscall.valueOrThrow("fsync \(temporary)") { fsync(fd) }
            Syscall.close(fd)
            open = false
            try Syscall.valueOrThrow("rename \(temporary) to \(path)") { rename(temporary, path) }
        } catch {
            if open { Syscall.close(fd) }
            unlink(temporary)
            throw error
        }
        // Make the rename itself durable; a failure here loses nothing already visible.
        let dfd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            Syscall.close(dfd)
        }
    }

    /// The directory part of `path` ("." when it has none).
    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }

    /// `mkdir -p` with `mode` for the directories it creates.
    public static func makeDirectories(_ path: String, mode: mode_t) throws(SystemError) {
        var st = stat()
        if stat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else { throw SystemError("mkdir \(path)", errno: ENOTDIR) }
            return
        }
        let up = parent(of: path)
        if up != path, up != "." { try makeDirectories(up, mode: mode) }
        if mkdir(path, mode) != 0, Errno.current.rawValue != EEXIST { throw SystemError("mkdir \(path)") }
    }

    /// A new file `<path>.tmp-<pid>-<random>` opened exclusively, so that two writers (two
    /// CNI ADDs at once, say) never share a temporary file.
    private static func createTemporary(near path: String, mode: mode_t) throws(SystemError) -> (Int32, String) {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<16 {
            let name = "\(path).tmp-\(getpid())-\(String(generator.next() & 0xffff_ffff, radix: 16))"
            let fd = Glibc.open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
            if fd >= 0 { return (fd, name) }
            if Errno.current.rawValue != EEXIST { throw SystemError("create \(name)") }
        }
        throw SystemError("create a temporary file beside \(path)", errno: EEXIST)
    }
}
