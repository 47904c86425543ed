import Testing
import TwillSystem
import TwillTestSupport

#if canImport(Glibc)
import Glibc
#endif

@Suite struct AtomicFileTests {
    static func read(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var out: [UInt8] = []
        var c = fgetc(f)
        while c != EOF {
            out.append(UInt8(c))
            c = fgetc(f)
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func entries(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    @Test func writesReplacesAndSetsTheMode() throws {
        let dir = try makeTempDir(prefix: "twill-test-atomic-")
        defer { _ = try? run("/bin/rm", ["-rf", dir]) }
        let path = dir + "/a/b/subnet.env"
        try AtomicFile.write(Array("one\n".utf8), to: path, mode: 0o600)
        #expect(Self.read(path) == "one\n")
        try AtomicFile.write(Array("two\n".utf8), to: path, mode: 0o644)
        #expect(Self.read(path) == "two\n")
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o644)
        var dst = stat()
        #expect(stat(dir + "/a/b", &dst) == 0)
        #expect(dst.st_mode & 0o777 == 0o755)
        // Nothing but the file is left in the directory.
        #expect(Self.entries(dir + "/a/b") == ["subnet.env"])
    }

    @Test func aFailedWriteLeavesTheOldFileAndNoTemporary() throws {
        let dir = try makeTempDir(prefix: "twill-test-atomic-")
        defer { _ = try? run("/bin/rm", ["-rf", dir]) }
        let path = dir + "/f"
        try AtomicFile.write(Array("old".utf8), to: path)
        // A directory where the file should go cannot be replaced by a rename.
        try AtomicFile.makeDirectories(dir + "/d", mode: 0o755)
        let e = #expect(throws: SystemError.self) { try AtomicFile.write(Array("x".utf8), to: dir + "/d") }
        #expect(e?.errno.rawValue == EISDIR)
        #expect(e?.description.contains("rename") == true)
        #expect(Self.read(path) == "old")
        #expect(Self.entries(dir) == ["d", "f"])
        // A parent that is a file.
        let p = #expect(throws: SystemError.self) { try AtomicFile.write(Array("x".utf8), to: path + "/g") }
        #expect(p?.errno.rawValue == ENOTDIR)
    }
}
