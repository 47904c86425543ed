import Foundation
import Testing
import TwillTestSupport

/// A stop of the agent is no outage: the data path it made stays while no agent runs, and the
/// next start adopts it without a flap. Pods (each host's bridge address) ping each other every
/// 20 ms across the stop, and ping out of the overlay through the masquerade rules.
@Suite(.serialized) struct RestartEndToEndTests {
    static func config(_ backend: String) -> String { #"{"Network":"198.18.0.0/16","Backend":{"Type":"\#(backend)"}}"# }

    /// The flags and environment each backend's agents run with.
    static func agentFlags(_ backend: String, _ cluster: TestCluster, _ i: Int) -> (extra: [String], environment: [String: String]) {
        var extra = ["--ip-masq", "--iptables-resync", "1"]
        var environment: [String: String] = [:]
        if backend == "wireguard" {
            extra += ["--wireguard-engine", "userspace"]
            environment["WIREGUARD_KEY_FILE"] = cluster.dir + "/h\(i + 1)/wgkey"
        }
        return (extra, environment)
    }

    /// Starts agents on every host and gives each a bridge with its subnet's first address;
    /// the subnets, or nil (recorded) when one never got one.
    static func startCluster(_ cluster: TestCluster, backend: String) async throws -> [String]? {
        try cluster.etcdctl(["put", "/coreos.com/network/config", config(backend)])
        for i in cluster.hosts.indices {
            let flags = agentFlags(backend, cluster, i)
            try cluster.startAgent(i, extra: flags.extra, environment: flags.environment)
        }
        var subnets: [String] = []
        for i in cluster.hosts.indices {
            let ok = await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }
            #expect(ok, "agent \(i + 1) wrote no subnet.env: \(cluster.agentLog(i))")
            guard ok, let s = cluster.subnet(i) else { return nil }
            subnets.append(s)
            try cluster.addBridge(i, subnet: s)
        }
        for i in cluster.hosts.indices {
            for j in cluster.hosts.indices where j != i {
                guard cluster.reaches(i, j, attempts: 10) else {
                    Issue.record("\(backend): h\(i + 1) cannot reach h\(j + 1)\n\(cluster.agentLog(i))\n\(cluster.agentLog(j))")
                    return nil
                }
            }
        }
        return subnets
    }

    static func ifindex(_ host: TestNamespace, _ device: String) -> String? {
        (try? host.ip("-o", "link", "show", device))?.split(separator: ":").first.map(String.init)
    }

