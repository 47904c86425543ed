import Testing
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ErrnoTests {
    @Test func namesAndMessagesComeFromTheCLibrary() {
        #expect(Errno(ENOSPC).name == "ENOSPC")
        #expect(Errno(ENOSPC).description == "No space left on device (ENOSPC)")
        #expect(Errno(EADDRNOTAVAIL).name == "EADDRNOTAVAIL")
        #expect(Errno(4242).name == "errno 4242")
    }

    @Test func systemErrorNamesTheOperation() {
        let e = SystemError("write /run/x.tmp", errno: ENOSPC)
        #expect(e.description == "write /run/x.tmp: No space left on device (ENOSPC)")
        #expect(e.errno == ENOSPC)
    }

    @Test func valueOrThrowCapturesErrno() {
        let e = #expect(throws: SystemError.self) {
            try Syscall.valueOrThrow("open /nonexistent/twill") { Glibc.open("/nonexistent/twill", O_RDONLY) }
        }
        #expect(e?.errno.rawValue == ENOENT)
        #expect(e?.description == "open /nonexistent/twill: No such file or directory (ENOENT)")
    }
}
