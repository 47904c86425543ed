import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real multi-member etcd cluster for failover tests: members on free loopback ports, or
/// each in a network namespace of its own (so that one can be cut off from the others with
/// iptables while its clients still reach it). Members can be frozen (SIGSTOP, as a stalled
/// disk freezes one), thawed, killed, restarted and restored from a snapshot.
///
/// ``stop()`` (or `withEtcdCluster`) kills every member and removes every data directory,
/// even when the test failed.
public final class EtcdCluster: @unchecked Sendable { // mutable state under `lock`
    public struct Member: Sendable {
        public let name: String
        /// `http://host:port`.
        public let clientURL: String
        public let peerURL: String
        /// Where the member runs (nil: the test's own namespace).
        public let namespace: TestNamespace?
    }

    /// Where the members go.
    public enum Placement: Sendable {
        /// Free ports on 127.0.0.1 in the test's namespace.
        case loopback
        /// Member i in `namespaces[i]`, listening on `addresses[i]` (client 2379, peer 2380).
        case namespaces([TestNamespace], addresses: [String])
    }

    public let members: [Member]
    public let dir: String
    public let token: String
    private var processes: [ChildProcess?]
    /// Data directory per member (a restore moves them).
    private var dataDirs: [String]
    private var frozen: Set<Int> = []
    private var partitioned: Set<Int> = []
    private let lock = NSLock()
    private let extraArguments: [String]

    /// Every client URL, in member order.
    public var endpoints: [String] { members.map(\.clientURL) }

    private init(members: [Member], dir: String, token: String, extraArguments: [String]) {
        self.members = members
        self.dir = dir
        self.token = token
        self.extraArguments = extraArguments
        processes = Array(repeating: nil, count: members.count)
        dataDirs = members.map { "\(dir)/\($0.name)" }
    }

    /// Starts `size` members and waits (at most 30 s) until every one is healthy.
    public static func start(size: Int = 3, placement: Placement = .loopback, extraArguments: [String] = []) async throws -> EtcdCluster {
        precondition(size >= 1 && size <= 7)
        let dir = try makeTempDir(prefix: "twill-test-etcd-cluster-")
        let token = "twill-test-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        var members: [Member] = []
        for i in 0..<size {
            switch placement {
            case .loopback:
                members.append(
                    Member(
                        name: "m\(i + 1)", clientURL: "http://127.0.0.1:\(try freePort())",
                        peerURL: "http://127.0.0.1:\(try freePort())", namespace: nil))
            case .namespaces(let namespaces, let addresses):
                members.append(
                    Member(
                        name: "m\(i + 1)", clientURL: "http://\(addresses[i]):2379",
                        peerURL: "http://\(addresses[i]):2380", namespace: namespaces[i]))
            }
        }
        let cluster = EtcdCluster(members: members, dir: dir, token: token, extraArguments: extraArguments)
        do {
            for i in 0..<size { try cluster.launch(i, state: "new") }
            try await cluster.waitHealthy()
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }

    private var initialCluster: String { members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",") }

    private func launch(_ i: Int, state: String) throws {
        let m = members[i]
        let args =
            [
                "--name", m.name, "--data-dir", dataDirs[i],
                "--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
                "--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
                "--initial-cluster", initialCluster, "--initial-cluster-token", token,
                "--initial-cluster-state", state, "--log-level", "error",
                // Short raft timers keep elections quick on a loaded 2-core machine.
                "--heartbeat-interval", "100", "--election-timeout", "1000",
            ] + extraArguments
        let log = "\(dir)/\(m.name).\(Int.random(in: 0..<1_000_000)).log"
        let p: ChildProcess
        if let ns = m.namespace {
            p = try ChildProcess("/usr/sbin/ip", ["netns", "exec", ns.name, "/usr/bin/etcd"] + args, logPath: log)
        } else {
            p = try ChildProcess("/usr/bin/etcd", args, logPath: log)
        }
        lock.lock()
        processes[i] = p
        frozen.remove(i)
        lock.unlock()
    }

    /// The members running, not frozen and not cut off.
    public var liveMembers: [Int] {
        lock.withLock { members.indices.filter { processes[$0] != nil && !frozen.contains($0) && !partitioned.contains($0) } }
    }

    /// `etcdctl` (v3) against `endpoints` (default: the live members), run where a live member
    /// runs (or member 0).
    @discardableResult
    public func etcdctl(_ arguments: [String], endpoints: [String]? = nil) throws -> String {
        let live = liveMembers
        let targets = endpoints ?? live.map { members[$0].clientURL }
        let args = ["--endpoints", targets.joined(separator: ","), "--command-timeout", "5s"] + arguments
        if let ns = members[live.first ?? 0].namespace {
            return try run("/usr/sbin/ip", ["netns", "exec", ns.name, "/usr/bin/etcdctl"] + args, environment: ["ETCDCTL_API": "3"])
        }
        return try run("/usr/bin/etcdctl", args, environment: ["ETCDCTL_API": "3"])
    }

