import Foundation
import Testing
import TwillTestSupport

/// Real agents on namespace hosts against real etcd, under the faults an operator meets: a
/// hung, partitioned or killed etcd member, the whole cluster down, a restore from a
/// snapshot, the node's own key deleted or taken, hostile leases, live config changes, the
/// data path deleted under the agent, a full disk. Each scenario says what must hold.
@Suite(.serialized) struct FaultEndToEndTests {
    static let udpConfig = #"{"Network":"198.18.0.0/16","Backend":{"Type":"udp"}}"#
    static let health = ["--healthz-ip", "127.0.0.1", "--healthz-port", "9100"]

    /// Starts agents `which` and waits for their subnet.env (20 s each at most); gives each
    /// host a bridge on its subnet.
    static func startNodes(_ cluster: TestCluster, _ which: [Int], extra: [String] = []) async throws -> Bool {
        for i in which { try cluster.startAgent(i, extra: health + extra) }
        for i in which {
            let ok = await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }
            #expect(ok, "agent \(i + 1) wrote no subnet.env: \(cluster.agentLog(i))")
            if !ok { return false }
            try cluster.addBridge(i, subnet: cluster.subnet(i)!)
        }
        return true
    }

    static func key(_ cluster: TestCluster, _ i: Int) -> String { cluster.leaseKey(cluster.subnet(i) ?? "") }

    static func status(_ cluster: TestCluster, _ i: Int, _ path: String) -> Int {
        AgentProbe.get(cluster.hosts[i], port: 9100, path).status
    }

    // MARK: etcd members

    /// The first `--etcd-endpoints` member frozen (SIGSTOP, as a stalled disk freezes it), then
    /// cut off from the quorum, then the leader killed: a new node leases and is routed by
    /// every node within 15 s each time, and the running nodes keep renewing and watching.
    @Test func aHungPartitionedOrKilledMemberDoesNotStopTheNodes() async throws {
        try await withCluster(hosts: 3, underlay: "198.51.100", etcdMembers: 3) { cluster in
            let etcd = try #require(cluster.etcdCluster)
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.udpConfig])
            // A short TTL: renewals every 10 s show that the lease loop goes on.
            guard try await Self.startNodes(cluster, [0, 1], extra: ["--subnet-lease-ttl", "30"]) else { return }
            #expect(cluster.reaches(0, 1, attempts: 10), "\(cluster.agentLog(0))")

            for fault in ["frozen", "partitioned"] {
                if fault == "frozen" { etcd.freeze(0) } else { try etcd.partition(0) }
                let start = ContinuousClock.now
                let renewalsBefore = cluster.agentLog(0).components(separatedBy: "renewed subnet lease").count
                try cluster.startAgent(2, extra: Self.health)
                let routed = await eventually(timeout: .seconds(15)) {
                    cluster.subnet(2) != nil && (try? cluster.addBridge(2, subnet: cluster.subnet(2)!)) != nil
                        && cluster.reaches(0, 2, attempts: 1) && cluster.reaches(1, 2, attempts: 1) && cluster.reaches(2, 0, attempts: 1)
                }
                let took = ContinuousClock.now - start
                print("first etcd member \(fault): the new node leased and was routed by all in \(took)")
                #expect(routed, "member \(fault): new node\n\(cluster.agentLog(2))\nnode 1\n\(cluster.agentLog(0))")
                // The running nodes keep renewing through the fault.
                #expect(
                    await eventually(timeout: .seconds(15)) {
                        cluster.agentLog(0).components(separatedBy: "renewed subnet lease").count > renewalsBefore
                    }, "node 1 stopped renewing: \(cluster.agentLog(0))")
                // Stop the new node and give its subnet back for the next round.
                cluster.stopAgent(2)
                try cluster.etcdctl(["del", Self.key(cluster, 2)])
                try? FileManager.default.removeItem(atPath: cluster.subnetFile(2))
                if fault == "frozen" { etcd.thaw(0) } else { try etcd.heal(0) }
                try await etcd.waitHealthy()
            }

            // The leader killed: the nodes go on, and a lease written now reaches them.
            let leader = try #require(try etcd.leader())
            etcd.kill9(leader)
            // The test's own write waits for the election; the agents are on their own.
            try await etcd.waitHealthy()
            try cluster.etcdctl(["put", "/coreos.com/network/subnets/198.18.222.0-24", #"{"PublicIP":"198.51.100.99","PublicIPv6":null}"#])
            for i in 0..<2 {
                #expect(
                    await eventually(timeout: .seconds(15)) { AgentProbe.metric(cluster.hosts[i], port: 9100, "twill_peers") == 2 },
                    "node \(i + 1) after the leader died: \(cluster.agentLog(i))")
            }
            #expect(cluster.reaches(0, 1))
            try etcd.restart(leader)
        }
    }

    /// Every etcd member down for 60 s under continuous traffic: at most 1% of pings lost, the
    /// agents nearly idle, and afterwards the same subnets and etcd lease IDs and events
    /// flowing again.
    @Test func theWholeClusterDownForAMinute() async throws {
        try await withCluster(hosts: 2, underlay: "203.0.113", etcdMembers: 3) { cluster in
            let etcd = try #require(cluster.etcdCluster)
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.udpConfig])
            guard try await Self.startNodes(cluster, [0, 1]) else { return }
            #expect(cluster.reaches(0, 1, attempts: 10))
            let subnets = (0..<2).map { cluster.subnet($0) }
            let leases = (0..<2).map { cluster.leaseID(ofKey: Self.key(cluster, $0)) }
            let ping = try AgentProbe.Ping(
                from: cluster.hosts[0], source: TestCluster.gateway(subnets[0]!), to: TestCluster.gateway(subnets[1]!),
                interval: 0.2, count: 350, logPath: cluster.dir + "/ping.log")
            try await Task.sleep(for: .seconds(2))
            let pids = (0..<2).map { cluster.agentPID($0) ?? 0 }
            for m in 0..<3 { etcd.kill9(m) }
            let cpuBefore = pids.map { AgentProbe.cpuSeconds(pid: $0) ?? 0 }
            try await Task.sleep(for: .seconds(60))
            let cpu = zip(pids, cpuBefore).map { (AgentProbe.cpuSeconds(pid: $0) ?? 0) - $1 }
            for m in 0..<3 { try etcd.restart(m) }
            try await etcd.waitHealthy()
            let stats = try #require(await ping.finish(timeout: .seconds(30)), "\(ping.log)")
            let loss = Double(stats.sent - stats.received) / Double(max(stats.sent, 1))
            print(
                "etcd down 60 s: \(stats.sent) pings, \(stats.sent - stats.received) lost (\(loss * 100)%); agent CPU during the outage: \(cpu.map { String(format: "%.2f s", $0) })"
            )
            #expect(stats.sent >= 300)
            #expect(loss <= 0.01)
            for c in cpu { #expect(c < 1.0) }
            #expect((0..<2).map { cluster.subnet($0) } == subnets)
            #expect((0..<2).map { cluster.leaseID(ofKey: Self.key(cluster, $0)) } == leases)
            try cluster.etcdctl(["put", "/coreos.com/network/subnets/198.18.222.0-24", #"{"PublicIP":"203.0.113.99","PublicIPv6":null}"#])
            for i in 0..<2 {
                #expect(
                    await eventually(timeout: .seconds(30)) { AgentProbe.metric(cluster.hosts[i], port: 9100, "twill_peers") == 2 },
                    "node \(i + 1) sees no events after the outage: \(cluster.agentLog(i))")
                #expect(Self.status(cluster, i, "/healthz") == 200)
            }
        }
    }

    /// A node cut off from etcd right after a renewal, for less than its (short) TTL: it
    /// renews in time and keeps the same etcd lease.
    @Test func anOutageShorterThanTheTTLKeepsTheLease() async throws {
        try await withCluster(hosts: 1, underlay: "198.51.100") { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.udpConfig])
            guard try await Self.startNodes(cluster, [0], extra: ["--subnet-lease-ttl", "12"]) else { return }
            let key = Self.key(cluster, 0)
            let lease = try #require(cluster.leaseID(ofKey: key))
            let hex = String(lease, radix: 16)
            func remaining() -> Int? {
                guard let out = try? cluster.etcdctl(["lease", "timetolive", hex]) else { return nil }
                // "lease 694d... granted with TTL(12s), remaining(11s)"
                guard let r = out.range(of: "remaining(") else { return nil }
                return Int(out[r.upperBound...].prefix { $0.isNumber })
            }
            // Right after a renewal.
            #expect(await eventually(timeout: .seconds(10)) { (remaining() ?? 0) >= 11 })
            let host = cluster.hosts[0]
            try host.exec(
                "/usr/sbin/iptables", ["-w", "-I", "OUTPUT", "-p", "tcp", "-d", "198.51.100.254", "--dport", "2379", "-j", "DROP"])
            try await Task.sleep(for: .seconds(8))
            try host.exec(
                "/usr/sbin/iptables", ["-w", "-D", "OUTPUT", "-p", "tcp", "-d", "198.51.100.254", "--dport", "2379", "-j", "DROP"])
            #expect(await eventually(timeout: .seconds(6)) { (remaining() ?? 0) >= 9 }, "\(cluster.agentLog(0))")
            #expect(cluster.leaseID(ofKey: key) == lease, "\(cluster.agentLog(0))")
            #expect(cluster.agentLog(0).contains("could not renew the subnet lease"))
            #expect(!cluster.agentLog(0).contains("etcd lease is gone"))
        }
    }

    /// etcd restored from a snapshot older than a node's lease: the watchers notice the
    /// revision went backwards, list again and converge; the node whose lease the snapshot
    /// lacks puts it back on the same subnet.
    @Test func aRestoreFromAnOlderSnapshotConverges() async throws {
        try await withCluster(hosts: 3, underlay: "203.0.113", etcdMembers: 3) { cluster in
            let etcd = try #require(cluster.etcdCluster)
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.udpConfig])
            guard try await Self.startNodes(cluster, [0, 1]) else { return }
            let snapshot = try etcd.snapshot()
            guard try await Self.startNodes(cluster, [2]) else { return }
            let third = try #require(cluster.subnet(2))
            #expect(await eventually(timeout: .seconds(15)) { cluster.reaches(0, 2, attempts: 1) })
            try await etcd.restore(from: snapshot)
            let converged = await eventually(timeout: .seconds(30)) {
                cluster.value(ofKey: cluster.leaseKey(third)) != nil && cluster.reaches(0, 2, attempts: 1)
                    && cluster.reaches(1, 2, attempts: 1)
            }
            #expect(converged, "node 3: \(cluster.agentLog(2))\nnode 1: \(cluster.agentLog(0))")
            #expect(cluster.subnet(2) == third)
            for i in 0..<2 {
                let log = cluster.agentLog(i)
                #expect(log.contains("re-listed every lease") && log.contains("reason=restored"), "node \(i + 1): \(log)")
            }
        }
    }

    // MARK: The node's own key

    /// The own key deleted: put back at once, same subnet and etcd lease. Overwritten with
    /// another node's PublicIP: the node leaves the subnet to it, moves to a fresh one
    /// (subnet.env rewritten, an error naming both nodes, a conflict counted), and every node
    /// reaches it there; the other node's value is never overwritten.
    @Test func theOwnKeyDeletedThenTaken() async throws {
        try await withCluster(hosts: 3, underlay: "198.51.100") { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.udpConfig])
            guard try await Self.startNodes(cluster, [0, 1, 2]) else { return }
            let old = try #require(cluster.subnet(0))
            let key = cluster.leaseKey(old)
            let lease = cluster.leaseID(ofKey: key)
            try cluster.etcdctl(["del", key])
            #expect(await eventually(timeout: .seconds(10)) { cluster.leaseID(ofKey: key) == lease }, "\(cluster.agentLog(0))")
            #expect(cluster.reaches(1, 0))

            let taken = #"{"PublicIP":"198.51.100.3","PublicIPv6":null}"#
            try cluster.etcdctl(["put", key, taken])
            let start = ContinuousClock.now
            #expect(await eventually(timeout: .seconds(15)) { cluster.subnet(0).map { $0 != old } ?? false }, "\(cluster.agentLog(0))")
            print("own key taken: moved from \(old) to \(cluster.subnet(0) ?? "?") in \(ContinuousClock.now - start)")
            let log = cluster.agentLog(0)
            #expect(log.contains("another node took this node's subnet") && log.contains("198.51.100.3") && log.contains("198.51.100.1"))
            #expect(AgentProbe.metric(cluster.hosts[0], port: 9100, "twill_lease_conflicts_total") == 1)
            #expect(cluster.value(ofKey: key) == taken, "the other node's value must stay")
            #expect(cluster.leaseID(ofKey: cluster.leaseKey(cluster.subnet(0)!)) == lease, "the node keeps its etcd lease")
            try cluster.addBridge(0, subnet: cluster.subnet(0)!)
            for (a, b) in [(1, 0), (2, 0), (0, 1)] {
                #expect(await eventually(timeout: .seconds(10)) { cluster.reaches(a, b, attempts: 1) }, "h\(a + 1) -> h\(b + 1)")
            }
            #expect(await eventually(timeout: .seconds(5)) { Self.status(cluster, 0, "/readyz") == 200 })
        }
    }

    // MARK: Hostile leases

    /// Leases for half of a node's subnet, the whole network, 0.0.0.0-0, outside the network,
    /// of the wrong length, with garbage JSON or a bogus PublicIP: ignored (logged once per
    /// key, counted by reason), and nothing is hijacked: both halves of node 1's subnet stay
    /// reachable from node 2.
    @Test func hostileLeasesAreIgnoredAndHijackNothing() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.udpConfig])
            guard try await Self.startNodes(cluster, [0, 1]) else { return }
            let subnet = try #require(cluster.subnet(0))
            let base = subnet.replacingOccurrences(of: ".0/24", with: "")
            try cluster.hosts[0].ip("addr", "add", "\(base).200/24", "dev", "twb0")
            let stranger = #"{"PublicIP":"198.51.100.3","PublicIPv6":null}"#
            let hostile: [(String, String)] = [
                ("\(base).0-25", stranger), ("\(base).128-25", stranger), ("198.18.0.0-16", stranger), ("0.0.0.0-0", stranger),
                ("10.99.0.0-24", stranger), ("198.18.250.0-26", stranger), ("198.18.251.0-24", "{not json"),
                ("198.18.252.0-24", #"{"PublicIP":"0.0.0.0","PublicIPv6":null}"#),
            ]
            for (name, value) in hostile { try cluster.etcdctl(["put", "/coreos.com/network/subnets/\(name)", value]) }
            let node2 = cluster.hosts[1]
            #expect(
                await eventually(timeout: .seconds(10)) {
                    AgentProbe.metric(node2, port: 9100, "twill_leases_ignored", label: #"reason="wrong_length""#) == 5
                }, "\(AgentProbe.get(node2, port: 9100, "/metrics").body)")
            #expect(AgentProbe.metric(node2, port: 9100, "twill_leases_ignored", label: #"reason="outside_network""#) == 1)
            #expect(AgentProbe.metric(node2, port: 9100, "twill_leases_ignored", label: #"reason="malformed""#) == 1)
            #expect(AgentProbe.metric(node2, port: 9100, "twill_leases_ignored", label: #"reason="bad_public_ip""#) == 1)
            #expect(AgentProbe.metric(node2, port: 9100, "twill_peers") == 1)
            let from = TestCluster.gateway(cluster.subnet(1)!)
            #expect(node2.pingEventually("\(base).1", from: from), "the lower half of node 1's subnet was hijacked")
            #expect(node2.pingEventually("\(base).200", from: from), "the upper half of node 1's subnet was hijacked")
            // Logged once per key, with the reason.
            let log = cluster.agentLog(1)
            #expect(log.components(separatedBy: "ignoring a lease").count - 1 == hostile.count, "\(log)")
            #expect(log.contains("reason=wrong_length"))
        }
    }

    // MARK: Live config

    /// A changed network config is applied without a restart: an invalid one is refused
    /// (logged with the key, exported) and the running one stays; a new Network re-leases
    /// every node inside it; a new backend type rebuilds the data path.
    @Test func liveConfigChangesAreAppliedOrRefused() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.udpConfig])
            guard try await Self.startNodes(cluster, [0, 1]) else { return }
            #expect(cluster.reaches(0, 1, attempts: 10))
            let hosts = cluster.hosts

            try cluster.etcdctl([
                "put", "/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"udp","Port":99999}}"#,
            ])
            #expect(await eventually(timeout: .seconds(10)) { AgentProbe.metric(hosts[0], port: 9100, "twill_config_valid") == 0 })
            #expect(
                cluster.agentLog(0).contains("refusing an invalid network config")
                    && cluster.agentLog(0).contains("/coreos.com/network/config"))
            #expect(cluster.reaches(0, 1))

            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.19.0.0/16","Backend":{"Type":"udp"}}"#])
            let moved = await eventually(timeout: .seconds(20)) {
                (0..<2).allSatisfy { cluster.subnet($0)?.hasPrefix("198.19.") == true }
            }
            #expect(moved, "\(cluster.agentLog(0))")
            guard moved else { return }
            for i in 0..<2 { try cluster.addBridge(i, subnet: cluster.subnet(i)!) }
            let env = try String(contentsOfFile: cluster.subnetFile(0), encoding: .utf8)
            #expect(env.contains("FLANNEL_NETWORK=198.19.0.0/16"))
            #expect(await eventually(timeout: .seconds(10)) { cluster.reaches(0, 1, attempts: 1) && cluster.reaches(1, 0, attempts: 1) })
            #expect(try hosts[0].ip("route", "show", "proto", "84").contains("198.19.0.0/16 dev twill0"))
            let keys = try cluster.etcdctl(["get", "--prefix", "--keys-only", "/coreos.com/network/subnets/"])
            #expect(!keys.contains("198.18."), "old leases left: \(keys)")
            #expect(AgentProbe.metric(hosts[0], port: 9100, "twill_config_valid") == 1)

            let subnets = (0..<2).map { cluster.subnet($0) }
            #expect(subnets.allSatisfy { $0 != nil })
            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.19.0.0/16","Backend":{"Type":"host-gw"}}"#])
            let rebuilt = await eventually(timeout: .seconds(20)) { Self.rebuiltAsHostGW(hosts[0]) }
            #expect(rebuilt, "\(cluster.agentLog(0))")
            #expect((0..<2).map { cluster.subnet($0) } == subnets, "the subnets still fit: kept")
            #expect(cluster.value(ofKey: cluster.leaseKey(subnets[0]!))?.contains(#""BackendType":"host-gw""#) == true)
            #expect(await eventually(timeout: .seconds(10)) { cluster.reaches(0, 1, attempts: 1) && cluster.reaches(1, 0, attempts: 1) })
            for i in 0..<2 { #expect(await eventually(timeout: .seconds(5)) { Self.status(cluster, i, "/readyz") == 200 }) }
        }
    }

    /// The TUN gone and the peer routed via its PublicIP on the underlay.
    static func rebuiltAsHostGW(_ host: TestNamespace) -> Bool {
        let tunGone = (try? host.ip("link", "show", "twill0")) == nil
        let routes = (try? host.ip("route", "show", "proto", "84")) ?? ""
        return tunGone && routes.contains("via 198.51.100.2 dev eth0")
    }

    // MARK: The data path

    /// The TUN deleted under the agent, then set down; the vxlan device deleted: each is
    /// restored within seconds (the vxlan device with the same MAC), traffic flows again, and
    /// /healthz stays 200.
    @Test func theDataPathRepairsItself() async throws {
        try await withCluster(hosts: 2, underlay: "203.0.113") { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.udpConfig])
            guard try await Self.startNodes(cluster, [0, 1]) else { return }
            let h = cluster.hosts[0]
            #expect(cluster.reaches(1, 0, attempts: 10))
            func tunOK() -> Bool {
                let link = (try? h.ip("link", "show", "twill0")) ?? ""
                let routes = (try? h.ip("route", "show", "proto", "84")) ?? ""
                return link.contains("UP") && routes.contains("198.18.0.0/16 dev twill0")
            }
            try h.ip("link", "del", "twill0")
            var start = ContinuousClock.now
            #expect(await eventually(timeout: .seconds(10)) { tunOK() && cluster.reaches(1, 0, attempts: 1) }, "\(cluster.agentLog(0))")
            print("TUN deleted: back and forwarding in \(ContinuousClock.now - start)")
            #expect((AgentProbe.metric(h, port: 9100, "twill_datapath_repairs_total") ?? 0) >= 1)
            #expect(Self.status(cluster, 0, "/healthz") == 200)
            try h.ip("link", "set", "twill0", "down")
            start = ContinuousClock.now
            #expect(await eventually(timeout: .seconds(10)) { tunOK() && cluster.reaches(1, 0, attempts: 1) }, "\(cluster.agentLog(0))")
            print("TUN set down: up and forwarding in \(ContinuousClock.now - start)")

            // A bridge takes the TUN's name: the data path cannot be rebuilt. After 30 s
            // of failed repairs /healthz says so (and /readyz); once the name is free again the
            // agent repairs it by itself.
            var blocked = false
            for _ in 0..<5 where !blocked {
                _ = try? h.exec("/bin/sh", ["-c", "ip link del twill0 && ip link add twill0 type bridge"])
                blocked = ((try? h.ip("-d", "link", "show", "twill0")) ?? "").contains("bridge forward_delay")
                if !blocked { try await Task.sleep(for: .milliseconds(300)) }
            }
            #expect(blocked)
            #expect(await eventually(timeout: .seconds(45)) { Self.status(cluster, 0, "/healthz") == 503 }, "\(cluster.agentLog(0))")
            let health = AgentProbe.get(h, port: 9100, "/healthz")
            #expect(health.body.contains("beyond self-repair") && health.body.contains("twill0"), "\(health.body)")
            #expect(Self.status(cluster, 0, "/readyz") == 503)
            try h.ip("link", "del", "twill0")
            #expect(await eventually(timeout: .seconds(10)) { tunOK() && cluster.reaches(1, 0, attempts: 1) }, "\(cluster.agentLog(0))")
            #expect(await eventually(timeout: .seconds(5)) { Self.status(cluster, 0, "/healthz") == 200 })

            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}"#])
            func mac() -> String? {
                guard let out = try? h.ip("link", "show", "flannel.1"), let r = out.range(of: "link/ether ") else { return nil }
                return String(out[r.upperBound...].prefix(17))
            }
            #expect(
                await eventually(timeout: .seconds(20)) { mac() != nil && cluster.reaches(1, 0, attempts: 1) }, "\(cluster.agentLog(0))")
            let before = try #require(mac())
            try h.ip("link", "del", "flannel.1")
            start = ContinuousClock.now
            #expect(
                await eventually(timeout: .seconds(10)) { mac() == before && cluster.reaches(1, 0, attempts: 1) }, "\(cluster.agentLog(0))")
            print("vxlan device deleted: back (same MAC) and forwarding in \(ContinuousClock.now - start)")
            #expect(Self.status(cluster, 0, "/healthz") == 200)
        }
    }

    /// subnet.env on a full tmpfs: the rewrite fails with a clear error naming ENOSPC, the old
    /// file stays intact, /readyz says why; once there is room the file is written.
    @Test func subnetEnvOnAFullDisk() async throws {
        try await withCluster(hosts: 1, underlay: "198.51.100") { cluster in
            let dir = cluster.dir + "/tiny"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "twill-test-tmpfs", dir])
            defer { _ = try? run("/usr/bin/umount", ["-l", dir]) }
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.udpConfig])
            let path = dir + "/subnet.env"
            try cluster.startAgent(0, extra: Self.health + ["--subnet-file", path])
            #expect(await eventually(timeout: .seconds(20)) { FileManager.default.fileExists(atPath: path) }, "\(cluster.agentLog(0))")
            #expect(await eventually(timeout: .seconds(5)) { Self.status(cluster, 0, "/readyz") == 200 })
            let before = try String(contentsOfFile: path, encoding: .utf8)
            // Fill the disk, then make the agent rewrite the file (a new Network).
            _ = try? run("/bin/dd", ["if=/dev/zero", "of=\(dir)/fill", "bs=4k"])
            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.19.0.0/16","Backend":{"Type":"udp"}}"#])
            #expect(await eventually(timeout: .seconds(20)) { cluster.agentLog(0).contains("ENOSPC") }, "\(cluster.agentLog(0))")
            #expect(try String(contentsOfFile: path, encoding: .utf8) == before, "the old file must stay intact")
            let ready = AgentProbe.get(cluster.hosts[0], port: 9100, "/readyz")
            #expect(ready.status == 503 && ready.body.contains("subnet.env") && ready.body.contains("ENOSPC"), "\(ready)")
            #expect(Self.status(cluster, 0, "/healthz") == 200)
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp") }
            #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
            try FileManager.default.removeItem(atPath: dir + "/fill")
            #expect(
                await eventually(timeout: .seconds(10)) {
                    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").contains("FLANNEL_NETWORK=198.19.0.0/16")
                })
            #expect(await eventually(timeout: .seconds(5)) { Self.status(cluster, 0, "/readyz") == 200 })
        }
    }
}
