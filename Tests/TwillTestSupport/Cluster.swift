import Foundation

/// etcd plus one `twill agent` per host namespace: a small cluster for end-to-end tests.
///
/// With one etcd member, etcd runs inside the switch namespace, on the bridge at
/// `<underlay>.254:2379`, where every host reaches it over the underlay; the test talks to it
/// with `etcdctl` in that namespace. With several, each member runs in a namespace of its own
/// on the bridge (``etcdCluster``: freeze, kill, partition, restore). Nothing is added to the
/// machine's own namespace.
public final class TestCluster: @unchecked Sendable {
    public let net: BridgedHosts
    public let dir: String
    /// Every etcd client URL, comma-separated, as `--etcd-endpoints` takes them.
    public let etcdEndpoint: String
    /// The agents' hosts (the first hosts of ``net``; the rest hold etcd members).
    public let hosts: [TestNamespace]
    /// The multi-member cluster, when there is one.
    public let etcdCluster: EtcdCluster?
    private var etcd: ChildProcess?
    private var agents: [Int: ChildProcess] = [:]
    private let lock = NSLock()

    /// A cluster on `net` whose first `nodes` hosts run agents and whose last `etcdMembers`
    /// hosts (when more than one) run an etcd member each.
    public static func start(_ net: BridgedHosts, underlay: String, nodes: Int, etcdMembers: Int) async throws -> TestCluster {
        guard etcdMembers > 1 else { return try TestCluster(net, underlay: underlay) }
        let members = Array(net.hosts.suffix(etcdMembers))
        let addresses = Array(net.underlayAddresses.suffix(etcdMembers))
        let etcd = try await EtcdCluster.start(size: etcdMembers, placement: .namespaces(members, addresses: addresses))
        return try TestCluster(net, hosts: Array(net.hosts.prefix(nodes)), etcdCluster: etcd)
    }

    private init(_ net: BridgedHosts, hosts: [TestNamespace], etcdCluster: EtcdCluster) throws {
        self.net = net
        self.hosts = hosts
        self.etcdCluster = etcdCluster
        dir = try makeTempDir(prefix: "twill-test-cluster-")
        etcdEndpoint = etcdCluster.endpoints.joined(separator: ",")
    }

    /// With `ipv6Only`, etcd listens on the switch's IPv6 address `[2001:db8:1::fe]:2379`
    /// (for hosts without IPv4).
    public init(_ net: BridgedHosts, underlay: String, ipv6Only: Bool = false) throws {
        self.net = net
        hosts = net.hosts
        etcdCluster = nil
        dir = try makeTempDir(prefix: "twill-test-cluster-")
        if ipv6Only {
            etcdEndpoint = "http://[\(ipv6Underlay)fe]:2379"
            try net.switchNamespace.ip("addr", "add", "\(ipv6Underlay)fe/64", "dev", "br0", "nodad")
        } else {
            let address = "\(underlay).254"
            etcdEndpoint = "http://\(address):2379"
            try net.switchNamespace.ip("addr", "add", "\(address)/24", "dev", "br0")
        }
        etcd = try ChildProcess(
            "/usr/sbin/ip",
            [
                "netns", "exec", net.switchNamespace.name, "/usr/bin/etcd", "--name", "twill-e2e", "--data-dir", dir + "/etcd",
                "--listen-client-urls", etcdEndpoint, "--advertise-client-urls", etcdEndpoint,
                "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", "twill-e2e=http://127.0.0.1:2380", "--log-level", "error",
            ], logPath: dir + "/etcd.log")
        let deadline = ContinuousClock.now + .seconds(20)
        while (try? etcdctl(["endpoint", "health"])) == nil {
            guard ContinuousClock.now < deadline, etcd?.isRunning == true else {
                throw HarnessError("etcd in \(net.switchNamespace) did not start: \(etcd?.log ?? "")")
            }
            usleep(100_000)
        }
    }

