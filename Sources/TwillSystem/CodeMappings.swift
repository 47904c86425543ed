#if canImport(Glibc)
import Glibc
#endif

/// Keeps the code of a long-running process from filling its RSS with pages it never runs.
///
/// A fault on a file-backed page maps its neighbours too ("fault-around", 64 KiB and more
/// with large folios), so a process whose code is spread over a 25 MB binary and its
/// libraries ends up with most of that mapped after start-up, though an idle agent runs a
/// small part of it. ``adviseRandomAccess()`` turns fault-around off for code mappings
/// (MADV_RANDOM); ``dropMappedPages()`` then unmaps what start-up touched (MADV_DONTNEED on
/// read-only, executable, file-backed mappings only: they hold nothing but the file's
/// contents, which the kernel maps back page by page when needed).
public enum CodeMappings {
    /// The file-backed executable mappings of this process: (start, length).
    static func executableMappings() -> [(UnsafeMutableRawPointer, Int)] {
        guard let text = try? Files.readText("/proc/self/maps") else { return [] }
        var out: [(UnsafeMutableRawPointer, Int)] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            // address perms offset dev inode path
            guard fields.count >= 6, fields[1] == "r-xp", fields[5].hasPrefix("/") else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16), end > start,
                let pointer = UnsafeMutableRawPointer(bitPattern: start)
            else { continue }
            out.append((pointer, Int(end - start)))
        }
        return out
    }

    /// Turns fault-around off for every code mapping.
    public static func adviseRandomAccess() {
        for (start, length) in executableMappings() { _ = madvise(start, length, MADV_RANDOM) }
    }

    /// Unmaps every page of the code mappings; they come back one by one as they run.
    public static func dropMappedPages() {
        for (start, length) in executableMappings() { _ = madvise(start, length, MADV_DONTNEED) }
    }
}
