import Foundation
import Testing
import TwillNetlink
import TwillTestSupport

/// The wireguard backend with real agents on namespace hosts (no WireGuard module on these
/// kernels: Twill's own engine), against each other and against Debian's wireguard-go.
@Suite(.serialized) struct WireGuardEndToEndTests {
    static let config = #"{"Network":"198.18.0.0/16","Backend":{"Type":"wireguard"}}"#
    static let port = 51820

    static func gateway(_ subnet: String) -> String { UDPEndToEndTests.gateway(subnet) }
    static func keyFile(_ cluster: TestCluster, _ i: Int) -> String { cluster.dir + "/h\(i + 1)/wgkey" }

    /// Starts agents on `hosts` (each with its key file and health port 9100) and waits for
    /// their subnets; nil (with the failure recorded) if one never gets one.
    static func start(_ cluster: TestCluster, _ hosts: [Int], environment: [String: String] = [:]) async throws -> [String]? {
        for i in hosts {
            try cluster.startAgent(
                i, extra: ["--healthz-ip", "127.0.0.1", "--healthz-port", "9100"],
                environment: environment.merging(["WIREGUARD_KEY_FILE": keyFile(cluster, i)]) { a, _ in a })
        }
        var subnets: [String] = []
        for i in hosts {
            let ok = await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }
            #expect(ok, "agent \(i + 1): \(cluster.agentLog(i))")
            if !ok { return nil }
            subnets.append(cluster.subnet(i) ?? "")
        }
        return subnets
    }

    /// A bridge holding the subnet's gateway address: the "pods" of a host.
    static func addPods(_ host: TestNamespace, _ subnet: String) throws {
        try host.ip("link", "add", "twb0", "type", "bridge")
        try host.ip("addr", "add", "\(gateway(subnet))/24", "dev", "twb0")
        try host.ip("link", "set", "twb0", "up")
    }

    static func metric(_ host: TestNamespace, _ name: String, label: String = "") -> Double {
        UDPEndToEndTests.metric(host, port: 9100, name, label: label)
    }

    /// 50 MB (or `size`) over TCP from `from` to `to`'s gateway; the sink's and the source's
    /// "<bytes> <sha256>" lines.
    static func transfer(
        _ cluster: TestCluster, from: (TestNamespace, String), to: (TestNamespace, String), size: Int = 50 << 20,
        script: String = TCPTransferScripts.source, port: Int = 5001
    ) async throws -> (sent: String, received: String) {
        let server = try ChildProcess(
            "/usr/sbin/ip", ["netns", "exec", to.0.name, "/usr/bin/python3", "-c", TCPTransferScripts.sink, to.1, "\(port)"],
            logPath: cluster.dir + "/sink-\(port).\(Int.random(in: 0..<1_000_000)).log")
        defer { server.stop(signal: SIGKILL) }
        let sent = try UDPEndToEndTests.python(from.0, script, [from.1, to.1, "\(port)", "\(size)"])
        _ = await eventually(timeout: .seconds(60)) { !server.isRunning }
        return (sent.trimmingCharacters(in: .whitespacesAndNewlines), server.log.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Captures on `iface` until `want` frames to or from `port` went by (or `seconds`
    /// passed): prints "ready", then "<frames> <frames holding marker> <frames to or from port>".
    static let capture = #"""
        import socket, struct, sys, time
        iface, marker, seconds, port, want = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        r = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); r.bind((iface, 0)); r.settimeout(0.2)
        print("ready", flush=True)
        end = time.time() + seconds; frames = found = wg = 0
        while time.time() < end and wg < want:
            try: f = r.recv(65535)
            except socket.timeout: continue
            frames += 1
            if marker in f: found += 1
            ip = f[14:]
            if len(ip) >= 28 and ip[0] >> 4 == 4 and ip[9] == 17:
                ihl = (ip[0] & 15) * 4
                sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
                if port in (sport, dport): wg += 1
        print(frames, found, wg, flush=True)
        """#

    /// argv: source address, destination, port, count, marker. UDP datagrams full of the marker.
    static let markerSender = #"""
        import socket, sys, time
        src, dst, port, count, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].encode()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src, 0))
        for i in range(count):
            s.sendto(marker * 20, (dst, port)); time.sleep(0.02)
        print("sent", count, flush=True)
        """#

    /// On the sending host: sniffs one WireGuard transport message it sends to dst:port, then
    /// sends it again as it was (a replay), with a ciphertext bit flipped (tampered) and with
    /// another receiver index (unknown). argv: iface, dst, port, source address.
    static let replayer = #"""
        import socket, struct, sys, time
        iface, dst, port, src = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
        r = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); r.bind((iface, 0)); r.settimeout(0.5)
        end = time.time() + 20; payload = None
        while time.time() < end and payload is None:
            try: f = r.recv(65535)
            except socket.timeout: continue
            ip = f[14:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17 or socket.inet_ntoa(ip[16:20]) != dst: continue
            ihl = (ip[0] & 15) * 4; udp = ip[ihl:]
            if struct.unpack("!H", udp[2:4])[0] != port: continue
            p = udp[8:]
            if len(p) > 32 and p[0] == 4: payload = p
        if payload is None:
            print("no transport message seen"); sys.exit(1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src, 0))
        s.sendto(payload, (dst, port))
        t = bytearray(payload); t[20] ^= 1; s.sendto(bytes(t), (dst, port))
        u = bytearray(payload); u[4] ^= 0xff; u[5] ^= 0xff; s.sendto(bytes(u), (dst, port))
        print("sent", len(payload), flush=True)
        """#

    /// The public key of a base64 private key file (`wg pubkey`).
    static func publicKey(ofKeyFile path: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/wg")
        p.arguments = ["pubkey"]
        p.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func threeNodesOverWireGuard() async throws {
        try await withCluster(hosts: 3, underlay: "198.51.100") { cluster in
            let hosts = cluster.net.hosts
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config])
            guard let subnets = try await Self.start(cluster, [0, 1, 2]) else { return }
            // flannel's formats: FLANNEL_MTU = 1500 - 80, the device, its route, the lease.
            let env = try String(contentsOfFile: cluster.subnetFile(0), encoding: .utf8)
            #expect(env.contains("FLANNEL_MTU=1420"), "\(env)")
            #expect(try hosts[0].ip("-d", "link", "show", "flannel-wg").contains("mtu 1420"))
            #expect(try hosts[0].ip("route", "show", "proto", "84").contains("198.18.0.0/16 dev flannel-wg"))
            let key0 = try Self.publicKey(ofKeyFile: Self.keyFile(cluster, 0))
            #expect(key0.count == 44)
            let lease0 = try cluster.etcdctl(["get", cluster.leaseKey(subnets[0]), "--print-value-only"]).trimmingCharacters(
                in: .whitespacesAndNewlines)
            #expect(
                lease0
                    == #"{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"\#(key0)","Port":51820}}"#
            )
            let mode = try FileManager.default.attributesOfItem(atPath: Self.keyFile(cluster, 0))[.posixPermissions] as? Int
            #expect(mode == 0o400)
            for (i, h) in hosts.enumerated() { try Self.addPods(h, subnets[i]) }
            // No session yet: the very first echo waits for the handshake it starts, and is answered.
            let first =
                (try? hosts[0].exec("/bin/ping", ["-c", "1", "-W", "3", "-I", Self.gateway(subnets[0]), Self.gateway(subnets[1])]))
                ?? "failed"
            #expect(first.contains("1 received"), "\(first)")
            for i in 0..<3 {
                for j in 0..<3 where j != i {
                    #expect(
                        hosts[i].pingEventually(Self.gateway(subnets[j]), from: Self.gateway(subnets[i]), attempts: 10),
                        "h\(i + 1) cannot reach \(subnets[j]): \(cluster.agentLog(i))")
                }
            }
            let (sent, received) = try await Self.transfer(
                cluster, from: (hosts[0], Self.gateway(subnets[0])), to: (hosts[1], Self.gateway(subnets[1])))
            #expect(sent.hasPrefix("\(50 << 20) ") && received == sent, "sent \(sent) received \(received)")

            // The underlay carries WireGuard and none of the plaintext.
            let marker = "twill-plaintext-marker-\(Int.random(in: 100_000..<999_999))"
            let sniffer = try ChildProcess(
                "/usr/sbin/ip",
                [
                    "netns", "exec", hosts[0].name, "/usr/bin/python3", "-c", Self.capture,
                    cluster.net.interface, marker, "30", "\(Self.port)", "40",
                ],
                logPath: cluster.dir + "/capture.log")
            defer { sniffer.stop(signal: SIGKILL) }
            #expect(await eventually(timeout: .seconds(10)) { sniffer.log.contains("ready") })
            _ = try UDPEndToEndTests.python(
                hosts[0], Self.markerSender, [Self.gateway(subnets[0]), Self.gateway(subnets[1]), "9999", "40", marker])
            #expect(await eventually(timeout: .seconds(40)) { !sniffer.isRunning })
            let counts = sniffer.log.split(separator: "\n").last.map { $0.split(separator: " ").compactMap { Int($0) } } ?? []
            #expect(counts.count == 3 && counts[1] == 0 && counts[2] >= 40, "capture: \(sniffer.log)")

            // Hostile datagrams on host 1's port, while host 2 pings it: a replay, a tampered
            // copy, an unknown receiver index, then 10,000 random datagrams. Dropped, counted.
            let pinger = try ChildProcess(
                "/usr/sbin/ip",
                [
                    "netns", "exec", hosts[1].name, "/bin/ping", "-c", "100", "-i", "0.1", "-I", Self.gateway(subnets[1]),
                    Self.gateway(subnets[0]),
                ],
                logPath: cluster.dir + "/pinger.log")
            defer { pinger.stop(signal: SIGKILL) }
            let replayed =
                (try? UDPEndToEndTests.python(
                    hosts[1], Self.replayer, [cluster.net.interface, "198.51.100.1", "\(Self.port)", "198.51.100.2"])) ?? "failed"
            #expect(replayed.hasPrefix("sent"), "\(replayed); ping: \(pinger.log)")
            _ = try UDPEndToEndTests.python(
                hosts[1], UDPEndToEndTests.sender,
                ["random", "198.51.100.2", "198.51.100.1", "\(Self.port)", "0.0.0.0", "0.0.0.0", "10000"])
            #expect(
                await eventually(timeout: .seconds(10)) {
                    Self.metric(hosts[0], #"twill_wireguard_drops_total{reason="replayed"}"#) >= 1
                        && Self.metric(hosts[0], #"twill_wireguard_drops_total{reason="not_authentic"}"#) >= 1
                        && Self.metric(hosts[0], #"twill_wireguard_drops_total{reason="unknown_receiver"}"#) >= 1
                }, "\((try? hosts[0].exec("/usr/bin/curl", ["-s", "http://127.0.0.1:9100/metrics"])) ?? "")")
            #expect(
                await eventually(timeout: .seconds(10)) {
                    Self.metric(hosts[0], "twill_wireguard_drops_total") + Self.metric(hosts[0], "twill_wireguard_handshake_drops_total")
                        >= 10_003
                })
            #expect(hosts[1].pingEventually(Self.gateway(subnets[0]), from: Self.gateway(subnets[1])))
            _ = await eventually(timeout: .seconds(15)) { !pinger.isRunning }
            #expect(pinger.log.contains(" 0% packet loss"), "\(pinger.log)")

            // Operators see handshakes, endpoints and bytes: /metrics and `twill status`.
            #expect(
                Self.metric(hosts[0], "twill_wireguard_peer_tx_bytes_total", label: #"endpoint="198.51.100.2:51820""#) > Double(50 << 20))
            #expect(
                Self.metric(hosts[0], "twill_wireguard_peer_last_handshake_seconds", label: #"public_ip="198.51.100.2""#) > 1_700_000_000)
            let status = try hosts[0].exec(try twillBinary(), ["status", "--endpoint", "http://127.0.0.1:9100", "--json"])
            #expect(status.contains(#""lastHandshake""#), "\(status)")

            // Restarted, the node keeps its key and its lease its public key; the device stays
            // through the stop (a stop is not an outage).
            #expect(cluster.stopAgent(0) == 0)
            #expect((try? hosts[0].ip("link", "show", "flannel-wg")) != nil)
            guard try await Self.start(cluster, [0]) != nil else { return }
            #expect(try Self.publicKey(ofKeyFile: Self.keyFile(cluster, 0)) == key0)
            #expect(try cluster.etcdctl(["get", cluster.leaseKey(subnets[0]), "--print-value-only"]).contains(key0))
            #expect(
                hosts[0].pingEventually(Self.gateway(subnets[1]), from: Self.gateway(subnets[0]), attempts: 10), "\(cluster.agentLog(0))")
        }
    }

    /// Debian's wireguard-go on host 3, configured only from what the leases in etcd say (as
    /// any WireGuard peer of a flannel cluster would be), and Twill nodes on hosts 1 and 2.
    @Test func wireguardGoPeerConfiguredFromLeases() async throws {
        try await withCluster(hosts: 3, underlay: "198.51.100") { cluster in
            let hosts = cluster.net.hosts
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config])
            // Host 3's identity and lease, written as flannel's wireguard backend writes them.
            let h3 = hosts[2]
            let keyPath = cluster.dir + "/h3.key"
            try h3.exec("/bin/sh", ["-c", "umask 077; /usr/bin/wg genkey > \(keyPath)"])
            let key3 = try Self.publicKey(ofKeyFile: keyPath)
            let subnet3 = "198.18.200.0/24"
            try cluster.etcdctl([
                "put", cluster.leaseKey(subnet3),
                #"{"PublicIP":"198.51.100.3","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"\#(key3)","Port":51820}}"#,
            ])
            guard let subnets = try await Self.start(cluster, [0, 1]) else { return }
            let device = "twg\(Int.random(in: 1000..<9999))"
            let wggo = try ChildProcess(
                "/usr/sbin/ip", ["netns", "exec", h3.name, "/usr/bin/wireguard-go", "-f", device],
                environment: ["LOG_LEVEL": "error", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], logPath: cluster.dir + "/wireguard-go.log")
            defer {
                wggo.stop()
                try? FileManager.default.removeItem(atPath: "/var/run/wireguard/\(device).sock")
            }
            #expect(await eventually(timeout: .seconds(10)) { (try? h3.ip("link", "show", device)) != nil }, "\(wggo.log)")
            try h3.exec("/usr/bin/wg", ["set", device, "listen-port", "51820", "private-key", keyPath])
            try h3.ip("addr", "add", "198.18.200.0/32", "dev", device)
            try h3.ip("link", "set", device, "mtu", "1420", "up")
            try h3.ip("route", "add", "198.18.0.0/16", "dev", device)
            // Every wireguard lease but its own becomes a peer.
            let listing = try cluster.etcdctl(["get", "--prefix", "/coreos.com/network/subnets/"]).split(separator: "\n").map(String.init)
            var peers = 0
            for k in stride(from: 0, to: listing.count - 1, by: 2) {
                let key = listing[k]
                guard let cidr = key.split(separator: "/").last.map({ $0.replacingOccurrences(of: "-", with: "/") }), cidr != subnet3,
                    let json = try JSONSerialization.jsonObject(with: Data(listing[k + 1].utf8)) as? [String: Any],
                    json["BackendType"] as? String == "wireguard", let ip = json["PublicIP"] as? String,
                    let data = json["BackendData"] as? [String: Any], let pub = data["PublicKey"] as? String
                else { continue }
                let port = (data["Port"] as? Int).flatMap { $0 == 0 ? nil : $0 } ?? 51820
                try h3.exec("/usr/bin/wg", ["set", device, "peer", pub, "endpoint", "\(ip):\(port)", "allowed-ips", cidr])
                peers += 1
            }
            #expect(peers == 2)
            for (i, s) in [(0, subnets[0]), (1, subnets[1]), (2, subnet3)] { try Self.addPods(hosts[i], s) }
            // Both ways: wireguard-go starts one handshake, a Twill node the other.
            #expect(h3.pingEventually(Self.gateway(subnets[0]), from: "198.18.200.1", attempts: 10), "\(cluster.agentLog(0))")
            #expect(hosts[1].pingEventually("198.18.200.1", from: Self.gateway(subnets[1]), attempts: 10), "\(cluster.agentLog(1))")
            let show = try h3.exec("/usr/bin/wg", ["show", device, "latest-handshakes"])
            #expect(show.split(separator: "\n").filter { !$0.hasSuffix("\t0") }.count == 2, "\(show)")
            for (from, to) in [
                ((h3, "198.18.200.1"), (hosts[0], Self.gateway(subnets[0]))), ((hosts[0], Self.gateway(subnets[0])), (h3, "198.18.200.1")),
            ] {
                let (sent, received) = try await Self.transfer(cluster, from: from, to: to, size: 20 << 20)
                #expect(sent.hasPrefix("\(20 << 20) ") && received == sent, "sent \(sent) received \(received)")
            }

            // A wrong key: wireguard-go now signs with a key no lease names. Its initiations
            // are refused and counted; host 1 reaches it no more.
            try h3.exec("/bin/sh", ["-c", "umask 077; /usr/bin/wg genkey > \(keyPath).wrong"])
            try h3.exec("/usr/bin/wg", ["set", device, "private-key", keyPath + ".wrong"])
            _ = try? h3.exec("/bin/ping", ["-c", "3", "-i", "0.3", "-W", "1", "-I", "198.18.200.1", Self.gateway(subnets[0])])
            #expect(
                await eventually(timeout: .seconds(15)) {
                    Self.metric(hosts[0], "twill_wireguard_handshake_drops_total") >= 1
                }, "\((try? hosts[0].exec("/usr/bin/curl", ["-s", "http://127.0.0.1:9100/metrics"])) ?? "")")
        }
    }

    /// Rekeys every few seconds (test-only timers) under a TCP stream that lasts through
    /// several of them: the connection survives and every byte arrives.
    @Test func rekeyUnderTrafficLosesNothing() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            let hosts = cluster.net.hosts
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config])
            // Node 1 with two packet queues (and two sockets on the port), node 2 with one.
            try cluster.startAgent(
                0, extra: ["--udp-queues", "2", "--healthz-ip", "127.0.0.1", "--healthz-port", "9100"],
                environment: ["TWILL_TEST_WIREGUARD_REKEY_SECONDS": "4", "WIREGUARD_KEY_FILE": Self.keyFile(cluster, 0)])
            // Node 1's subnet is read once it has one (not when node 2 is ready, which can be first).
            guard let others = try await Self.start(cluster, [1], environment: ["TWILL_TEST_WIREGUARD_REKEY_SECONDS": "4"]),
                await eventually(timeout: .seconds(20), { cluster.subnet(0) != nil }), let subnet0 = cluster.subnet(0)
            else {
                Issue.record("node 1 has no subnet: \(cluster.agentLog(0))")
                return
            }
            let subnets = [subnet0] + others
            let queues = try hosts[0].exec("/bin/ls", ["/sys/class/net/flannel-wg/queues"])
            #expect(queues.split(separator: "\n").filter { $0.hasPrefix("tx-") }.count == 2, "\(queues)")
            for (i, h) in hosts.enumerated() { try Self.addPods(h, subnets[i]) }
            #expect(hosts[0].pingEventually(Self.gateway(subnets[1]), from: Self.gateway(subnets[0]), attempts: 10))
            let first = Self.metric(hosts[0], "twill_wireguard_peer_last_handshake_seconds")
            let (sent, received) = try await Self.transfer(
                cluster, from: (hosts[0], Self.gateway(subnets[0])), to: (hosts[1], Self.gateway(subnets[1])),
                size: 12, script: Self.slowSource)
            #expect(sent.split(separator: " ").first.flatMap { Int($0) } ?? 0 > 0 && received == sent, "sent \(sent) received \(received)")
            let last = Self.metric(hosts[0], "twill_wireguard_peer_last_handshake_seconds")
            #expect(last >= first + 8, "handshakes at \(first) and \(last)")
        }
    }

    /// On a kernel with WireGuard: the kernel engine between two nodes, configured over
    /// generic netlink; `wg show` sees the peers and their handshakes.
    @Test(
        .enabled(
            if: Self.kernelHasWireGuard,
            "this kernel has no WireGuard module (generic netlink family \"wireguard\" absent): the kernel engine cannot run here; the userspace engine is tested instead"
        ))
    func kernelEngineWhereTheModuleExists() async throws {
        try await withCluster(hosts: 2, underlay: "198.51.100") { cluster in
            let hosts = cluster.net.hosts
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config])
            guard let subnets = try await Self.start(cluster, [0, 1]) else { return }
            #expect(
                cluster.agentLog(0).contains("engine=kernel") || cluster.agentLog(0).contains("kernel engine"), "\(cluster.agentLog(0))")
            #expect(try hosts[0].ip("-d", "link", "show", "flannel-wg").contains("wireguard"))
            for (i, h) in hosts.enumerated() { try Self.addPods(h, subnets[i]) }
            #expect(hosts[0].pingEventually(Self.gateway(subnets[1]), from: Self.gateway(subnets[0]), attempts: 10))
            let show = try hosts[0].exec("/usr/bin/wg", ["show", "flannel-wg", "latest-handshakes"])
            #expect(show.split(separator: "\n").count == 1 && !show.hasSuffix("\t0\n"), "\(show)")
            #expect(cluster.stopAgent(0) == 0)
            #expect((try? hosts[0].ip("link", "show", "flannel-wg")) == nil)
        }
    }

    /// Where the kernel has none, asking for the kernel engine fails with the reason and the
    /// way out, and takes no lease; auto runs Twill's own engine and says so.
    @Test(.enabled(if: !Self.kernelHasWireGuard, "this kernel has WireGuard: the missing-module path cannot be seen here"))
    func kernelEngineAskedForWithoutTheModule() async throws {
        try await withCluster(hosts: 1, underlay: "198.51.100") { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", Self.config])
            try cluster.startAgent(
                0, extra: ["--wireguard-engine", "kernel"], environment: ["WIREGUARD_KEY_FILE": Self.keyFile(cluster, 0)])
            #expect(
                await eventually(timeout: .seconds(20)) { cluster.agentLog(0).contains("the kernel has no WireGuard") },
                "\(cluster.agentLog(0))")
            #expect(cluster.agentLog(0).contains("--wireguard-engine=userspace"))
            #expect(cluster.subnet(0) == nil)
            cluster.stopAgent(0, signal: SIGKILL)
            guard try await Self.start(cluster, [0]) != nil else { return }
            #expect(cluster.agentLog(0).contains("engine=userspace"), "\(cluster.agentLog(0))")
        }
    }

    /// The agent's own test (`--wireguard-engine auto`): the generic netlink family resolves.
    static var kernelHasWireGuard: Bool { WireGuardNetlink.isAvailable }

    /// argv: source, destination, port, seconds. Sends 32 KiB every 10 ms for that long over one
    /// connection (the same output as TCPTransferScripts.source).
    static let slowSource = #"""
        import hashlib, random, socket, sys, time
        src, dst, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        for attempt in range(100):
            try:
                c = socket.create_connection((dst, port), timeout=60, source_address=(src, 0)); break
            except OSError:
                time.sleep(0.1)
        h = hashlib.sha256(); sent = 0; rng = random.Random(3); end = time.time() + seconds
        while time.time() < end:
            chunk = rng.randbytes(32768); c.sendall(chunk); h.update(chunk); sent += len(chunk); time.sleep(0.01)
        c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
        print(sent, h.hexdigest(), flush=True)
        """#
}