    /// `etcdctl` (v3) against the cluster's etcd (the members not frozen).
    @discardableResult
    public func etcdctl(_ arguments: [String]) throws -> String {
        if let etcdCluster { return try etcdCluster.etcdctl(arguments) }
        return try net.switchNamespace.exec("/usr/bin/etcdctl", ["--endpoints", etcdEndpoint] + arguments)
    }

    /// The subnet.env path of host `i` (0-based).
    public func subnetFile(_ i: Int) -> String { dir + "/h\(i + 1)/subnet.env" }

    /// Stops host `i`'s agent with `signal` and starts it again at once with `extra` and
    /// `environment` (the new process is made ready beforehand, so that only the agent's own
    /// stop and start are in between). Returns the old one's exit status.
    @discardableResult
    public func restartAgent(_ i: Int, signal: Int32 = SIGTERM, extra: [String] = [], environment: [String: String] = [:]) throws -> Int32 {
        let gate = dir + "/restart-gate-\(i)"
        unlink(gate)
        guard mkfifo(gate, 0o600) == 0 else { throw HarnessError("mkfifo \(gate): errno \(errno)") }
        defer { unlink(gate) }
        lock.lock()
        let old = agents.removeValue(forKey: i)
        lock.unlock()
        try startAgent(i, extra: extra, environment: environment, gate: gate)
        let status = old?.stop(signal: signal) ?? -1
        ChildProcess.openGate(gate)
        return status
    }

    /// Starts `twill agent` in host `i`; `extra` are more flags, `environment` more variables.
    public func startAgent(_ i: Int, extra: [String] = [], environment: [String: String] = [:], gate: String? = nil) throws {
        let binary = try twillBinary()
        let host = hosts[i]
        let env = environment.isEmpty ? nil : ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let p = try ChildProcess(
            "/usr/sbin/ip",
            [
                "netns", "exec", host.name, binary, "agent", "--etcd-endpoints", etcdEndpoint,
                "--iface", net.interface, "--subnet-file", subnetFile(i), "--log-level", "debug",
            ] + extra,
            environment: env, logPath: dir + "/agent-h\(i + 1).\(Int.random(in: 0..<1_000_000)).log", gate: gate)
        lock.lock()
        agents[i] = p
        lock.unlock()
    }

    /// Starts the binary as `flanneld` (a symlink named so, in the cluster's directory) in
    /// host `i` with exactly `arguments` and the environment `environment` adds to a bare one:
    /// flanneld's command line, untouched by the harness.
    public func startFlanneld(_ i: Int, _ arguments: [String], environment: [String: String] = [:]) throws {
        let link = try flanneldLink()
        var env = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        env.merge(environment) { _, new in new }
        let p = try ChildProcess(
            "/usr/sbin/ip", ["netns", "exec", hosts[i].name, link] + arguments, environment: env,
            logPath: dir + "/flanneld-h\(i + 1).\(Int.random(in: 0..<1_000_000)).log")
        lock.lock()
        agents[i] = p
        lock.unlock()
    }

    /// `<dir>/bin/flanneld`, a symlink to the twill binary.
    public func flanneldLink() throws -> String {
        let binDir = dir + "/bin"
        let link = binDir + "/flanneld"
        if !FileManager.default.fileExists(atPath: link) {
            try FileManager.default.createDirectory(atPath: binDir, withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: try twillBinary())
        }
        return link
    }

    /// Stops host `i`'s agent with `signal`; returns its exit status.
    @discardableResult
    public func stopAgent(_ i: Int, signal: Int32 = SIGTERM) -> Int32 {
        lock.lock()
        let p = agents.removeValue(forKey: i)
        lock.unlock()
        return p?.stop(signal: signal) ?? -1
    }