    /// host-gw and vxlan: the agent on host 1 stopped for 10 s and started again: no ping lost,
    /// pod to pod either way nor pod to outside (masquerade); the device kept (same index), the
    /// routes and rules never removed.
    @Test(arguments: ["host-gw", "vxlan"])
    func kernelBackendsLoseNothingWhileStopped(backend: String) async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            guard let subnets = try await Self.startCluster(cluster, backend: backend) else { return }
            let hosts = cluster.hosts
            let pods = subnets.map(TestCluster.gateway)
            // The switch (etcd's address) has no route to the overlay: a pod reaches it only
            // through host 1's masquerade.
            #expect(hosts[0].pingEventually("198.51.100.254", from: pods[0]), "masquerade on h1")
            let device = backend == "vxlan" ? "flannel.1" : nil
            let indexBefore = device.flatMap { Self.ifindex(hosts[0], $0) }
            let routesBefore = try hosts[0].ip("route", "show", "proto", "84")
            let pings = [
                try AgentProbe.Ping(
                    from: hosts[0], source: pods[0], to: pods[1], interval: 0.02, count: 750, logPath: cluster.dir + "/ping-out.log"),
                try AgentProbe.Ping(
                    from: hosts[1], source: pods[1], to: pods[0], interval: 0.02, count: 750, logPath: cluster.dir + "/ping-in.log"),
                try AgentProbe.Ping(
                    from: hosts[0], source: pods[0], to: "198.51.100.254", interval: 0.02, count: 750,
                    logPath: cluster.dir + "/ping-masq.log"),
            ]
            try await Task.sleep(for: .seconds(1))
            #expect(cluster.stopAgent(0) == 0)
            // While stopped: the data path and the rules are all there.
            #expect(try hosts[0].ip("route", "show", "proto", "84") == routesBefore)
            #expect(try hosts[0].exec("/usr/sbin/iptables", ["-w", "-t", "nat", "-S", "FLANNEL-POSTRTG"]).contains("MASQUERADE"))
            try await Task.sleep(for: .seconds(10))
            let flags = Self.agentFlags(backend, cluster, 0)
            try cluster.startAgent(0, extra: flags.extra, environment: flags.environment)
            #expect(await eventually(timeout: .seconds(20)) { cluster.agentLog(0).contains("wrote subnet file") })
            for (ping, what) in zip(pings, ["h1 pod -> h2 pod", "h2 pod -> h1 pod", "h1 pod -> outside (masquerade)"]) {
                let result = await ping.finish(timeout: .seconds(30))
                #expect(result != nil && result?.sent == result?.received, "\(backend) \(what): \(String(describing: result))\n\(ping.log)")
            }
            // Adopted, not made again.
            if let device { #expect(Self.ifindex(hosts[0], device) == indexBefore, "\(device) was recreated\n\(cluster.agentLog(0))") }
            #expect(!cluster.agentLog(0).contains("created vxlan device"), "\(cluster.agentLog(0))")
            #expect(
                !cluster.agentLog(0).contains("installed iptables rules") && !cluster.agentLog(0).contains("repaired iptables rules"),
                "the rules were rebuilt:\n\(cluster.agentLog(0))")
            #expect(try hosts[0].ip("route", "show", "proto", "84") == routesBefore)
        }
    }

    /// udp and wireguard outside systemd: a SIGTERM and an immediate start lose no ping either
    /// way: the stopping agent leaves its TUN queues and sockets (and wireguard sessions) to a
    /// holder the next agent takes them from; the persistent TUN is adopted (same index).
    @Test(arguments: ["udp", "wireguard"])
    func engineBackendsRestartQuickly(backend: String) async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            guard let subnets = try await Self.startCluster(cluster, backend: backend) else { return }
            let hosts = cluster.hosts
            let pods = subnets.map(TestCluster.gateway)
            let device = backend == "udp" ? "twill0" : "flannel-wg"
            let indexBefore = Self.ifindex(hosts[0], device)
            let pings = [
                try AgentProbe.Ping(
                    from: hosts[0], source: pods[0], to: pods[1], interval: 0.02, count: 250, logPath: cluster.dir + "/ping-out.log"),
                try AgentProbe.Ping(
                    from: hosts[1], source: pods[1], to: pods[0], interval: 0.02, count: 250, logPath: cluster.dir + "/ping-in.log"),
                try AgentProbe.Ping(
                    from: hosts[0], source: pods[0], to: "198.51.100.254", interval: 0.02, count: 250,
                    logPath: cluster.dir + "/ping-masq.log"),
            ]
            try await Task.sleep(for: .seconds(1))
            let flags = Self.agentFlags(backend, cluster, 0)
            #expect(try cluster.restartAgent(0, extra: flags.extra, environment: flags.environment) == 0)
            #expect(await eventually(timeout: .seconds(20)) { cluster.agentLog(0).contains("wrote subnet file") })
            for (ping, what, allowed) in zip3(
                pings, ["h1 pod -> h2 pod", "h2 pod -> h1 pod", "h1 pod -> outside (masquerade)"], [0, 0, 0])
            {
                let result = await ping.finish(timeout: .seconds(30))
                let lost = result.map { $0.sent - $0.received }
                #expect(
                    lost != nil && lost! <= allowed,
                    "\(backend) \(what): lost \(lost.map(String.init) ?? "?") of \(result?.sent ?? 0)\n\(ping.log)\n\(cluster.agentLog(0))")
                print("restart-loss \(backend) plain \(what): \(lost.map(String.init) ?? "?") lost of \(result?.sent ?? 0) at 20 ms")
            }
            #expect(Self.ifindex(hosts[0], device) == indexBefore, "\(device) was recreated\n\(cluster.agentLog(0))")
            #expect(cluster.agentLog(0).contains("took over 1 queue(s) of \(device)"), "\(cluster.agentLog(0))")
            if backend == "wireguard" { #expect(cluster.agentLog(0).contains("resuming the previous run's wireguard sessions")) }
        }
    }

    /// A rolling restart of every node (each agent stopped with SIGTERM and started at once,
    /// one after the other) under pings every 20 ms around a ring of three pods: what an
    /// upgrade of a whole cluster costs, per backend.
    @Test(arguments: ["host-gw", "vxlan", "udp", "wireguard"])
    func rollingRestartOfEveryNode(backend: String) async throws {
        try await withCluster(hosts: 3, underlay: "198.51.100") { cluster in
            guard let subnets = try await Self.startCluster(cluster, backend: backend) else { return }
            let hosts = cluster.hosts
            let pods = subnets.map(TestCluster.gateway)
            let pings = try (0..<3).map { i in
                try AgentProbe.Ping(
                    from: hosts[i], source: pods[i], to: pods[(i + 1) % 3], interval: 0.02, count: 300,
                    logPath: cluster.dir + "/ping-\(i).log")
            }
            try await Task.sleep(for: .seconds(1))
            for i in 0..<3 {
                let flags = Self.agentFlags(backend, cluster, i)
                #expect(try cluster.restartAgent(i, extra: flags.extra, environment: flags.environment) == 0)
                #expect(
                    await eventually(timeout: .seconds(20)) { cluster.agentLog(i).contains("wrote subnet file") }, "\(cluster.agentLog(i))")
                try await Task.sleep(for: .seconds(1))
            }
            for (i, ping) in pings.enumerated() {
                let result = await ping.finish(timeout: .seconds(30))
                let lost = result.map { $0.sent - $0.received }
                print(
                    "restart-loss \(backend) rolling h\(i + 1) pod -> h\((i + 1) % 3 + 1) pod: \(lost.map(String.init) ?? "?") lost of \(result?.sent ?? 0) at 20 ms"
                )
                #expect(
                    lost == 0, "\(backend) rolling restart, h\(i + 1) -> h\((i + 1) % 3 + 1): \(String(describing: result))\n\(ping.log)")
            }
        }
    }

    /// udp and wireguard under a real systemd, with the shipped unit: `systemctl restart`
    /// loses no ping either way (the TUN queues and sockets wait in systemd's descriptor store).
    @Test(arguments: ["udp", "wireguard"])
    func engineBackendsRestartUnderSystemdLoseNothing(backend: String) async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            let hosts = cluster.hosts
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config(backend)])
            let flags = Self.agentFlags(backend, cluster, 1)
            try cluster.startAgent(1, extra: flags.extra, environment: flags.environment)
            // Host 1's agent runs as the shipped unit, its flags from /etc/twill/twill.env.
            let node = try SystemdNode(dir: cluster.dir + "/sd", host: hosts[0], binary: try twillBinary())
            defer { node.stop() }
            let unit = try String(contentsOfFile: BootstrapScriptTests.repo + "/deploy/systemd/twill.service", encoding: .utf8)
            try node.write(unit, to: "/etc/systemd/system/twill.service")
            try node.write(
                """
                FLANNELD_ETCD_ENDPOINTS=\(cluster.etcdEndpoint)
                FLANNELD_IFACE=eth0
                FLANNELD_IP_MASQ=true
                FLANNELD_IPTABLES_RESYNC=1
                FLANNELD_WIREGUARD_ENGINE=userspace
                FLANNELD_LOG_LEVEL=debug

                """, to: "/etc/twill/twill.env")
            try node.systemctl("daemon-reload")
            try node.systemctl("start", "twill")
            let subnet0 = { () -> String? in
                guard let env = try? node.exec(["cat", "/run/flannel/subnet.env"]),
                    let line = env.split(separator: "\n").first(where: { $0.hasPrefix("FLANNEL_SUBNET=") })
                else { return nil }
                return String(line.dropFirst("FLANNEL_SUBNET=".count)).replacingOccurrences(of: ".1/24", with: ".0/24")
            }
            #expect(await eventually(timeout: .seconds(30)) { subnet0() != nil && cluster.subnet(1) != nil }, "\(node.journal("twill"))")
            guard let s0 = subnet0(), let s1 = cluster.subnet(1) else { return }
            try cluster.addBridge(0, subnet: s0)
            try cluster.addBridge(1, subnet: s1)
            let pods = [s0, s1].map(TestCluster.gateway)
            guard hosts[0].pingEventually(pods[1], from: pods[0], attempts: 10) else {
                Issue.record("no overlay path before the restart\n\(node.journal("twill"))\n\(cluster.agentLog(1))")
                return
            }
            let kept = try node.systemctl("show", "twill", "-p", "NFileDescriptorStore")
            #expect(kept.trimmingCharacters(in: .whitespacesAndNewlines) == "NFileDescriptorStore=2", "\(kept)")
            let pings = [
                try AgentProbe.Ping(
                    from: hosts[0], source: pods[0], to: pods[1], interval: 0.02, count: 300, logPath: cluster.dir + "/ping-out.log"),
                try AgentProbe.Ping(
                    from: hosts[1], source: pods[1], to: pods[0], interval: 0.02, count: 300, logPath: cluster.dir + "/ping-in.log"),
            ]
            try await Task.sleep(for: .seconds(1))
            let clock = ContinuousClock()
            let before = clock.now
            try node.systemctl("restart", "twill")
            let restarted = clock.now - before
            for (ping, what) in zip(pings, ["h1 pod -> h2 pod", "h2 pod -> h1 pod"]) {
                let result = await ping.finish(timeout: .seconds(30))
                let lost = result.map { $0.sent - $0.received }
                print(
                    "restart-loss \(backend) systemctl-restart (\(restarted)) \(what): \(lost.map(String.init) ?? "?") lost of \(result?.sent ?? 0) at 20 ms"
                )
                #expect(
                    lost == 0,
                    "\(backend) \(what) across systemctl restart: \(String(describing: result))\n\(ping.log)\n\(node.journal("twill"))")
            }
            let journal = node.journal("twill")
            #expect(journal.contains("took over 1 queue(s)"), "\(journal)")
            if backend == "wireguard" { #expect(journal.contains("resuming the previous run's wireguard sessions"), "\(journal)") }
        }
    }

    /// A start on state an earlier run left wrong repairs exactly what is wrong: a vxlan device
    /// with another port is replaced, one with another MTU only changed, a stale route of Twill's
    /// goes, a missing jump comes back; the right routes are never removed.
    @Test func startRepairsExactlyWhatIsWrong() async throws {
        try await withCluster(hosts: 2, underlay: "203.0.113") { cluster in
            guard let subnets = try await Self.startCluster(cluster, backend: "vxlan") else { return }
            let hosts = cluster.hosts
            #expect(cluster.stopAgent(0) == 0)
            let peerRoute = try hosts[0].ip("route", "show", subnets[1])
            // Wrong while stopped: the MTU, a stale Twill route, a missing FORWARD jump.
            try hosts[0].ip("link", "set", "flannel.1", "mtu", "1300")
            try hosts[0].ip("route", "add", "198.18.99.0/24", "via", "203.0.113.2", "dev", "eth0", "proto", "84")
            try hosts[0].exec(
                "/usr/sbin/iptables", ["-w", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD"])
            let index = Self.ifindex(hosts[0], "flannel.1")
            let flags = Self.agentFlags("vxlan", cluster, 0)
            try cluster.startAgent(0, extra: flags.extra, environment: flags.environment)
            #expect(
                await eventually(timeout: .seconds(20)) {
                    let mtu = (try? hosts[0].ip("link", "show", "flannel.1"))?.contains("mtu 1450") == true
                    let stale = (try? hosts[0].ip("route", "show", "198.18.99.0/24")) ?? "x"
                    let jump = ((try? hosts[0].exec("/usr/sbin/iptables", ["-w", "-S", "FORWARD"])) ?? "").contains("-j FLANNEL-FWD")
                    return mtu && stale.isEmpty && jump
                }, "\(cluster.agentLog(0))")
            // The MTU was changed on the same device; the peer's route is as it was.
            #expect(Self.ifindex(hosts[0], "flannel.1") == index)
            #expect(try hosts[0].ip("route", "show", subnets[1]) == peerRoute)
            #expect(cluster.agentLog(0).contains("repaired iptables rules"))
            #expect(!cluster.agentLog(0).contains("created vxlan device"))

            // A device with other settings (another UDP port) is replaced, and traffic flows again.
            #expect(cluster.stopAgent(0) == 0)
            try hosts[0].ip("link", "del", "flannel.1")
            try hosts[0].ip(
                "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "9999", "local", "203.0.113.1", "dev", "eth0")
            try cluster.startAgent(0, extra: flags.extra, environment: flags.environment)
            #expect(
                await eventually(timeout: .seconds(20)) {
                    ((try? hosts[0].ip("-d", "link", "show", "flannel.1")) ?? "").contains("dstport 8472")
                        && cluster.reaches(0, 1, attempts: 1)
                }, "\(cluster.agentLog(0))")
            #expect(cluster.agentLog(0).contains("replacing an incompatible device"))
        }
    }

    /// `twill cleanup`: after a stop, no route of protocol 84, no Twill device, chain or table
    /// is left; a foreign route, another tool's chain and a foreign device named like Twill's
    /// stay. It refuses while an agent runs.
    @Test func cleanupRemovesWhatIsTwillsOnly() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            guard try await Self.startCluster(cluster, backend: "vxlan") != nil else { return }
            let h = cluster.hosts[0]
            try h.ip("route", "add", "198.18.250.0/24", "via", "198.51.100.2", "dev", "eth0")
            try h.exec("/usr/sbin/iptables", ["-w", "-N", "OTHER-TOOL"])
            try h.ip("link", "add", "flannel.7", "type", "bridge")
            #expect(throws: (any Error).self) { try cluster.cleanup(0) }
            #expect(cluster.stopAgent(0) == 0)
            // Leftovers of other backends' runs: the udp TUN and the wireguard TUN.
            try h.ip("tuntap", "add", "dev", "twill0", "mode", "tun")
            try h.ip("tuntap", "add", "dev", "flannel-wg", "mode", "tun")
            try h.exec("/usr/sbin/nft", ["add", "table", "ip", "flannel-ipv4"])
            let out = try cluster.cleanup(0)
            #expect(out.contains("removed device flannel.1"), "\(out)")
            #expect(try h.ip("route", "show", "proto", "84").isEmpty)
            #expect(try h.ip("-6", "route", "show", "proto", "84").isEmpty)
            let links = try h.ip("-o", "link", "show")
            for name in ["flannel.1", "twill0", "flannel-wg"] { #expect(!links.contains(" \(name):"), "\(name) left: \(links)") }
            #expect(links.contains(" flannel.7:"), "a bridge named like a vxlan device is not Twill's")
            let rules = try h.exec("/usr/sbin/iptables-save", [])
            #expect(!rules.contains("FLANNEL"), "\(rules)")
            #expect(rules.contains(":OTHER-TOOL"))
            #expect(!(try h.exec("/usr/sbin/nft", ["list", "tables"])).contains("flannel"))
            #expect(try h.ip("route", "show", "198.18.250.0/24").contains("via 198.51.100.2"))
        }
    }

    /// `--release-on-exit` gives the subnet back and tears the data path down with it.
    @Test func releaseOnExitTearsDown() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config("vxlan")])
            for i in 0..<2 { try cluster.startAgent(i, extra: ["--ip-masq", "--release-on-exit"]) }
            #expect(
                await eventually(timeout: .seconds(20)) {
                    cluster.subnet(0) != nil && cluster.subnet(1) != nil
                        && ((try? cluster.hosts[0].ip("route", "show", "proto", "84")) ?? "").contains("flannel.1")
                })
            let subnet = try #require(cluster.subnet(0))
            #expect(cluster.stopAgent(0) == 0)
            let h = cluster.hosts[0]
            #expect(try h.ip("route", "show", "proto", "84").isEmpty)
            #expect((try? h.ip("link", "show", "flannel.1")) == nil)
            #expect(!(try h.exec("/usr/sbin/iptables-save", [])).contains("FLANNEL"))
            #expect(cluster.value(ofKey: cluster.leaseKey(subnet)) == nil)
        }
    }
}

private func zip3<A, B, C>(_ a: [A], _ b: [B], _ c: [C]) -> [(A, B, C)] {
    zip(zip(a, b), c).map { ($0.0, $0.1, $1) }
}
