import Foundation
import Testing
import TwillTestSupport

/// The binary invoked as `flanneld` with flannel's documented command lines, nftables mode,
/// and `twill status`, on namespace hosts with a real etcd and the real kernel.
@Suite(.serialized) struct FlanneldEndToEndTests {
    /// A veth pair `alt0` between two hosts, on a second underlay: 203.0.113.<a> and .<b>.
    static func link(_ x: TestNamespace, _ a: Int, _ y: TestNamespace, _ b: Int, name: String = "alt0") throws {
        try x.ip("link", "add", name, "type", "veth", "peer", "name", name, "netns", y.name)
        try x.ip("addr", "add", "203.0.113.\(a)/24", "dev", name)
        try y.ip("addr", "add", "203.0.113.\(b)/24", "dev", name)
        try x.ip("link", "set", name, "up")
        try y.ip("link", "set", name, "up")
    }

    /// `ip -j -d link show NAME` in `ns`, the link's info_data (vxlan settings).
    static func vxlanInfo(_ ns: TestNamespace, _ name: String) -> [String: Any]? {
        guard let text = try? ns.ip("-j", "-d", "link", "show", name),
            let links = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]],
            let info = links.first?["linkinfo"] as? [String: Any]
        else { return nil }
        var data = info["info_data"] as? [String: Any] ?? [:]
        data["mtu"] = links.first?["mtu"]
        return data
    }

    static func leaseValue(_ cluster: TestCluster, prefix: String, _ subnet: String) -> String {
        cluster.value(ofKey: prefix + "/subnets/" + subnet.replacingOccurrences(of: "/", with: "-")) ?? ""
    }

    /// Runs the `flanneld` link in `ns` to completion.
    static func flanneld(_ cluster: TestCluster, _ ns: TestNamespace, _ arguments: [String]) throws -> (
        status: Int32, stdout: String, stderr: String
    ) {
        try runCapturing(
            "/usr/sbin/ip", ["netns", "exec", ns.name, try cluster.flanneldLink()] + arguments,
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"])
    }

    /// flannel's README and Documentation command lines (etcd prefix, interface selection,
    /// masquerade, klog verbosity) and an env file like flanneld's systemd units read, on two
    /// hosts whose overlay runs over a second link chosen with -iface-can-reach.
    @Test func documentedCommandLinesRunUnchanged() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            let hosts = cluster.hosts
            try Self.link(hosts[0], 1, hosts[1], 2)
            try cluster.etcdctl([
                "put", "/vxlan/network/config",
                #"{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan","MTU":1400,"GBP":true,"Learning":true}}"#,
            ])

            // kube-flannel.yml's args: a clear refusal, not a parse error.
            let kube = try Self.flanneld(cluster, hosts[0], ["--ip-masq", "--kube-subnet-mgr"])
            #expect(kube.status == 1)
            #expect(kube.stderr.contains("-kube-subnet-mgr is not supported") && kube.stderr.contains("etcd"), "\(kube.stderr)")
            let unknown = try Self.flanneld(cluster, hosts[0], ["-etcd-endpoints=\(cluster.etcdEndpoint)", "--no-such-flag"])
            #expect(unknown.status != 0 && unknown.stderr.contains("flag provided but not defined: -no-such-flag"), "\(unknown.stderr)")
            let version = try Self.flanneld(cluster, hosts[0], ["--version"])
            #expect(version.status == 0 && version.stderr.contains("flanneld-compatible"))

            // Documentation/running.md style, single dashes and `=`.
            try cluster.startFlanneld(
                0,
                [
                    "-etcd-endpoints=\(cluster.etcdEndpoint)", "-etcd-prefix=/vxlan/network", "-iface-can-reach=203.0.113.2",
                    "-ip-masq", "-v=2", "-subnet-file=\(cluster.subnetFile(0))", "-ip-blackhole-route",
                ])
            // An env file (FLANNELD_*) with double-dash flags and `-v 10`.
            try cluster.startFlanneld(
                1, ["--ip-masq", "-v", "10"],
                environment: [
                    "FLANNELD_ETCD_ENDPOINTS": cluster.etcdEndpoint, "FLANNELD_ETCD_PREFIX": "/vxlan/network",
                    "FLANNELD_IFACE_CAN_REACH": "203.0.113.1", "FLANNELD_SUBNET_FILE": cluster.subnetFile(1),
                ])
            for i in 0..<2 {
                #expect(await eventually(timeout: .seconds(30)) { cluster.subnet(i) != nil }, "host \(i + 1): \(cluster.agentLog(i))")
            }
            guard let s0 = cluster.subnet(0), let s1 = cluster.subnet(1) else { return }
            // Backend.MTU 1400, less vxlan's 50, in subnet.env and on the device; GBP and Learning on it.
            for i in 0..<2 {
                let env = (try? String(contentsOfFile: cluster.subnetFile(i), encoding: .utf8)) ?? ""
                #expect(env.contains("FLANNEL_MTU=1350\n") && env.contains("FLANNEL_IPMASQ=true\n"), "\(env)")
                let info = Self.vxlanInfo(hosts[i], "flannel.1") ?? [:]
                #expect(info["mtu"] as? Int == 1350, "\(info)")
                #expect(info["gbp"] as? Bool == true && info["learning"] as? Bool == true, "\(info)")
                // The interface the kernel uses to reach the other host's second address.
                #expect(info["link"] as? String == "alt0" || (info["local"] as? String)?.hasPrefix("203.0.113.") == true, "\(info)")
            }
            #expect(Self.leaseValue(cluster, prefix: "/vxlan/network", s0).contains(#""PublicIP":"203.0.113.1""#))
            #expect(Self.leaseValue(cluster, prefix: "/vxlan/network", s1).contains(#""PublicIP":"203.0.113.2""#))
            try cluster.addBridge(0, subnet: s0)
            try cluster.addBridge(1, subnet: s1)
            #expect(await eventually(timeout: .seconds(15)) { cluster.reaches(0, 1, attempts: 1) }, "\(cluster.agentLog(0))")
            #expect(cluster.reaches(1, 0))
            // -v 10 is trace logging; -v=2 is flanneld's everyday info.
            #expect(cluster.agentLog(1).contains(" trace ") || cluster.agentLog(1).contains(" debug "))
            #expect(!cluster.agentLog(0).contains(" debug "))
            // -ip-blackhole-route: the subnet's blackhole behind the bridge's own route.
            let blackhole = { (try? hosts[0].ip("route", "show", "type", "blackhole")) ?? "" }
            #expect(blackhole().contains("blackhole \(s0) proto 84 metric 4294967295"), "\(blackhole())")
            #expect(((try? hosts[1].ip("route", "show", "type", "blackhole")) ?? "").isEmpty)
            #expect(try hosts[0].ip("route", "get", s0.replacingOccurrences(of: ".0/24", with: ".77")).contains("twb0"))
            try hosts[0].ip("link", "del", "twb0")
            // Without the bridge the blackhole is what covers the subnet (and not the default route).
            let covering = try hosts[0].ip("route", "show", "match", s0.replacingOccurrences(of: ".0/24", with: ".77"))
            #expect(covering.contains("blackhole \(s0)") && !covering.contains("twb0"), "\(covering)")
            // A stop keeps it with the rest of the data path; `twill cleanup` removes it.
            #expect(cluster.stopAgent(0) == 0)
            #expect(blackhole().contains("blackhole \(s0)"), "\(blackhole())")
            try cluster.cleanup(0)
            #expect(blackhole().isEmpty, "left behind: \(blackhole())")
        }
    }

    /// Starts a UDP listener in `ns` on `address`:9999 that writes the first sender's address
    /// to a file, then sends from `source` in `sender` until it arrives (bounded); returns the
    /// source address the listener saw.
    static func sourceSeen(
        _ cluster: TestCluster, listener ns: TestNamespace, at address: String,
        sender: TestNamespace, from source: String
    ) async throws -> String? {
        let file = cluster.dir + "/seen-\(UUID().uuidString)"
        let listen = try ChildProcess(
            "/usr/sbin/ip",
            [
                "netns", "exec", ns.name, "/usr/bin/python3", "-c",
                """
                import socket, sys
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((sys.argv[1], 9999))
                s.settimeout(20)
                d, a = s.recvfrom(100)
                open(sys.argv[2] + ".tmp", "w").write(a[0])
                import os; os.rename(sys.argv[2] + ".tmp", sys.argv[2])
                """, address, file,
            ], logPath: file + ".log")
        defer { listen.stop(signal: SIGKILL) }
        let seen = await eventually(timeout: .seconds(10)) {
            _ = try? run(
                "/usr/sbin/ip",
                [
                    "netns", "exec", sender.name, "/usr/bin/python3", "-c",
                    """
                    import socket, sys
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind((sys.argv[1], 0))
                    s.sendto(b"x", (sys.argv[2], 9999))
                    """, source, address,
                ])
            return FileManager.default.fileExists(atPath: file)
        }
        guard seen else { return nil }
        return try String(contentsOfFile: file, encoding: .utf8)
    }

    static func iptablesChains(_ ns: TestNamespace) -> String {
        ((try? ns.exec("/usr/sbin/iptables", ["-w", "-t", "nat", "-S"])) ?? "")
            + ((try? ns.exec("/usr/sbin/iptables", ["-w", "-S"])) ?? "")
    }

    static func nftTables(_ ns: TestNamespace) -> String { (try? ns.exec("/usr/sbin/nft", ["list", "tables"])) ?? "" }

    /// `EnableNFTables`: flannel's table does what the iptables rules do (an outside host sees
    /// the node's address, pod to pod keeps pod addresses), no iptables chains, a live switch
    /// and a switch across a restart leave one set of rules; a clean stop keeps them and
    /// `twill cleanup` leaves none.
    @Test func nftablesMode() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            try await withNamespaces(["outside"]) { (outside: [TestNamespace]) async throws in
                let hosts = cluster.hosts
                try Self.link(hosts[0], 1, outside[0], 9, name: "ext0")
                let config = { (nft: Bool) in #"{"Network":"198.18.0.0/16","EnableNFTables":\#(nft),"Backend":{"Type":"host-gw"}}"# }
                try cluster.etcdctl(["put", "/coreos.com/network/config", config(true)])
                for i in 0..<2 { try cluster.startAgent(i, extra: ["--ip-masq", "--iptables-resync", "1"]) }
                for i in 0..<2 {
                    #expect(await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }, "host \(i + 1): \(cluster.agentLog(i))")
                }
                guard let s0 = cluster.subnet(0), let s1 = cluster.subnet(1) else { return }
                try cluster.addBridge(0, subnet: s0)
                try cluster.addBridge(1, subnet: s1)
                let (pod0, pod1) = (TestCluster.gateway(s0), TestCluster.gateway(s1))
                #expect(await eventually(timeout: .seconds(10)) { Self.nftTables(hosts[0]).contains("table ip flannel-ipv4") })
                #expect(!Self.iptablesChains(hosts[0]).contains("FLANNEL"), "\(Self.iptablesChains(hosts[0]))")
                // A pod reaching outside the overlay leaves with the node's address; pod to pod keeps its own.
                #expect(
                    try await Self.sourceSeen(cluster, listener: outside[0], at: "203.0.113.9", sender: hosts[0], from: pod0)
                        == "203.0.113.1")
                #expect(await eventually(timeout: .seconds(10)) { cluster.reaches(0, 1, attempts: 1) })
                #expect(try await Self.sourceSeen(cluster, listener: hosts[1], at: pod1, sender: hosts[0], from: pod0) == pod0)
                // The table is kept: flushed by hand, it is back within a resync.
                try hosts[0].exec("/usr/sbin/nft", ["flush", "chain", "ip", "flannel-ipv4", "postrtg"])
                #expect(
                    await eventually(timeout: .seconds(10)) {
                        ((try? hosts[0].exec("/usr/sbin/nft", ["list", "chain", "ip", "flannel-ipv4", "postrtg"])) ?? "").contains(
                            "masquerade")
                    })

                // A live switch to iptables: the table goes, flannel's chains come.
                try cluster.etcdctl(["put", "/coreos.com/network/config", config(false)])
                #expect(
                    await eventually(timeout: .seconds(20)) {
                        !Self.nftTables(hosts[0]).contains("flannel") && Self.iptablesChains(hosts[0]).contains("-A FLANNEL-POSTRTG")
                    }, "\(Self.nftTables(hosts[0]))\n\(Self.iptablesChains(hosts[0]))\n\(cluster.agentLog(0))")
                #expect(
                    try await Self.sourceSeen(cluster, listener: outside[0], at: "203.0.113.9", sender: hosts[0], from: pod0)
                        == "203.0.113.1")

                // Killed in iptables mode, restarted in nftables mode: the chains go.
                cluster.stopAgent(0, signal: SIGKILL)
                try cluster.etcdctl(["put", "/coreos.com/network/config", config(true)])
                try cluster.startAgent(0, extra: ["--ip-masq", "--iptables-resync", "1"])
                #expect(
                    await eventually(timeout: .seconds(20)) {
                        Self.nftTables(hosts[0]).contains("table ip flannel-ipv4") && !Self.iptablesChains(hosts[0]).contains("FLANNEL")
                    }, "\(Self.nftTables(hosts[0]))\n\(Self.iptablesChains(hosts[0]))\n\(cluster.agentLog(0))")
                // A clean stop keeps the table (a stop is no outage); `twill cleanup` removes it.
                #expect(cluster.stopAgent(0) == 0)
                #expect(Self.nftTables(hosts[0]).contains("table ip flannel-ipv4"), "\(Self.nftTables(hosts[0]))")
                try cluster.cleanup(0)
                #expect(!Self.nftTables(hosts[0]).contains("flannel"), "\(Self.nftTables(hosts[0]))")
                #expect(!Self.iptablesChains(hosts[0]).contains("FLANNEL"))
            }
        }
    }

    /// `twill status` against running agents with peers: the table, the JSON, and --watch.
    @Test func statusShowsThePeers() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            let hosts = cluster.hosts
            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"udp"}}"#])
            for i in 0..<2 { try cluster.startAgent(i, extra: ["--healthz-ip", "127.0.0.1", "--healthz-port", "8471"]) }
            for i in 0..<2 {
                #expect(await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }, "host \(i + 1): \(cluster.agentLog(i))")
            }
            guard let s0 = cluster.subnet(0), let s1 = cluster.subnet(1) else { return }
            try cluster.addBridge(0, subnet: s0)
            try cluster.addBridge(1, subnet: s1)
            #expect(await eventually(timeout: .seconds(15)) { cluster.reaches(0, 1, attempts: 1) })
            let twill = try twillBinary()
            let status = { (extra: [String]) in
                try runCapturing(
                    "/usr/sbin/ip", ["netns", "exec", hosts[0].name, twill, "status", "--endpoint", "http://127.0.0.1:8471"] + extra)
            }
            let table = try status([])
            #expect(table.status == 0, "\(table.stderr)")
            #expect(table.stdout.contains("backend udp on twill0"), "\(table.stdout)")
            #expect(table.stdout.contains("lease    \(s0)"))
            let row = table.stdout.split(separator: "\n").first { $0.hasPrefix(s1) } ?? ""
            #expect(row.contains("198.51.100.2") && row.contains("udp") && row.contains("routed"), "\(table.stdout)")
            let json = try status(["--json"])
            let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            let peers = object?["peers"] as? [[String: Any]] ?? []
            #expect(peers.count == 1 && peers.first?["subnet"] as? String == s1, "\(json.stdout)")
            #expect((peers.first?["txPackets"] as? Int ?? 0) > 0 && (peers.first?["rxPackets"] as? Int ?? 0) > 0, "\(json.stdout)")
            #expect((object?["etcd"] as? [[String: Any]])?.first?["inUse"] as? Bool == true)
            // --watch redraws until stopped.
            let watch = try ChildProcess(
                "/usr/sbin/ip",
                [
                    "netns", "exec", hosts[0].name, twill, "status", "--endpoint", "http://127.0.0.1:8471",
                    "--watch", "--interval", "0.2",
                ], logPath: cluster.dir + "/watch.log")
            #expect(await eventually(timeout: .seconds(10)) { watch.log.components(separatedBy: "SUBNET").count > 3 }, "\(watch.log)")
            watch.stop()
            // No agent there: a message that says what to check.
            let none = try runCapturing(
                "/usr/sbin/ip", ["netns", "exec", hosts[0].name, twill, "status", "--endpoint", "http://127.0.0.1:8472"])
            #expect(none.status != 0 && none.stderr.contains("is the agent running with --healthz-port?"), "\(none.stderr)")
        }
    }
}
