import Testing
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite struct SubprocessTests {
    @Test func collectsStdoutStderrAndStatus() throws {
        let r = try Subprocess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(String(decoding: r.standardOutput, as: UTF8.self) == "out\n")
        #expect(String(decoding: r.standardError, as: UTF8.self) == "err\n")
        #expect(r.status == 3)
        #expect(r.signal == nil)
        #expect(!r.succeeded)
        #expect(r.summary == "exit 3")
    }

    @Test func feedsLargeInputWhileDrainingBothPipes() throws {
        // 4 MiB through cat, which writes back as it reads: a reader that did one pipe at a
        // time would deadlock here. stderr gets as much from the second command.
        let input = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let r = try Subprocess.run("/bin/sh", ["-c", "tee /dev/stderr"], input: input)
        #expect(r.succeeded)
        #expect(r.standardOutput == input)
        #expect(r.standardError == input)
    }

    @Test func reportsSignalsAndMissingPrograms() throws {
        let r = try Subprocess.run("/bin/sh", ["-c", "kill -9 $$"])
        #expect(r.signal == SIGKILL)
        #expect(r.summary == "killed by signal 9")
        let e = #expect(throws: SystemError.self) { try Subprocess.run("/nonexistent/iptables", []) }
        #expect(e?.errno.rawValue == ENOENT)
        #expect(e?.description == "start /nonexistent/iptables: No such file or directory (ENOENT)")
    }

    @Test func givesAFixedEnvironmentAndACleanSignalMask() throws {
        // Block SIGTERM on this thread: the child must not inherit it.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        var old = sigset_t()
        pthread_sigmask(SIG_BLOCK, &set, &old)
        defer { pthread_sigmask(SIG_SETMASK, &old, nil) }
        let r = try Subprocess.run(
            "/bin/sh", ["-c", "grep SigBlk /proc/self/status; echo \"$ONLY\"; env | wc -l"],
            environment: ["ONLY": "this", "PATH": "/usr/bin:/bin"])
        let lines = String(decoding: r.standardOutput, as: UTF8.self).split(separator: "\n").map { String($0).trimmingWhitespace() }
        #expect(lines.first == "SigBlk:\t0000000000000000".trimmingWhitespace())
        #expect(lines.dropFirst().first == "this")
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
