import Foundation
import Logging
import Synchronization
import TwillEtcd
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// Errors of the test harness itself.
public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A real etcd (Debian's etcd-server) on free loopback ports, with a throwaway data
/// directory. Stop it with `stop()`; `withEtcd` does so even when the test fails.
public final class EtcdServer: @unchecked Sendable { // the Process is touched under `lock` only
    public let endpoint: String
    public let clientPort: Int
    public let dataDir: String
    /// The https endpoint's CA and client files, when started with TLS.
    public let tls: TLSFiles?
    private let process: Process
    private let lock = NSLock()
    private var stopped = false

    /// PEM files made by `TLSFiles.generate`.
    public struct TLSFiles: Sendable {
        public var dir: String
        public var caFile: String
        public var serverCert: String
        public var serverKey: String
        public var clientCert: String
        public var clientKey: String
        /// A CA that did not sign anything etcd uses.
        public var otherCAFile: String
    }

    private init(process: Process, endpoint: String, clientPort: Int, dataDir: String, tls: TLSFiles?) {
        self.process = process
        self.endpoint = endpoint
        self.clientPort = clientPort
        self.dataDir = dataDir
        self.tls = tls
    }

    /// Starts etcd and waits until it answers (at most 20 s).
    public static func start(tls: Bool = false, extraArguments: [String] = []) async throws -> EtcdServer {
        let dir = try makeTempDir(prefix: "twill-test-etcd-")
        let clientPort = try freePort()
        let peerPort = try freePort()
        var files: TLSFiles?
        var scheme = "http"
        if tls {
            files = try TLSFiles.generate(in: dir + "/pki")
            scheme = "https"
        }
        let client = "\(scheme)://127.0.0.1:\(clientPort)"
        let peer = "http://127.0.0.1:\(peerPort)"
        var args = [
            "--name", "twill-test", "--data-dir", dir + "/data",
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "twill-test=\(peer)", "--log-level", "error",
        ]
        if let f = files {
            args += ["--cert-file", f.serverCert, "--key-file", f.serverKey, "--trusted-ca-file", f.caFile, "--client-cert-auth"]
        }
        args += extraArguments
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/etcd")
        p.arguments = args
        _ = FileManager.default.createFile(atPath: dir + "/etcd.log", contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: dir + "/etcd.log") ?? FileHandle.nullDevice
        p.standardError = p.standardOutput
        try p.run()
        let server = EtcdServer(process: p, endpoint: client, clientPort: clientPort, dataDir: dir, tls: files)
        do {
            try await server.waitReady()
        } catch {
            server.stop()
            throw error
        }
        return server
    }

    /// A client for this server (with the TLS client files when it has TLS).
    public func client(
        username: String? = nil, password: String? = nil,
        endpoints: [String]? = nil, requestTimeout: Duration = .seconds(5)
    ) throws -> EtcdClient {
        try EtcdClient(
            EtcdConfiguration(
                endpoints: endpoints ?? [endpoint], username: username, password: password,
                caFile: tls?.caFile, certFile: tls?.clientCert, keyFile: tls?.clientKey,
                connectTimeout: .seconds(2), requestTimeout: requestTimeout))
    }

    private func waitReady() async throws {
        var quiet = Logger(label: "twill.test.etcd-ready")
        quiet.logLevel = .critical
        let c = try EtcdClient(
            EtcdConfiguration(
                endpoints: [endpoint], caFile: tls?.caFile, certFile: tls?.clientCert, keyFile: tls?.clientKey,
                connectTimeout: .seconds(1), requestTimeout: .seconds(2), logger: quiet))
        let deadline = ContinuousClock.now + .seconds(20)
        var last: any Error = HarnessError("etcd did not start")
        while ContinuousClock.now < deadline {
            if !process.isRunning {
                let log = (try? String(contentsOfFile: dataDir + "/etcd.log", encoding: .utf8)) ?? ""
                throw HarnessError("etcd exited during start-up: \(log.suffix(2000))")
            }
            do {
                _ = try await c.status()
                return
            } catch {
                last = error
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("etcd at \(endpoint) not ready after 20 s: \(last)")
    }

    /// Stops etcd (SIGKILL: tests want no graceful delay) and removes its data directory.
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dataDir)
    }

    /// Stops etcd but keeps the data directory (to test an etcd that went away).
    public func kill9() {
        lock.lock()
        defer { lock.unlock() }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }

    /// Runs `etcdctl` against this server (v3 API), returning its output; throws on failure.
    @discardableResult
    public func etcdctl(_ arguments: [String]) throws -> String {
        var args = ["--endpoints", endpoint]
        if let t = tls { args += ["--cacert", t.caFile, "--cert", t.clientCert, "--key", t.clientKey] }
        return try run("/usr/bin/etcdctl", args + arguments, environment: ["ETCDCTL_API": "3"])
    }
}

/// Runs `body` with a fresh etcd and stops it afterwards, even when `body` throws.
public func withEtcd<T>(tls: Bool = false, extraArguments: [String] = [], _ body: (EtcdServer) async throws -> T) async throws -> T {
    let server = try await EtcdServer.start(tls: tls, extraArguments: extraArguments)
    defer { server.stop() }
    return try await body(server)
}

/// A loopback TCP port nobody listens on now.
public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
            bind(fd, sp, len) == 0 && getsockname(fd, sp, &len) == 0
        }
    }
    guard ok else { throw HarnessError("bind: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A new directory under the temp dir whose name starts with `prefix`.
public func makeTempDir(prefix: String) throws -> String {
    // No doubled slash: paths are compared with /proc/mounts, which has none.
    let base = NSTemporaryDirectory().hasSuffix("/") ? NSTemporaryDirectory() : NSTemporaryDirectory() + "/"
    var template = Array((base + prefix + "XXXXXX").utf8CString)
    guard let p = mkdtemp(&template) else { throw HarnessError("mkdtemp: \(String(cString: strerror(errno)))") }
    return String(cString: p)
}

/// Runs a program to completion; throws with its output when it fails.
///
/// Through `Subprocess` (posix_spawn and waitpid), not Foundation's `Process`, whose
/// `waitUntilExit` was seen to hang on a child that had already exited.
@discardableResult
public func run(_ path: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil) throws -> String {
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    let outcome = try Subprocess.run(path, arguments, environment: env, input: input.map { Array($0.utf8) })
    // stdout then stderr: the callers search the text, they do not parse the interleaving.
    let text = String(decoding: outcome.standardOutput + outcome.standardError, as: UTF8.self)
    guard outcome.succeeded else {
        throw HarnessError("\(path) \(arguments.joined(separator: " ")) failed (\(outcome.summary)): \(text)")
    }
    return text
}

/// Runs a program to completion and returns its exit status, stdout and stderr, whatever
/// the status (for tests of how a command fails).
public func runCapturing(_ path: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (
    status: Int32, stdout: String, stderr: String
) {
    let outcome = try Subprocess.run(path, arguments, environment: environment)
    let status = outcome.signal.map { 128 + $0 } ?? outcome.status
    return (status, String(decoding: outcome.standardOutput, as: UTF8.self), String(decoding: outcome.standardError, as: UTF8.self))
}

extension EtcdServer.TLSFiles {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
    public static func generate(in dir: String) throws -> EtcdServer.TLSFiles {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ssl = "/usr/bin/openssl"
        func req(_ name: String, _ cn: String, _ ext: String) throws {
            try run(
                ssl,
                [
                    "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/\(name).key", "-out", "\(dir)/\(name).csr", "-subj",
                    "/CN=\(cn)",
                ])
            try ext.write(toFile: "\(dir)/\(name).ext", atomically: false, encoding: .utf8)
            try run(
                ssl,
                [
                    "x509", "-req", "-in", "\(dir)/\(name).csr", "-CA", "\(dir)/ca.crt", "-CAkey", "\(dir)/ca.key",
                    "-CAcreateserial", "-out", "\(dir)/\(name).crt", "-days", "2", "-extfile", "\(dir)/\(name).ext",
                ])
        }
        try run(
            ssl,
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/ca.key", "-out", "\(dir)/ca.crt", "-days", "2", "-subj",
                "/CN=twill-test-ca",
            ])
        try run(
            ssl,
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/other.key", "-out", "\(dir)/other.crt", "-days", "2",
                "-subj", "/CN=twill-other-ca",
            ])
        try req("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        try req("client", "root", "extendedKeyUsage=clientAuth\n")
        return .init(
            dir: dir, caFile: "\(dir)/ca.crt", serverCert: "\(dir)/server.crt", serverKey: "\(dir)/server.key",
            clientCert: "\(dir)/client.crt", clientKey: "\(dir)/client.key", otherCAFile: "\(dir)/other.crt")
    }
}

/// The `twill` executable built alongside the tests.
public func twillBinary() throws -> String {
    let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var candidates = [besideTests.appendingPathComponent("twill").path]
    // The test bundle may sit one level deeper (xctest bundles on some layouts).
    candidates.append(besideTests.deletingLastPathComponent().appendingPathComponent("twill").path)
    candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/twill")
    for c in candidates where FileManager.default.isExecutableFile(atPath: c) { return c }
    throw HarnessError("twill executable not found (looked in \(candidates.joined(separator: ", "))); run `swift build` first")
}

/// A process started for a test, killed (and reaped) when the test is done with it.
public final class ChildProcess: @unchecked Sendable {
    public let process: Process
    public let logPath: String
    private let lock = NSLock()

    /// Starts `path` with `arguments`; output goes to `logPath`.
    ///
    /// With `gate` (a FIFO's path), the program starts only once the FIFO is opened for
    /// writing (``openGate(_:)``): a restart can then be timed without the launcher's own start-up.
    public init(_ path: String, _ arguments: [String], environment: [String: String]? = nil, logPath: String, gate: String? = nil) throws {
        process = Process()
        // Test threads run with most signals blocked (dispatch's workers do), and a spawned
        // child inherits that mask, and its children after it: a dockerd started so hands it
        // to every container, where busybox's ping then dies. Start from an empty mask.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments =
            [
                "-c",
                "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); g = sys.argv[1]; g and os.close(os.open(g, os.O_RDONLY)); os.execv(sys.argv[2], sys.argv[2:])",
                gate ?? "", path,
            ] + arguments
        if let environment { process.environment = environment }
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        self.logPath = logPath
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Sends `signal` and waits (at most `timeout`) for the exit; SIGKILL after that.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, timeout: Duration = .seconds(10)) -> Int32 {
        lock.lock()
        defer { lock.unlock() }
        if process.isRunning {
            kill(process.processIdentifier, signal)
            let deadline = ContinuousClock.now + timeout
            while process.isRunning, ContinuousClock.now < deadline { usleep(1_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    deinit { stop(signal: SIGKILL) }

    /// Lets a program started with `gate` go on (see ``init(_:_:environment:logPath:gate:)``).
    public static func openGate(_ gate: String) {
        let fd = open(gate, O_WRONLY)
        if fd >= 0 { close(fd) }
    }
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return try await condition()
}
