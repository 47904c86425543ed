import Foundation
import Testing
import TwillTestSupport

/// The udp backend with real agents: three hosts, TUN devices, userspace encapsulation.
@Suite(.serialized) struct UDPEndToEndTests {
    static func gateway(_ subnet: String) -> String { subnet.replacingOccurrences(of: ".0/24", with: ".1") }

    /// A python3 helper run inside a namespace.
    static func python(_ ns: TestNamespace, _ script: String, _ args: [String] = []) throws -> String {
        try ns.exec("/usr/bin/python3", ["-c", script] + args)
    }

    /// Sends datagrams to host:port from `source` (an address of the namespace): `kind` is
    /// "valid" (an ICMP echo from inner source `src` to `dst`) or "random" (`count` datagrams
    /// of random bytes).
    static let sender = #"""
        import os, random, socket, struct, sys
        kind, source, host, port, src, dst, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7])
        def csum(b):
            if len(b) % 2: b += b"\0"
            s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return (~s) & 0xffff
        icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"twill-e2e"
        icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, socket.inet_aton(src), socket.inet_aton(dst))
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source, 0))
        rng = random.Random(42)
        for i in range(count):
            s.sendto(hdr + icmp if kind == "valid" else bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 1400))), (host, port))
        print("sent", count)
        """#

    /// The sum of a metric's samples whose line starts with `name` and contains `label`.
    static func metric(_ host: TestNamespace, port: Int, _ name: String, label: String = "") -> Double {
        guard let text = try? host.exec("/usr/bin/curl", ["-s", "-m", "3", "http://127.0.0.1:\(port)/metrics"]) else { return -1 }
        return text.split(separator: "\n").filter { $0.hasPrefix(name) && (label.isEmpty || $0.contains(label)) }.compactMap {
            $0.split(separator: " ").last.flatMap { Double($0) }
        }.reduce(0, +)
    }

    @Test func threeNodesOverUDP() async throws {
        try await withCluster(hosts: 3, underlay: "198.51.100") { cluster in
            let hosts = cluster.net.hosts
            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"udp"}}"#])
            for i in 0..<3 {
                try cluster.startAgent(i, extra: ["--healthz-ip", "127.0.0.1", "--healthz-port", "9100"])
            }
            for i in 0..<3 {
                let ok = await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }
                #expect(ok, "agent \(i + 1): \(cluster.agentLog(i))")
                if !ok { return }
            }
            let subnets = (0..<3).map { cluster.subnet($0) ?? "" }
            let env = try String(contentsOfFile: cluster.subnetFile(0), encoding: .utf8)
            #expect(env.contains("FLANNEL_MTU=1472"), "\(env)")
            // The lease carries no BackendType, as flannel's udp backend writes it.
            #expect(
                try cluster.etcdctl(["get", cluster.leaseKey(subnets[0]), "--print-value-only"]).trimmingCharacters(
                    in: .whitespacesAndNewlines)
                    == #"{"PublicIP":"198.51.100.1","PublicIPv6":null}"#)
            for (i, h) in hosts.enumerated() {
                try h.ip("link", "add", "twb0", "type", "bridge")
                try h.ip("addr", "add", "\(Self.gateway(subnets[i]))/24", "dev", "twb0")
                try h.ip("link", "set", "twb0", "up")
                #expect(try h.ip("-d", "link", "show", "twill0").contains("mtu 1472"))
                #expect(try h.ip("route", "show", "proto", "84").contains("198.18.0.0/16 dev twill0"))
            }
            // Subnet to subnet, every pair.
            for i in 0..<3 {
                for j in 0..<3 where j != i {
                    #expect(
                        hosts[i].pingEventually(Self.gateway(subnets[j]), from: Self.gateway(subnets[i]), attempts: 10),
                        "h\(i + 1) cannot reach \(subnets[j]): \(cluster.agentLog(i))")
                }
            }
            // 50 MB over TCP arrives byte for byte.
            let server = try ChildProcess(
                "/usr/sbin/ip",
                ["netns", "exec", hosts[1].name, "/usr/bin/python3", "-c", TCPTransferScripts.sink, Self.gateway(subnets[1]), "5001"],
                logPath: cluster.dir + "/sink.log")
            defer { server.stop(signal: SIGKILL) }
            let sent = try Self.python(
                hosts[0], TCPTransferScripts.source, [Self.gateway(subnets[0]), Self.gateway(subnets[1]), "5001", "\(50 << 20)"])
            #expect(await eventually(timeout: .seconds(30)) { !server.isRunning })
            #expect(
                server.log.trimmingCharacters(in: .whitespacesAndNewlines) == sent.trimmingCharacters(in: .whitespacesAndNewlines),
                "sent \(sent) received \(server.log)")
            #expect(sent.hasPrefix("\(50 << 20) "))

            // Hostile datagrams to host 1's port: a stranger (the switch), a peer spoofing
            // another subnet, and 10,000 random-byte datagrams from a peer. All dropped and counted.
            let sw = cluster.net.switchNamespace
            _ = try Self.python(
                sw, Self.sender,
                ["valid", "198.51.100.254", "198.51.100.1", "8285", Self.gateway(subnets[1]), Self.gateway(subnets[0]), "1"])
            _ = try Self.python(
                hosts[1], Self.sender, ["valid", "198.51.100.2", "198.51.100.1", "8285", "198.18.250.9", Self.gateway(subnets[0]), "1"])
            _ = try Self.python(hosts[1], Self.sender, ["random", "198.51.100.2", "198.51.100.1", "8285", "0.0.0.0", "0.0.0.0", "10000"])
            #expect(
                await eventually(timeout: .seconds(10)) {
                    Self.metric(hosts[0], port: 9100, #"twill_udp_drops_total{reason="unknown_sender"}"#) >= 1
                }, "\((try? hosts[0].exec("/usr/bin/curl", ["-s", "http://127.0.0.1:9100/metrics"])) ?? "")")
            #expect(Self.metric(hosts[0], port: 9100, #"twill_udp_drops_total{reason="spoofed_inner_source"}"#) >= 1)
            #expect(Self.metric(hosts[0], port: 9100, "twill_udp_drops_total") >= 10_002)
            #expect(
                Self.metric(hosts[0], port: 9100, "twill_udp_peer_tx_bytes_total", label: #"public_ip="198.51.100.2""#) > Double(50 << 20))
            #expect(
                Self.metric(hosts[1], port: 9100, "twill_udp_peer_rx_bytes_total", label: #"public_ip="198.51.100.1""#) > Double(50 << 20))
            // Still forwarding.
            #expect(hosts[0].pingEventually(Self.gateway(subnets[1]), from: Self.gateway(subnets[0])))

            // Host 3 gone and its lease deleted: the others answer net unreachable for it.
            cluster.stopAgent(2, signal: SIGKILL)
            try cluster.etcdctl(["del", cluster.leaseKey(subnets[2])])
            #expect(
                await eventually(timeout: .seconds(10)) {
                    Self.pingSaysUnreachable(hosts[0], from: Self.gateway(subnets[0]), to: Self.gateway(subnets[2]))
                })
            // A clean stop keeps the device (persistent) and its route; `twill cleanup` removes them.
            #expect(cluster.stopAgent(0) == 0)
            #expect((try? hosts[0].ip("link", "show", "twill0")) != nil)
            #expect(try !hosts[0].ip("route", "show", "proto", "84").isEmpty)
            try cluster.cleanup(0)
            #expect((try? hosts[0].ip("link", "show", "twill0")) == nil)
            #expect(try hosts[0].ip("route", "show", "proto", "84").isEmpty)
        }
    }

    /// `--udp-queues` and `--udp-offloads=false` reach the engine: a node with two queues and
    /// offloads and a node with one queue and none carry 100 MB byte for byte, both ways round.
    @Test func agentFlagsQueuesAndOffloadsOff() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            let hosts = cluster.net.hosts
            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"udp"}}"#])
            try cluster.startAgent(0, extra: ["--udp-queues", "2"])
            try cluster.startAgent(1, extra: ["--udp-queues", "1", "--udp-offloads=false"])
            for i in 0..<2 {
                let ok = await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }
                #expect(ok, "agent \(i + 1): \(cluster.agentLog(i))")
                if !ok { return }
            }
            let subnets = (0..<2).map { cluster.subnet($0) ?? "" }
            // A multi-queue TUN shows one tx queue per engine queue.
            for (i, expected) in [(0, 2), (1, 1)] {
                let queues = try hosts[i].exec("/bin/ls", ["/sys/class/net/twill0/queues"])
                #expect(queues.split(separator: "\n").filter { $0.hasPrefix("tx-") }.count == expected, "h\(i + 1): \(queues)")
            }
            for (i, h) in hosts.enumerated() {
                try h.ip("link", "add", "twb0", "type", "bridge")
                try h.ip("addr", "add", "\(Self.gateway(subnets[i]))/24", "dev", "twb0")
                try h.ip("link", "set", "twb0", "up")
            }
            #expect(
                hosts[0].pingEventually(Self.gateway(subnets[1]), from: Self.gateway(subnets[0]), attempts: 10), "\(cluster.agentLog(0))")
            for (from, to) in [(0, 1), (1, 0)] {
                let server = try ChildProcess(
                    "/usr/sbin/ip",
                    [
                        "netns", "exec", hosts[to].name, "/usr/bin/python3", "-c", TCPTransferScripts.sink, Self.gateway(subnets[to]),
                        "5001",
                    ],
                    logPath: cluster.dir + "/sink-\(from)-\(to).log")
                defer { server.stop(signal: SIGKILL) }
                let sent = try Self.python(
                    hosts[from], TCPTransferScripts.source,
                    [Self.gateway(subnets[from]), Self.gateway(subnets[to]), "5001", "\(100 << 20)"])
                #expect(await eventually(timeout: .seconds(30)) { !server.isRunning })
                #expect(
                    server.log.trimmingCharacters(in: .whitespacesAndNewlines) == sent.trimmingCharacters(in: .whitespacesAndNewlines),
                    "h\(from + 1) -> h\(to + 1): sent \(sent) received \(server.log)")
                #expect(sent.hasPrefix("\(100 << 20) "))
            }
            #expect(cluster.stopAgent(0) == 0)
            #expect(cluster.stopAgent(1) == 0)
        }
    }

    /// ping exits non-zero when unanswered; its output still says why.
    static func pingSaysUnreachable(_ host: TestNamespace, from: String, to: String) -> Bool {
        do {
            _ = try run("/usr/sbin/ip", ["netns", "exec", host.name, "/usr/bin/ping", "-n", "-c1", "-W1", "-I", from, to])
            return false
        } catch {
            return "\(error)".contains("Destination Net Unreachable")
        }
    }

    /// flannel's udp data path as its proxy.c has it: a TUN without packet info, each packet read
    /// from it sent as one UDP datagram to the peer's port (no header), each datagram received
    /// written to the TUN as it is. Run with: TUN name, local address, port, peer address.
    static let flannelUDPNode = #"""
        import fcntl, os, select, socket, struct, sys
        name, local, port, peer = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", name.encode(), 0x0001 | 0x1000))  # TUNSETIFF, IFF_TUN|IFF_NO_PI
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((local, port))
        print("ready", flush=True)
        while True:
            ready, _, _ = select.select([fd, s], [], [])
            if fd in ready:
                s.sendto(os.read(fd, 65535), (peer, port))
            if s in ready:
                os.write(fd, s.recvfrom(65535)[0])
        """#

    /// A node speaking flannel's udp wire format (and lease JSON) and a Twill udp node carry
    /// each other's traffic.
    @Test func interoperatesWithFlannelsUDPWireFormat() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            let (twill, flannel) = (cluster.net.hosts[0], cluster.net.hosts[1])
            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"udp"}}"#])
            // The flannel node's lease, exactly as flanneld's udp backend writes it.
            try cluster.etcdctl(["put", "/coreos.com/network/subnets/198.18.200.0-24", #"{"PublicIP":"198.51.100.2","PublicIPv6":null}"#])
            let node = try ChildProcess(
                "/usr/sbin/ip",
                [
                    "netns", "exec", flannel.name, "/usr/bin/python3", "-c", Self.flannelUDPNode,
                    "flannel0", "198.51.100.2", "8285", "198.51.100.1",
                ], logPath: cluster.dir + "/flannel-node.log")
            defer { node.stop(signal: SIGKILL) }
            #expect(await eventually { node.log.contains("ready") }, "\(node.log)")
            try flannel.ip("addr", "add", "198.18.200.0/32", "dev", "flannel0")
            try flannel.ip("link", "set", "flannel0", "mtu", "1472", "up")
            try flannel.ip("route", "add", "198.18.0.0/16", "dev", "flannel0")
            try flannel.ip("link", "add", "twb0", "type", "bridge")
            try flannel.ip("addr", "add", "198.18.200.1/24", "dev", "twb0")
            try flannel.ip("link", "set", "twb0", "up")
            try cluster.startAgent(0)
            #expect(await eventually(timeout: .seconds(20)) { cluster.subnet(0) != nil }, "\(cluster.agentLog(0))")
            let subnet = cluster.subnet(0) ?? ""
            try twill.ip("link", "add", "twb0", "type", "bridge")
            try twill.ip("addr", "add", "\(Self.gateway(subnet))/24", "dev", "twb0")
            try twill.ip("link", "set", "twb0", "up")
            #expect(
                twill.pingEventually("198.18.200.1", from: Self.gateway(subnet), attempts: 10), "twill -> flannel: \(cluster.agentLog(0))")
            #expect(flannel.pingEventually(Self.gateway(subnet), from: "198.18.200.1", attempts: 10), "flannel -> twill")
        }
    }
}
