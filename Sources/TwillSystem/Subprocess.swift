import CTwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// Runs a program to completion with posix_spawn, feeding it stdin and collecting its
/// stdout and stderr: for iptables, CNI delegate plugins and other helpers.
///
/// The child starts with an empty signal mask and default signal dispositions, whatever the
/// calling thread had blocked or ignored (dispatch worker threads block most signals, and a
/// child would otherwise pass that on to everything it starts). The call blocks: run it off
/// the cooperative pool (``Blocking/run(_:)``).
public enum Subprocess {
    /// How a finished program ended and what it wrote.
    public struct Outcome: Sendable, Equatable {
        /// The exit status (0-255); meaningless when ``signal`` is set.
        public var status: Int32
        /// The signal that killed it, if one did.
        public var signal: Int32?
        public var standardOutput: [UInt8]
        public var standardError: [UInt8]

        /// Exited with status 0.
        public var succeeded: Bool { signal == nil && status == 0 }
        /// `exit 3` or `killed by signal 9`.
        public var summary: String { signal.map { "killed by signal \($0)" } ?? "exit \(status)" }
    }

    /// posix_spawn attributes for a child that starts with an empty signal mask and default
    /// dispositions (see above), in a session of its own with `newSession`. Destroy them after use.
    static func spawnAttributes(newSession: Bool) -> posix_spawnattr_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (newSession ? 0x80 /* POSIX_SPAWN_SETSID */ : 0)))
        return attributes
    }

    // A child that exits before reading all of its stdin must not kill us with SIGPIPE.
    private static let ignoreBrokenPipes: Void = { _ = Glibc.signal(SIGPIPE, SIG_IGN) }()

    /// Runs `path` with `arguments` (not including argv[0], which is `path`).
    ///
    /// - Parameters:
    ///   - environment: the child's whole environment (`NAME=value` pairs); nil passes ours.
    ///   - input: bytes for its stdin; nil connects stdin to /dev/null.
    /// - Throws: ``SystemError`` when the program cannot be started (ENOENT for a missing
    ///   binary) or its pipes fail; a program that runs and fails is an ``Outcome``.
    public static func run(
        _ path: String, _ arguments: [String], environment: [String: String]? = nil,
        input: [UInt8]? = nil
    ) throws(SystemError) -> Outcome {
        _ = ignoreBrokenPipes
        var stdoutPipe: [Int32] = [-1, -1]
        var stderrPipe: [Int32] = [-1, -1]
        var stdinPipe: [Int32] = [-1, -1]
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        defer {
            for fd in parentEnds + childEnds { Syscall.close(fd) }
        }
        try Syscall.valueOrThrow("pipe") { twill_pipe_cloexec(&stdoutPipe) }
        parentEnds.append(stdoutPipe[0])
        childEnds.append(stdoutPipe[1])
        try Syscall.valueOrThrow("pipe") { twill_pipe_cloexec(&stderrPipe) }
        parentEnds.append(stderrPipe[0])
        childEnds.append(stderrPipe[1])
        if input != nil {
            try Syscall.valueOrThrow("pipe") { twill_pipe_cloexec(&stdinPipe) }
            childEnds.append(stdinPipe[0])
            parentEnds.append(stdinPipe[1])
        } else {
            stdinPipe[0] = try Syscall.open("/dev/null", O_RDONLY)
            childEnds.append(stdinPipe[0])
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)

        var attributes = spawnAttributes(newSession: false)
        defer { posix_spawnattr_destroy(&attributes) }

        var pid = pid_t()
        let argv = CStringArray([path] + arguments)
        let envp = environment.map { CStringArray($0.map { "\($0.key)=\($0.value)" }.sorted()) }
        let rc = argv.withPointers { args in
            if let envp {
                return envp.withPointers { env in posix_spawn(&pid, path, &actions, &attributes, args, env) }
            }
            return posix_spawn(&pid, path, &actions, &attributes, args, environ)
        }
        guard rc == 0 else { throw SystemError("start \(path)", errno: rc) }
        for fd in childEnds { Syscall.close(fd) }
        childEnds = []

        let (out, err) = pump(stdout: stdoutPipe[0], stderr: stderrPipe[0], stdin: input == nil ? -1 : stdinPipe[1], input: input ?? [])
        parentEnds = [] // pump closed them
        var status: Int32 = 0
        _ = Syscall.retryOnInterrupt { waitpid(pid, &status, 0) }
        let signal = status & 0x7f
        return Outcome(status: (status >> 8) & 0xff, signal: signal == 0 ? nil : signal, standardOutput: out, standardError: err)
    }

    /// Writes `input` to the child and drains its stdout and stderr at the same time (a child
    /// that fills one pipe while we wait on another would otherwise never finish); closes all
    /// three descriptors.
    private static func pump(stdout: Int32, stderr: Int32, stdin: Int32, input: [UInt8]) -> ([UInt8], [UInt8]) {
        var out: [UInt8] = []
        var err: [UInt8] = []
        var fds = [
            pollfd(fd: stdout, events: Int16(POLLIN), revents: 0),
            pollfd(fd: stderr, events: Int16(POLLIN), revents: 0),
            pollfd(fd: stdin, events: Int16(POLLOUT), revents: 0),
        ]
        var written = 0
        if stdin >= 0 {
            _ = fcntl(stdin, F_SETFL, fcntl(stdin, F_GETFL) | O_NONBLOCK)
            if input.isEmpty {
                Syscall.close(stdin)
                fds[2].fd = -1
            }
        }
        var buffer = [UInt8](repeating: 0, count: 16384)
        while fds[0].fd >= 0 || fds[1].fd >= 0 {
            for i in fds.indices { fds[i].revents = 0 }
            if Syscall.retryOnInterrupt({ poll(&fds, 3, -1) }) < 0 { break }
            if fds[2].fd >= 0, fds[2].revents != 0 {
                let n = input.withUnsafeBytes { p in Syscall.retryOnInterrupt { write(stdin, p.baseAddress! + written, p.count - written) }
                }
                if n > 0 { written += n }
                if n < 0 && Errno.current.rawValue != EAGAIN || written == input.count {
                    Syscall.close(stdin)
                    fds[2].fd = -1
                }
            }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { p in Syscall.retryOnInterrupt { read(fds[i].fd, p.baseAddress, p.count) } }
                if n > 0 {
                    if i == 0 { out.append(contentsOf: buffer[0..<n]) } else { err.append(contentsOf: buffer[0..<n]) }
                } else {
                    Syscall.close(fds[i].fd)
                    fds[i].fd = -1
                }
            }
        }
        for pfd in fds where pfd.fd >= 0 { Syscall.close(pfd.fd) }
        return (out, err)
    }
}

/// A NULL-terminated array of C strings that lives as long as this value.
final class CStringArray {
    private var pointers: [UnsafeMutablePointer<CChar>?]

    init(_ strings: [String]) {
        pointers = strings.map { strdup($0) } + [nil]
    }

    deinit { for p in pointers { free(p) } }

    func withPointers<R>(_ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