    /// The process ID of host `i`'s agent (ip netns exec execs it: the same process).
    public func agentPID(_ i: Int) -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        return agents[i]?.pid
    }

    public func agentLog(_ i: Int) -> String {
        lock.lock()
        defer { lock.unlock() }
        return agents[i]?.log ?? ""
    }

    /// The subnet (CIDR text) host `i`'s agent wrote, once it has.
    public func subnet(_ i: Int) -> String? {
        guard let text = try? String(contentsOfFile: subnetFile(i), encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("FLANNEL_SUBNET=") {
            // 198.18.7.1/24 -> 198.18.7.0/24 (the tests use /24 subnets)
            let value = line.dropFirst("FLANNEL_SUBNET=".count)
            let parts = value.split(separator: "/")
            guard parts.count == 2 else { return nil }
            let octets = parts[0].split(separator: ".")
            guard octets.count == 4 else { return nil }
            return "\(octets[0]).\(octets[1]).\(octets[2]).0/\(parts[1])"
        }
        return nil
    }

    /// The lease key of a subnet ("198.18.7.0/24" -> ".../198.18.7.0-24").
    /// The IPv6 subnet (CIDR text, network form) host `i`'s agent wrote, once it has:
    /// `FLANNEL_IPV6_SUBNET=2001:db8:100:5::1/64` -> `2001:db8:100:5::/64`.
    public func subnet6(_ i: Int) -> String? {
        guard let text = try? String(contentsOfFile: subnetFile(i), encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("FLANNEL_IPV6_SUBNET=") {
            let value = line.dropFirst("FLANNEL_IPV6_SUBNET=".count)
            guard value.hasSuffix("::1/64") else { return nil } // the tests use /64 subnets
            return value.dropLast("1/64".count) + "/64"
        }
        return nil
    }

    /// The first address of an IPv6 /64 subnet (`2001:db8:100:5::/64` -> `2001:db8:100:5::1`):
    /// where a bridge on the host would sit.
    public static func gateway6(_ subnet6: String) -> String {
        subnet6.replacingOccurrences(of: "::/64", with: "::1")
    }

    /// Runs `twill cleanup` (with `extra` flags) in host `i`: its output.
    @discardableResult
    public func cleanup(_ i: Int, extra: [String] = []) throws -> String {
        try hosts[i].exec(try twillBinary(), ["cleanup"] + extra)
    }

    public func leaseKey(_ subnet: String) -> String {
        "/coreos.com/network/subnets/" + subnet.replacingOccurrences(of: "/", with: "-")
    }

    /// Stops every agent and etcd and removes the files. Namespaces are the caller's.
    public func shutdown() {
        lock.lock()
        let all = agents
        agents = [:]
        lock.unlock()
        for (_, p) in all { p.stop(signal: SIGKILL) }
        etcd?.stop(signal: SIGKILL)
        etcd = nil
        etcdCluster?.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    deinit { shutdown() }
}

/// Bridged hosts plus a cluster on them, torn down afterwards whatever happens. With
/// `etcdMembers` above one, etcd is a real cluster of that many members, each on a host of
/// its own after the agents' hosts.
/// With `ipv6`, the segment is dual stack (see ``withBridgedHosts(count:underlay:mtu:ipv6:ipv4:_:)``).
/// With `ipv6Only`, the hosts and etcd have IPv6 addresses only.
public func withCluster<T>(
    hosts: Int, underlay: String, etcdMembers: Int = 1, ipv6: Bool = false, ipv6Only: Bool = false,
    _ body: (TestCluster) async throws -> T
) async throws -> T {
    if ipv6Only {
        return try await withBridgedHosts(count: hosts, underlay: underlay, ipv6: true, ipv4: false) { net in
            let cluster = try TestCluster(net, underlay: underlay, ipv6Only: true)
            defer { cluster.shutdown() }
            return try await body(cluster)
        }
    }
    return try await withBridgedHosts(count: hosts + (etcdMembers > 1 ? etcdMembers : 0), underlay: underlay, ipv6: ipv6) { net in
        let cluster = try await TestCluster.start(net, underlay: underlay, nodes: hosts, etcdMembers: etcdMembers)
        defer { cluster.shutdown() }
        return try await body(cluster)
    }
}