    /// Waits until every running, unfrozen member reports healthy (at most `timeout`).
    public func waitHealthy(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            let live = liveMembers
            for i in live where lock.withLock({ processes[i]?.isRunning == false }) {
                let log = lock.withLock { processes[i]?.log.suffix(2000) ?? "" }
                throw HarnessError("etcd member \(members[i].name) exited: \(log)")
            }
            do {
                try etcdctl(["endpoint", "health"], endpoints: live.map { members[$0].clientURL })
                return
            } catch {
                last = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw HarnessError("etcd cluster not healthy after \(timeout): \(last)")
    }

    /// The index of the member that is leader now, if one is.
    public func leader() throws -> Int? {
        let out = try etcdctl(["endpoint", "status", "-w", "json"], endpoints: liveMembers.map { members[$0].clientURL })
        guard let data = out.data(using: .utf8),
            let list = try JSONSerialization.jsonObject(with: data) as? [[String: Any]]
        else { return nil }
        for entry in list {
            guard let status = entry["Status"] as? [String: Any], let header = status["header"] as? [String: Any],
                let member = header["member_id"] as? NSNumber, let leader = status["leader"] as? NSNumber,
                member == leader, let endpoint = entry["Endpoint"] as? String
            else { continue }
            return members.firstIndex { $0.clientURL == endpoint }
        }
        return nil
    }

    /// SIGSTOP: the member keeps its sockets (connections are accepted by the kernel) but
    /// answers nothing, like a member whose disk has stalled.
    public func freeze(_ i: Int) {
        lock.withLock {
            guard let p = processes[i], p.isRunning else { return }
            kill(p.pid, SIGSTOP)
            frozen.insert(i)
        }
    }

    public func thaw(_ i: Int) {
        lock.withLock {
            guard let p = processes[i] else { return }
            kill(p.pid, SIGCONT)
            frozen.remove(i)
        }
    }

    /// SIGKILL; the data directory stays for ``restart(_:)``.
    public func kill9(_ i: Int) {
        let p = lock.withLock { () -> ChildProcess? in
            defer {
                processes[i] = nil
                frozen.remove(i)
            }
            return processes[i]
        }
        p?.stop(signal: SIGKILL)
    }

    /// Starts a killed member again on its data directory.
    public func restart(_ i: Int) throws {
        try launch(i, state: "existing")
    }

    /// Cuts member i off from the other members (peer traffic dropped both ways, in its own
    /// namespace) while its clients still reach it: up, but without the quorum.
    public func partition(_ i: Int) throws {
        guard let ns = members[i].namespace else { throw HarnessError("partition needs members in namespaces") }
        for chain in ["INPUT", "OUTPUT"] {
            for dir in ["--dport", "--sport"] {
                try ns.exec("/usr/sbin/iptables", ["-w", "-A", chain, "-p", "tcp", dir, "2380", "-j", "DROP"])
            }
        }
        lock.withLock { _ = partitioned.insert(i) }
    }

    /// Undoes ``partition(_:)``.
    public func heal(_ i: Int) throws {
        guard let ns = members[i].namespace else { return }
        try ns.exec("/usr/sbin/iptables", ["-w", "-F", "INPUT"])
        try ns.exec("/usr/sbin/iptables", ["-w", "-F", "OUTPUT"])
        lock.withLock { _ = partitioned.remove(i) }
    }

    /// Whether member i's process runs.
    public func isRunning(_ i: Int) -> Bool { lock.withLock { processes[i]?.isRunning == true } }

    /// Saves a snapshot (through member `from`) to a file in the cluster's directory.
    public func snapshot(from i: Int = 0) throws -> String {
        let path = "\(dir)/snapshot-\(Int.random(in: 0..<1_000_000)).db"
        try etcdctl(["snapshot", "save", path], endpoints: [members[i].clientURL])
        return path
    }

    /// Kills every member and starts them all again from `snapshot` (new data directories), as
    /// an operator restores a cluster: the store goes back to the snapshot's revision.
    public func restore(from snapshot: String) async throws {
        for i in members.indices { kill9(i) }
        for (i, m) in members.enumerated() {
            let newDir = "\(dir)/\(m.name)-restored-\(Int.random(in: 0..<1_000_000))"
            try run(
                "/usr/bin/etcdctl",
                [
                    "snapshot", "restore", snapshot, "--name", m.name, "--data-dir", newDir,
                    "--initial-cluster", initialCluster, "--initial-cluster-token", token,
                    "--initial-advertise-peer-urls", m.peerURL,
                ],
                environment: ["ETCDCTL_API": "3"])
            lock.withLock { dataDirs[i] = newDir }
        }
        for i in members.indices { try launch(i, state: "existing") }
        try await waitHealthy()
    }

    /// Kills every member (thawing frozen ones first) and removes every file.
    public func stop() {
        let all = lock.withLock { () -> [ChildProcess?] in
            defer {
                processes = Array(repeating: nil, count: members.count)
                frozen = []
            }
            return processes
        }
        for p in all.compactMap({ $0 }) {
            kill(p.pid, SIGCONT)
            p.stop(signal: SIGKILL)
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    deinit { stop() }
}

/// Runs `body` with a fresh cluster and stops it afterwards, even when `body` throws.
public func withEtcdCluster<T>(
    size: Int = 3, placement: EtcdCluster.Placement = .loopback,
    _ body: (EtcdCluster) async throws -> T
) async throws -> T {
    let cluster = try await EtcdCluster.start(size: size, placement: placement)
    defer { cluster.stop() }
    return try await body(cluster)
}

extension NSLock {
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
