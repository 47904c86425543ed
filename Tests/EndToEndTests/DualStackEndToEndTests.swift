import Foundation
import Testing
import TwillTestSupport

/// Dual stack on namespace hosts with a real etcd: IPv4 and IPv6 overlays side by side, over a
/// segment with both underlays (198.51.100.0/24 and 2001:db8:1::/64), flannel's formats.
@Suite(.serialized) struct DualStackEndToEndTests {
    static let config = #"{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","Backend":{"Type":"BACKEND"}}"#

    static func routes6(_ host: TestNamespace) -> String { (try? host.ip("-6", "route", "show", "proto", "84")) ?? "" }
    static func routes4(_ host: TestNamespace) -> String { (try? host.ip("route", "show", "proto", "84")) ?? "" }

    /// Twill's IPv6 route destinations on a host.
    static func owned6(_ host: TestNamespace) -> Set<String> {
        Set(routes6(host).split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
    }

    static func owned4(_ host: TestNamespace) -> Set<String> {
        Set(routes4(host).split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
    }

    /// A bridge standing in for docker0: the first address of each subnet.
    static func addBridge(_ h: TestNamespace, _ subnet: String, _ subnet6: String) throws {
        try h.ip("link", "add", "twb0", "type", "bridge")
        try h.ip("addr", "add", "\(TestCluster.gateway(subnet))/24", "dev", "twb0")
        try h.ip("addr", "add", "\(TestCluster.gateway6(subnet6))/64", "dev", "twb0", "nodad")
        try h.ip("link", "set", "twb0", "up")
    }

    static func ping6(_ h: TestNamespace, _ to: String, from: String, attempts: Int = 5) -> Bool {
        for _ in 0..<attempts where (try? h.exec("/usr/bin/ping", ["-6", "-n", "-c1", "-W2", "-I", from, to])) != nil { return true }
        return false
    }

    /// A byte-exact TCP transfer of `size` bytes from `from`'s address `src` to `dst` on `to`.
    static func transfer(_ cluster: TestCluster, from: Int, src: String, to: Int, dst: String, size: Int) async throws -> (String, String) {
        let hosts = cluster.net.hosts
        let sink = try ChildProcess(
            "/usr/sbin/ip", ["netns", "exec", hosts[to].name, "/usr/bin/python3", "-c", TCPTransferScripts.sink, dst, "5001"],
            logPath: cluster.dir + "/sink.\(Int.random(in: 0..<1_000_000)).log")
        defer { sink.stop(signal: SIGKILL) }
        let sent = try hosts[from].exec("/usr/bin/python3", ["-c", TCPTransferScripts.source, src, dst, "5001", "\(size)"])
        _ = await eventually(timeout: .seconds(30)) { !sink.isRunning }
        return (sent.trimmingCharacters(in: .whitespacesAndNewlines), sink.log.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test(
        "three dual-stack nodes: both families routed pair by pair, TCP over IPv6 byte-identical, flannel's literal lease JSON, ip6tables masquerade, stale IPv6 state removed",
        arguments: ["host-gw", "vxlan", "udp"])
    func threeNodes(backend: String) async throws {
        try await withCluster(hosts: 3, underlay: "198.51.100", ipv6: true) { cluster in
            let hosts = cluster.net.hosts
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config.replacingOccurrences(of: "BACKEND", with: backend)])
            // No --public-ipv6: each node's is the interface's own global IPv6 address.
            let status = ["--healthz-port", "9100", "--healthz-ip", "127.0.0.1"]
            for i in 0..<3 { try cluster.startAgent(i, extra: status + (i == 0 ? ["--ip-masq", "--iptables-resync", "1"] : [])) }
            for i in 0..<3 {
                let ok = await eventually(timeout: .seconds(20)) { cluster.subnet6(i) != nil }
                #expect(ok, "agent \(i + 1) wrote no IPv6 subnet: \(cluster.agentLog(i))")
                if !ok { return }
            }
            let subnets = (0..<3).map { cluster.subnet($0) ?? "" }
            let subnets6 = (0..<3).map { cluster.subnet6($0) ?? "" }
            #expect(Set(subnets6).count == 3)
            #expect(subnets6.allSatisfy { $0.hasPrefix("2001:db8:100:") })

            // subnet.env: flannel's lines in flannel's order.
            let env = try String(contentsOfFile: cluster.subnetFile(0), encoding: .utf8)
            let mtu = ["vxlan": 1430, "udp": 1472][backend] ?? 1500
            #expect(
                env == """
                    FLANNEL_NETWORK=198.18.0.0/16
                    FLANNEL_SUBNET=\(TestCluster.gateway(subnets[0]))/24
                    FLANNEL_IPV6_NETWORK=2001:db8:100::/48
                    FLANNEL_IPV6_SUBNET=\(TestCluster.gateway6(subnets6[0]))/64
                    FLANNEL_MTU=\(mtu)
                    FLANNEL_IPMASQ=true

                    """)
            // The lease: flannel's dual-stack key, PublicIPv6 auto-detected, BackendV6Data for vxlan.
            let v4Part = subnets[0].replacingOccurrences(of: "/", with: "-")
            let v6Part = subnets6[0].replacingOccurrences(of: "/", with: "-")
            let key = "/coreos.com/network/subnets/\(v4Part)&\(v6Part)"
            let value = try cluster.etcdctl(["get", key, "--print-value-only"]).trimmingCharacters(in: .whitespacesAndNewlines)
            // flannel's udp leases carry no BackendType.
            let typed = backend == "udp" ? "}" : #","BackendType":"\#(backend)""#
            #expect(value.hasPrefix(#"{"PublicIP":"198.51.100.1","PublicIPv6":"2001:db8:1::1""# + typed), "\(key): \(value)")
            if backend == "vxlan" {
                let mac6 =
                    try hosts[0].ip("link", "show", "flannel-v6.1").split(separator: " ").drop { $0 != "link/ether" }.dropFirst().first.map(
                        String.init) ?? "?"
                #expect(value.hasSuffix(#","BackendV6Data":{"VNI":1,"VtepMAC":"\#(mac6)"}}"#), "\(value)")
                let dev6 = try hosts[0].ip("-d", "link", "show", "flannel-v6.1")
                #expect(dev6.contains("vxlan id 1") && dev6.contains("local 2001:db8:1::1") && dev6.contains("mtu 1430"), "\(dev6)")
                #expect(try hosts[0].ip("-6", "addr", "show", "dev", "flannel-v6.1").contains("\(subnets6[0].dropLast(3))/128"))
            }

            for (i, h) in hosts.enumerated() { try Self.addBridge(h, subnets[i], subnets6[i]) }
            // udp routes each whole network through its TUN; the others, each peer's subnet.
            let peerRoutes = backend != "udp"
            let wanted = { (i: Int) -> Bool in
                peerRoutes
                    ? Self.owned6(hosts[i]).count == 2 && Self.owned4(hosts[i]).count == 2
                    : Self.owned6(hosts[i]) == ["2001:db8:100::/48"] && Self.owned4(hosts[i]) == ["198.18.0.0/16"]
            }
            for i in 0..<3 {
                #expect(
                    await eventually(timeout: .seconds(15)) { wanted(i) },
                    "host \(i + 1) routes:\n\(Self.routes4(hosts[i]))\n\(Self.routes6(hosts[i]))\n\(cluster.agentLog(i))")
                for j in 0..<3 where j != i {
                    #expect(
                        hosts[i].pingEventually(TestCluster.gateway(subnets[j]), from: TestCluster.gateway(subnets[i])),
                        "\(backend): h\(i + 1) cannot reach h\(j + 1)'s \(subnets[j])")
                    #expect(
                        Self.ping6(hosts[i], TestCluster.gateway6(subnets6[j]), from: TestCluster.gateway6(subnets6[i])),
                        "\(backend): h\(i + 1) cannot reach h\(j + 1)'s \(subnets6[j])")
                }
            }
            if backend == "host-gw" {
                #expect(Self.routes6(hosts[0]).contains("\(subnets6[1]) via 2001:db8:1::2 dev eth0"), "\(Self.routes6(hosts[0]))")
            } else if backend == "udp" {
                #expect(Self.routes6(hosts[0]).contains("2001:db8:100::/48 dev twill0"), "\(Self.routes6(hosts[0]))")
                #expect(try hosts[0].ip("-6", "addr", "show", "dev", "twill0").contains("\(subnets6[0].dropLast(3))/128"))
            } else {
                #expect(
                    Self.routes6(hosts[0]).contains("\(subnets6[1]) via \(subnets6[1].dropLast(3)) dev flannel-v6.1"),
                    "\(Self.routes6(hosts[0]))")
                #expect(try hosts[0].exec("/usr/sbin/bridge", ["fdb", "show", "dev", "flannel-v6.1"]).contains("dst 2001:db8:1::2"))
            }

            // 20 MB over TCP over IPv6, byte for byte.
            let (sent, received) = try await Self.transfer(
                cluster, from: 0, src: TestCluster.gateway6(subnets6[0]), to: 1,
                dst: TestCluster.gateway6(subnets6[1]), size: 20 << 20)
            #expect(sent.hasPrefix("\(20 << 20) ") && sent == received, "sent \(sent) received \(received)")

            // --ip-masq: flannel's rules in ip6tables too, restored when flushed by hand.
            let masq6 = { (try? hosts[0].exec("/usr/sbin/ip6tables", ["-w", "-t", "nat", "-S", "FLANNEL-POSTRTG"])) ?? "" }
            #expect(masq6().contains("-s \(subnets6[0]) -d 2001:db8:100::/48") && masq6().contains("! -d ff00::/8"), "\(masq6())")
            #expect(((try? hosts[0].exec("/usr/sbin/ip6tables", ["-w", "-S", "FLANNEL-FWD"])) ?? "").contains("-s 2001:db8:100::/48"))
            try hosts[0].exec("/usr/sbin/ip6tables", ["-w", "-t", "nat", "-F", "FLANNEL-POSTRTG"])
            #expect(await eventually(timeout: .seconds(10)) { masq6().contains("MASQUERADE") })

            // A peer written by hand in flannel's literal dual-stack JSON is routed for both families.
            var literal = #"{"PublicIP":"198.51.100.3","PublicIPv6":"2001:db8:1::3","BackendType":"\#(backend)""#
            if backend == "vxlan" {
                literal +=
                    #","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:77:04"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:77:06"}"#
            }
            literal += "}"
            // A subnet of each family no agent holds (theirs are random).
            let hand = (77...99).first { !subnets.contains("198.18.\($0).0/24") && !subnets6.contains("2001:db8:100:\($0)::/64") } ?? 77
            let hand4 = "198.18.\(hand).0"
            let hand6 = "2001:db8:100:\(hand)::"
            let handKey = "/coreos.com/network/subnets/\(hand4)-24&\(hand6)-64"
            try cluster.etcdctl(["put", handKey, literal.replacingOccurrences(of: #","BackendType":"udp""#, with: "")])
            for i in 0..<2 where backend == "udp" {
                // The engine's peers are what the node status shows.
                #expect(
                    await eventually(timeout: .seconds(10)) {
                        let s = (try? hosts[i].exec("/usr/bin/curl", ["-s", "http://127.0.0.1:9100/status"])) ?? ""
                        return s.contains("\"\(hand6)\\/64\"") || s.contains("\"\(hand6)/64\"")
                    }, "host \(i + 1): \((try? hosts[i].exec("/usr/bin/curl", ["-s", "http://127.0.0.1:9100/status"])) ?? "")")
            }
            for i in 0..<2 where peerRoutes {
                #expect(
                    await eventually(timeout: .seconds(10)) {
                        Self.owned6(hosts[i]).contains("\(hand6)/64") && Self.owned4(hosts[i]).contains("\(hand4)/24")
                    }, "host \(i + 1): \(Self.routes4(hosts[i]))\n\(Self.routes6(hosts[i]))")
            }
            if backend == "host-gw" {
                #expect(Self.routes6(hosts[0]).contains("\(hand6)/64 via 2001:db8:1::3 dev eth0"))
            } else if backend == "vxlan" {
                #expect(
                    try hosts[0].ip("-6", "neigh", "show", "dev", "flannel-v6.1").contains("\(hand6) lladdr 02:00:00:00:77:06 PERMANENT"))
                #expect(
                    try hosts[0].exec("/usr/sbin/bridge", ["fdb", "show", "dev", "flannel-v6.1"]).contains(
                        "02:00:00:00:77:06 dst 2001:db8:1::3"))
            }
            try cluster.etcdctl(["del", handKey])

            // `twill leases list` shows both families.
            let binary = try twillBinary()
            let list = try cluster.net.switchNamespace.exec(binary, ["leases", "list", "--etcd-endpoints", cluster.etcdEndpoint])
            #expect(list.contains("IPV6-SUBNET") && list.contains(subnets6[2]) && list.contains("2001:db8:1::3"), "\(list)")

            // Host 3 dies hard and its lease is deleted: its IPv4 and IPv6 state goes from the others.
            cluster.stopAgent(2, signal: SIGKILL)
            try cluster.etcdctl(["del", "--prefix", cluster.leaseKey(subnets[2])])
            for i in 0..<2 where backend == "udp" {
                #expect(
                    await eventually(timeout: .seconds(10)) {
                        let s = (try? hosts[i].exec("/usr/bin/curl", ["-s", "http://127.0.0.1:9100/status"])) ?? ""
                        return s.contains("\"peers\"") && !s.contains(String(subnets6[2].dropLast(3)))
                    })
                // Traffic to its IPv6 subnet is now answered with ICMPv6 "no route" by the engine.
                let out =
                    (try? hosts[i].exec(
                        "/bin/sh",
                        [
                            "-c",
                            "ping -6 -n -c1 -W2 -I \(TestCluster.gateway6(subnets6[i])) \(TestCluster.gateway6(subnets6[2])) 2>&1; true",
                        ])) ?? ""
                #expect(out.contains("Destination unreachable: No route"), "\(out)")
            }
            for i in 0..<2 where peerRoutes {
                #expect(
                    await eventually(timeout: .seconds(10)) {
                        Self.owned6(hosts[i]) == [subnets6[1 - i]] && Self.owned4(hosts[i]) == [subnets[1 - i]]
                    }, "host \(i + 1) still has \(Self.routes4(hosts[i]))\n\(Self.routes6(hosts[i]))")
            }
            if backend == "vxlan" {
                #expect(try !hosts[0].ip("-6", "neigh", "show", "dev", "flannel-v6.1").contains(String(subnets6[2].dropLast(3))))
            }
            // Host 1 dies hard, its lease is deleted, a stale IPv6 route of its own is left
            // behind, and it comes back: the stale route goes, the live peer's is there.
            cluster.stopAgent(0, signal: SIGKILL)
            try cluster.etcdctl(["del", "--prefix", cluster.leaseKey(subnets[0])])
            try hosts[0].ip("-6", "route", "add", "2001:db8:100:99::/64", "via", "2001:db8:1::2", "dev", "eth0", "proto", "84")
            try cluster.startAgent(0, extra: status + ["--ip-masq", "--iptables-resync", "1"])
            #expect(
                await eventually(timeout: .seconds(20)) {
                    Self.owned6(hosts[0]) == (peerRoutes ? [subnets6[1]] : ["2001:db8:100::/48"]) && cluster.subnet6(0) != nil
                }, "host 1 after restart: \(Self.routes6(hosts[0]))\n\(cluster.agentLog(0))")
            // It keeps its subnets from subnet.env.
            #expect(cluster.subnet6(0) == subnets6[0] && cluster.subnet(0) == subnets[0])
            // A clean stop leaves the data path as it is (flanneld's way); `twill cleanup` takes
            // every IPv6 route (and the IPv6 device) away.
            #expect(cluster.stopAgent(0) == 0)
            #expect(!Self.owned6(hosts[0]).isEmpty, "\(Self.routes6(hosts[0]))")
            #expect(masq6().contains("MASQUERADE"))
            try cluster.cleanup(0)
            #expect(Self.owned6(hosts[0]).isEmpty, "\(Self.routes6(hosts[0]))")
            if backend == "vxlan" { #expect((try? hosts[0].ip("link", "show", "flannel-v6.1")) == nil) }
            #expect(!masq6().contains("MASQUERADE"))
        }
    }

    /// An IPv4 cluster turns IPv6 on and off again while running: no restart, the IPv4
    /// subnets kept, the IPv6 state made and then removed.
    @Test(
        "IPv6 turned on and off live: IPv4 subnets kept, both families routed, then the IPv6 state gone", arguments: ["host-gw", "vxlan"])
    func liveSwitch(backend: String) async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100", ipv6: true) { cluster in
            let hosts = cluster.net.hosts
            let v4Config = #"{"Network":"198.18.0.0/16","Backend":{"Type":"\#(backend)"}}"#
            try cluster.etcdctl(["put", "/coreos.com/network/config", v4Config])
            for i in 0..<2 { try cluster.startAgent(i, extra: ["--ip-masq", "--iptables-resync", "1"]) }
            for i in 0..<2 {
                #expect(await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }, "\(cluster.agentLog(i))")
            }
            let subnets = (0..<2).map { cluster.subnet($0) ?? "" }
            #expect(cluster.subnet6(0) == nil)
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config.replacingOccurrences(of: "BACKEND", with: backend)])
            for i in 0..<2 {
                #expect(await eventually(timeout: .seconds(20)) { cluster.subnet6(i) != nil }, "\(cluster.agentLog(i))")
            }
            let subnets6 = (0..<2).map { cluster.subnet6($0) ?? "" }
            #expect((0..<2).map { cluster.subnet($0) ?? "" } == subnets, "the IPv4 subnets are kept")
            let keys = try cluster.etcdctl(["get", "--prefix", "/coreos.com/network/subnets/", "--keys-only"])
            for i in 0..<2 {
                #expect(
                    keys.contains(
                        "\(subnets[i].replacingOccurrences(of: "/", with: "-"))&\(subnets6[i].replacingOccurrences(of: "/", with: "-"))"),
                    "\(keys)")
            }
            #expect(keys.split(separator: "\n").filter { !$0.isEmpty }.count == 2, "the IPv4-only keys are gone: \(keys)")
            for (i, h) in hosts.enumerated() { try Self.addBridge(h, subnets[i], subnets6[i]) }
            #expect(
                await eventually(timeout: .seconds(15)) { Self.owned6(hosts[0]) == [subnets6[1]] && Self.owned4(hosts[0]) == [subnets[1]] },
                "\(Self.routes4(hosts[0]))\n\(Self.routes6(hosts[0]))\n\(cluster.agentLog(0))")
            #expect(hosts[0].pingEventually(TestCluster.gateway(subnets[1]), from: TestCluster.gateway(subnets[0])))
            #expect(
                await eventually(timeout: .seconds(10)) {
                    Self.ping6(hosts[0], TestCluster.gateway6(subnets6[1]), from: TestCluster.gateway6(subnets6[0]), attempts: 1)
                })
            let nat6 = { (try? hosts[0].exec("/usr/sbin/ip6tables", ["-w", "-t", "nat", "-S"])) ?? "" }
            #expect(await eventually(timeout: .seconds(10)) { nat6().contains("FLANNEL-POSTRTG") })
            // IPv6 off again: the IPv6 routes, device and rules go, the IPv4 side stays.
            try cluster.etcdctl(["put", "/coreos.com/network/config", v4Config])
            for i in 0..<2 {
                #expect(
                    await eventually(timeout: .seconds(20)) { cluster.subnet6(i) == nil && cluster.subnet(i) == subnets[i] },
                    "\(cluster.agentLog(i))")
            }
            #expect(
                await eventually(timeout: .seconds(15)) {
                    Self.owned6(hosts[0]).isEmpty && Self.owned4(hosts[0]) == [subnets[1]] && !nat6().contains("FLANNEL")
                }, "\(Self.routes6(hosts[0]))\n\(nat6())")
            if backend == "vxlan" { #expect((try? hosts[0].ip("link", "show", "flannel-v6.1")) == nil) }
            #expect(hosts[0].pingEventually(TestCluster.gateway(subnets[1]), from: TestCluster.gateway(subnets[0])))
            let after = try cluster.etcdctl(["get", "--prefix", "/coreos.com/network/subnets/", "--keys-only"])
            #expect(!after.contains("&") && after.split(separator: "\n").filter { !$0.isEmpty }.count == 2, "\(after)")
        }
    }

    @Test("a dual-stack network on a backend that carries IPv4 only is refused with the reason; a node without IPv6 says what it lacks")
    func refusals() async throws {
        try await withCluster(hosts: 1, underlay: "198.51.100") { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config.replacingOccurrences(of: "BACKEND", with: "wireguard")])
            try cluster.startAgent(0)
            #expect(
                await eventually(timeout: .seconds(15)) {
                    cluster.agentLog(0).contains("EnableIPv6 is set, but Twill's wireguard backend carries IPv4 only so far")
                }, "\(cluster.agentLog(0))")
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config.replacingOccurrences(of: "BACKEND", with: "host-gw")])
            // This segment has no IPv6: the agent says so and leases nothing.
            #expect(
                await eventually(timeout: .seconds(15)) { cluster.agentLog(0).contains("has no global IPv6 address") },
                "\(cluster.agentLog(0))")
            #expect(cluster.subnet(0) == nil)
            cluster.stopAgent(0)
        }
    }

    /// An IPv6-only segment (no IPv4 anywhere, etcd over IPv6) and an IPv6-only network: each
    /// node leases an IPv6 subnet under flannel's `0.0.0.0-0&<v6>-<len>` key, with its
    /// interface's IPv6 address as PublicIPv6, and the nodes reach each other's subnets.
    @Test(
        "an IPv6-only cluster: no IPv4 on the hosts, PublicIPv6 auto-detected, every pair routed (udp over IPv6); wireguard is refused with the reason",
        arguments: ["host-gw", "vxlan", "udp"])
    func ipv6Only(backend: String) async throws {
        try await withCluster(hosts: 3, underlay: "198.51.100", ipv6Only: true) { cluster in
            let hosts = cluster.net.hosts
            let config = #"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","Backend":{"Type":"\#(backend)"}}"#
            try cluster.etcdctl(["put", "/coreos.com/network/config", config])
            for i in 0..<3 { try cluster.startAgent(i, extra: i == 0 ? ["--ip-masq"] : []) }
            for i in 0..<3 {
                let ok = await eventually(timeout: .seconds(20)) { cluster.subnet6(i) != nil }
                #expect(ok, "agent \(i + 1) wrote no IPv6 subnet: \(cluster.agentLog(i))")
                if !ok { return }
            }
            let subnets6 = (0..<3).map { cluster.subnet6($0) ?? "" }
            #expect(Set(subnets6).count == 3)
            let env = try String(contentsOfFile: cluster.subnetFile(0), encoding: .utf8)
            #expect(
                env == """
                    FLANNEL_IPV6_NETWORK=2001:db8:100::/48
                    FLANNEL_IPV6_SUBNET=\(TestCluster.gateway6(subnets6[0]))/64
                    FLANNEL_MTU=\(["vxlan": 1430, "udp": 1452][backend] ?? 1500)
                    FLANNEL_IPMASQ=true

                    """)
            let key = "/coreos.com/network/subnets/0.0.0.0-0&\(subnets6[0].replacingOccurrences(of: "/", with: "-"))"
            let value = try cluster.etcdctl(["get", key, "--print-value-only"]).trimmingCharacters(in: .whitespacesAndNewlines)
            let typed6 = backend == "udp" ? "}" : #","BackendType":"\#(backend)""#
            #expect(value.hasPrefix(#"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:1::1""# + typed6), "\(key): \(value)")
            if backend == "vxlan" {
                #expect(value.contains(#""BackendV6Data":{"VNI":1,"VtepMAC":"#) && !value.contains(#""BackendData""#), "\(value)")
                #expect((try? hosts[0].ip("link", "show", "flannel.1")) == nil, "no IPv4 device on an IPv6-only node")
            }
            for (i, h) in hosts.enumerated() {
                try h.ip("link", "add", "twb0", "type", "bridge")
                try h.ip("addr", "add", "\(TestCluster.gateway6(subnets6[i]))/64", "dev", "twb0", "nodad")
                try h.ip("link", "set", "twb0", "up")
            }
            // udp routes the whole IPv6 network through its TUN; the others each peer's subnet.
            let expected6 = { (i: Int) -> Set<String> in
                backend == "udp" ? ["2001:db8:100::/48"] : Set((0..<3).filter { $0 != i }.map { subnets6[$0] })
            }
            for i in 0..<3 {
                #expect(
                    await eventually(timeout: .seconds(15)) { Self.owned6(hosts[i]) == expected6(i) },
                    "host \(i + 1): \(Self.routes6(hosts[i]))\n\(cluster.agentLog(i))")
                #expect(Self.routes4(hosts[i]).isEmpty, "no IPv4 route on an IPv6-only node: \(Self.routes4(hosts[i]))")
                for j in 0..<3 where j != i {
                    #expect(
                        Self.ping6(hosts[i], TestCluster.gateway6(subnets6[j]), from: TestCluster.gateway6(subnets6[i])),
                        "\(backend): h\(i + 1) cannot reach h\(j + 1)'s \(subnets6[j])")
                }
            }
            // --ip-masq on an IPv6-only node: ip6tables rules only, no IPv4 rule at all.
            #expect(
                ((try? hosts[0].exec("/usr/sbin/ip6tables", ["-w", "-t", "nat", "-S", "FLANNEL-POSTRTG"])) ?? "").contains(
                    "-s \(subnets6[0]) -d 2001:db8:100::/48"))
            #expect(!(((try? hosts[0].exec("/usr/sbin/iptables", ["-w", "-t", "nat", "-S"])) ?? "FLANNEL")).contains("FLANNEL"))
            // A node dies hard and its lease goes: its routes go from the others.
            cluster.stopAgent(2, signal: SIGKILL)
            try cluster.etcdctl(["del", "/coreos.com/network/subnets/0.0.0.0-0&\(subnets6[2].replacingOccurrences(of: "/", with: "-"))"])
            for i in 0..<2 where backend != "udp" {
                #expect(await eventually(timeout: .seconds(10)) { Self.owned6(hosts[i]) == [subnets6[1 - i]] }, "\(Self.routes6(hosts[i]))")
            }
            if backend == "udp" {
                // The engine answers for the subnet nobody leases now: ICMPv6 no route.
                #expect(
                    await eventually(timeout: .seconds(10)) {
                        let out =
                            (try? hosts[0].exec(
                                "/bin/sh",
                                [
                                    "-c",
                                    "ping -6 -n -c1 -W1 -I \(TestCluster.gateway6(subnets6[0])) \(TestCluster.gateway6(subnets6[2])) 2>&1; true",
                                ])) ?? ""
                        return out.contains("No route")
                    })
                // A TCP transfer over the IPv6 underlay arrives byte for byte.
                let (sent, received) = try await Self.transfer(
                    cluster, from: 0, src: TestCluster.gateway6(subnets6[0]), to: 1,
                    dst: TestCluster.gateway6(subnets6[1]), size: 10 << 20)
                #expect(sent.hasPrefix("\(10 << 20) ") && sent == received, "sent \(sent) received \(received)")
                #expect(try hosts[0].exec("/usr/bin/ss", ["-uan"]).contains("[2001:db8:1::1]:8285"))
            }
            // A restart keeps the subnet (the lease is taken over by PublicIPv6).
            cluster.stopAgent(1, signal: SIGKILL)
            try cluster.startAgent(1)
            #expect(
                await eventually(timeout: .seconds(20)) {
                    (try? cluster.etcdctl(["get", "--prefix", "/coreos.com/network/subnets/", "--keys-only"]))?
                        .split(separator: "\n").filter { !$0.isEmpty }.count == 2
                })
            #expect(cluster.subnet6(1) == subnets6[1])
            // Its data path is back (udp's TUN went with the killed process).
            #expect(
                await eventually(timeout: .seconds(20)) {
                    Self.ping6(hosts[0], TestCluster.gateway6(subnets6[1]), from: TestCluster.gateway6(subnets6[0]), attempts: 1)
                }, "\(String(cluster.agentLog(1).suffix(4000)))\n\(Self.routes6(hosts[1]))")

            // wireguard sends over IPv4 only: refused with the reason, the running config stays.
            try cluster.etcdctl([
                "put", "/coreos.com/network/config",
                config.replacingOccurrences(of: #""Type":"\#(backend)""#, with: #""Type":"wireguard""#),
            ])
            #expect(
                await eventually(timeout: .seconds(10)) { cluster.agentLog(0).contains("an IPv6-only network") }, "\(cluster.agentLog(0))")
            #expect(
                Self.ping6(hosts[0], TestCluster.gateway6(subnets6[1]), from: TestCluster.gateway6(subnets6[0])),
                "\(String(cluster.agentLog(1).suffix(4000)))")
        }
    }
}
