import CTwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// An anonymous file in memory (memfd): state handed to the next run of the agent through a
/// ``DescriptorKeeper`` (its descriptor kept, never a path on disk).
///
/// Such state is read at most once: ``consume(_:)`` clears the file before it returns the
/// bytes, and every descriptor of it (systemd's copy too) sees the cleared file, so a copy
/// that outlives its use can never be read twice.
public enum MemoryFile {
    /// A new file named `name` (for /proc) holding `bytes`; the caller owns the descriptor.
    public static func create(name: String, bytes: [UInt8]) throws(SystemError) -> Int32 {
        let fd = twill_memfd(name)
        guard fd >= 0 else { throw SystemError("memfd_create \(name)") }
        do {
            try Syscall.writeAll(fd, bytes, operation: "write \(name)")
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// The file's bytes, after which it is emptied (for every holder of it); nil when it is
    /// empty already (consumed before) or cannot be read. Closes `fd`.
    public static func consume(_ fd: Int32) -> [UInt8]? {
        defer { Glibc.close(fd) }
        guard lseek(fd, 0, SEEK_SET) == 0, let bytes = try? Syscall.readAll(fd, operation: "read"), !bytes.isEmpty else { return nil }
        // Emptied before use: if it cannot be, it is not used at all.
        guard ftruncate(fd, 0) == 0 else { return nil }
        return bytes
    }
}
