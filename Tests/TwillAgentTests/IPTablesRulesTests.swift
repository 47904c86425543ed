import Foundation
import Logging
import Synchronization
import Testing
import TwillAddress
import TwillTestSupport

@testable import TwillAgent

/// flannel's masquerade and forward rules. Everything that runs iptables does so inside
/// throwaway namespaces (through `commandPrefix`), never in the machine's own namespace.
@Suite(.requiresRoot) struct IPTablesRulesTests {
    static let network = IPv4Network("198.18.0.0/16")!
    static let subnet = IPv4Network("198.18.5.0/24")!

    static let masqRules = [
        #"-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG"#,
        #"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN"#,
        #"-A FLANNEL-POSTRTG -s 198.18.5.0/24 -d 198.18.0.0/16 -m comment --comment "flanneld masq" -j RETURN"#,
        #"-A FLANNEL-POSTRTG -s 198.18.0.0/16 -d 198.18.5.0/24 -m comment --comment "flanneld masq" -j RETURN"#,
        #"-A FLANNEL-POSTRTG ! -s 198.18.0.0/16 -d 198.18.5.0/24 -m comment --comment "flanneld masq" -j RETURN"#,
        #"-A FLANNEL-POSTRTG -s 198.18.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully"#,
        #"-A FLANNEL-POSTRTG ! -s 198.18.0.0/16 -d 198.18.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully"#,
    ]
    static let forwardRules = [
        #"-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD"#,
        #"-A FLANNEL-FWD -s 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT"#,
        #"-A FLANNEL-FWD -d 198.18.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT"#,
    ]
    /// Someone else's rule in POSTROUTING, which Twill must leave alone.
    static let foreignRule = "-A POSTROUTING -s 198.51.100.0/24 -j MASQUERADE"

    /// What `iptables -t nat -S` shows in a fresh namespace holding the foreign rule and ours.
    static let natWithRules =
        [
            "-P PREROUTING ACCEPT", "-P INPUT ACCEPT", "-P OUTPUT ACCEPT", "-P POSTROUTING ACCEPT",
            "-N FLANNEL-POSTRTG", foreignRule,
        ] + masqRules
    static let natWithoutRules = [
        "-P PREROUTING ACCEPT", "-P INPUT ACCEPT", "-P OUTPUT ACCEPT", "-P POSTROUTING ACCEPT",
        foreignRule,
    ]
    static let filterWithRules = ["-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT", "-N FLANNEL-FWD"] + forwardRules
    static let filterWithoutRules = ["-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT"]

    // MARK: - Helpers

    /// IPTablesRules acting on `ns`.
    static func masquerade(
        in ns: TestNamespace, network: IPv4Network = network, subnet: IPv4Network = subnet,
        forwardRules: Bool = true
    ) -> IPTablesRules {
        var logger = Logger(label: "twill.ipmasq.test")
        logger.logLevel = .debug
        return IPTablesRules(
            overlay: Overlay(v4: OverlayPart(network: network, subnet: subnet)), forwardRules: forwardRules, logger: logger,
            commandPrefix: ["/usr/sbin/ip", "netns", "exec", ns.name])
    }

    /// `iptables -w ARGS` in `ns`.
    @discardableResult
    static func iptables(_ ns: TestNamespace, _ arguments: [String]) throws -> String {
        try ns.exec("/usr/sbin/iptables", ["-w"] + arguments)
    }

    /// `iptables -t TABLE -S` in `ns`, one line per element.
    static func listing(_ ns: TestNamespace, _ table: String) throws -> [String] {
        try iptables(ns, ["-t", table, "-S"]).split(separator: "\n").map(String.init)
    }

    /// A namespace with the foreign rule in place.
    static func withRuleNamespace<T>(_ body: (TestNamespace) async throws -> T) async throws -> T {
        try await withNamespaces(["node"]) { namespaces in
            let ns = namespaces[0]
            try iptables(ns, ["-t", "nat", "-A", "POSTROUTING", "-s", "198.51.100.0/24", "-j", "MASQUERADE"])
            return try await body(ns)
        }
    }

    // MARK: - Rule list

    @Test func ruleListIsFlannels() {
        let masq = IPTablesRules(overlay: Overlay(v4: OverlayPart(network: Self.network, subnet: Self.subnet)), forwardRules: true)
        #expect(masq.savedRules == ["nat": Self.masqRules, "filter": Self.forwardRules])
        let noForward = IPTablesRules(overlay: Overlay(v4: OverlayPart(network: Self.network, subnet: Self.subnet)), forwardRules: false)
        #expect(noForward.savedRules == ["nat": Self.masqRules])
        // Forward rules alone: what the agent installs by default without --ip-masq.
        let forwardOnly = IPTablesRules(
            overlay: Overlay(v4: OverlayPart(network: Self.network, subnet: Self.subnet)), forwardRules: true, masquerade: false)
        #expect(forwardOnly.savedRules == ["filter": Self.forwardRules])
    }

    // MARK: - In a namespace

    @Test func ensureInstallsExactlyTheChainsAndIsIdempotent() async throws {
        try await Self.withRuleNamespace { (ns: TestNamespace) async throws in
            let masq = Self.masquerade(in: ns)
            #expect(try masq.ensure())
            #expect(try Self.listing(ns, "nat") == Self.natWithRules)
            #expect(try Self.listing(ns, "filter") == Self.filterWithRules)
            // A second pass (and a second instance, as after an agent restart) adds nothing.
            #expect(try !masq.ensure())
            #expect(try !Self.masquerade(in: ns).ensure())
            #expect(try Self.listing(ns, "nat") == Self.natWithRules)
            #expect(try Self.listing(ns, "filter") == Self.filterWithRules)
        }
    }

    @Test func ensureRestoresRemovedAndChangedRules() async throws {
        try await Self.withRuleNamespace { (ns: TestNamespace) async throws in
            let masq = Self.masquerade(in: ns)
            try masq.ensure()
            // Remove a rule from the middle, a jump, duplicate a jump and add a stranger.
            try Self.iptables(ns, ["-t", "nat", "-D", "FLANNEL-POSTRTG", "3"])
            try Self.iptables(
                ns, ["-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"])
            try Self.iptables(ns, ["-t", "filter", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD"])
            try Self.iptables(ns, ["-t", "filter", "-I", "FLANNEL-FWD", "-s", "203.0.113.0/24", "-j", "ACCEPT"])
            #expect(try Self.listing(ns, "nat") != Self.natWithRules)
            #expect(try Self.listing(ns, "filter") != Self.filterWithRules)
            #expect(try masq.ensure())
            #expect(try Self.listing(ns, "nat") == Self.natWithRules)
            #expect(try Self.listing(ns, "filter") == Self.filterWithRules)

            // A whole chain deleted (jump first, as iptables requires) comes back too.
            try Self.iptables(
                ns, ["-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"])
            try Self.iptables(ns, ["-t", "nat", "-F", "FLANNEL-POSTRTG"])
            try Self.iptables(ns, ["-t", "nat", "-X", "FLANNEL-POSTRTG"])
            #expect(try masq.ensure())
            #expect(try Self.listing(ns, "nat") == Self.natWithRules)
        }
    }

    @Test func changingSubnetOrNetworkReplacesOldRules() async throws {
        try await Self.withRuleNamespace { (ns: TestNamespace) async throws in
            try Self.masquerade(in: ns).ensure()
            let moved = Self.masquerade(in: ns, subnet: IPv4Network("198.18.6.0/24")!)
            #expect(try moved.ensure())
            let nat = try Self.listing(ns, "nat")
            #expect(!nat.contains { $0.contains("198.18.5.") }, "old subnet left behind: \(nat)")
            #expect(nat == Self.natWithRules.map { $0.replacingOccurrences(of: "198.18.5.0/24", with: "198.18.6.0/24") })

            let renumbered = Self.masquerade(in: ns, network: IPv4Network("198.18.0.0/15")!, subnet: IPv4Network("198.19.1.0/24")!)
            #expect(try renumbered.ensure())
            let all = try Self.listing(ns, "nat") + Self.listing(ns, "filter")
            #expect(!all.contains { $0.contains("198.18.0.0/16") || $0.contains("198.18.6.") }, "old network left behind: \(all)")
            #expect(all.filter { $0.contains("198.18.0.0/15") }.count == 5 + 2)
            #expect(all.filter { $0.hasPrefix("-A POSTROUTING -m comment") }.count == 1)
            #expect(all.filter { $0.hasPrefix("-A FORWARD") }.count == 1)
        }
    }

    @Test func teardownRemovesEverythingAndOnlyThat() async throws {
        try await Self.withRuleNamespace { (ns: TestNamespace) async throws in
            let masq = Self.masquerade(in: ns)
            try masq.ensure()
            masq.teardown()
            #expect(try Self.listing(ns, "nat") == Self.natWithoutRules)
            #expect(try Self.listing(ns, "filter") == Self.filterWithoutRules)
            masq.teardown() // nothing left to remove: harmless
            #expect(try Self.listing(ns, "nat") == Self.natWithoutRules)

            // Without forward rules the filter table is not Twill's business: neither
            // installed nor removed.
            try masq.ensure()
            let natOnly = Self.masquerade(in: ns, forwardRules: false)
            #expect(try !natOnly.ensure())
            natOnly.teardown()
            #expect(try Self.listing(ns, "nat") == Self.natWithoutRules)
            #expect(try Self.listing(ns, "filter") == Self.filterWithRules)
            masq.teardown()
            #expect(try Self.listing(ns, "filter") == Self.filterWithoutRules)
        }
    }

    @Test func runRestoresRulesUntilCancelled() async throws {
        try await Self.withRuleNamespace { (ns: TestNamespace) async throws in
            let masq = Self.masquerade(in: ns)
            try masq.ensure()
            let loop = Task { await masq.run(resync: .milliseconds(200)) }
            defer { loop.cancel() }
            try Self.iptables(ns, ["-t", "nat", "-D", "FLANNEL-POSTRTG", "1"])
            try Self.iptables(ns, ["-t", "filter", "-D", "FORWARD", "1"])
            #expect(
                await eventually(timeout: .seconds(5)) {
                    (try? Self.listing(ns, "nat")) == Self.natWithRules && (try? Self.listing(ns, "filter")) == Self.filterWithRules
                })
            loop.cancel()
            // The loop ends promptly once cancelled (bounded wait for it).
            let done = DoneFlag()
            Task {
                await loop.value
                done.set()
            }
            #expect(await eventually(timeout: .seconds(5)) { done.isSet })
            masq.teardown()
            try await Task.sleep(for: .milliseconds(600))
            #expect(try Self.listing(ns, "nat") == Self.natWithoutRules, "a cancelled loop put rules back")
        }
    }

    @Test func errorsNameTheCommandAndItsStderr() async throws {
        let missing = uniqueTestPrefix() + "missing"
        let masq = IPTablesRules(
            overlay: Overlay(v4: OverlayPart(network: Self.network, subnet: Self.subnet)), forwardRules: true,
            commandPrefix: ["/usr/sbin/ip", "netns", "exec", missing])
        do {
            try masq.ensure()
            Issue.record("ensure in a missing namespace succeeded")
        } catch let error as IPTablesError {
            #expect(error.command.contains { $0.hasSuffix("/iptables") })
            #expect(error.command.contains(missing))
            #expect(error.status != nil && error.status != 0)
            #expect(error.stderr.contains(missing), "stderr: \(error.stderr)")
            #expect(error.description.contains("ip netns exec \(missing)"))
            #expect(error.description.contains("-t nat -S"))
        }
        // teardown reports and carries on rather than throwing.
        masq.teardown()
    }

    // MARK: - Traffic

    /// node: bridge br0 198.18.5.1/24 with pods 198.18.5.2 and 198.18.5.3, and eth1
    /// 203.0.113.1/24 towards "outside" (203.0.113.2/24), which also holds 198.18.9.1 as a pod
    /// on another node's subnet 198.18.9.0/24 (routed over the underlay both ways). The outside host
    /// also routes 198.18.5.0/24 back to the node, so that without masquerade a pod's own
    /// address would get through: the control shows the test can tell the two apart.
    @Test func podTrafficIsMasqueradedOnlyWhenLeavingTheOverlay() async throws {
        let dir = try makeTempDir(prefix: "twill-test-ipmasq-")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = dir + "/peer_server.py"
        try Self.peerServer.write(toFile: server, atomically: false, encoding: .utf8)
        let client = dir + "/peer_client.py"
        try Self.peerClient.write(toFile: client, atomically: false, encoding: .utf8)

        try await withNamespaces(["node", "pod", "pod2", "outside"]) { namespaces in
            let (node, pod, pod2, outside) = (namespaces[0], namespaces[1], namespaces[2], namespaces[3])
            try node.ip("link", "add", "br0", "type", "bridge")
            try node.ip("addr", "add", "198.18.5.1/24", "dev", "br0")
            try node.ip("link", "set", "br0", "up")
            for (ns, address, port) in [(pod, "198.18.5.2", "vpod"), (pod2, "198.18.5.3", "vpod2")] {
                try node.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
                try node.ip("link", "set", port, "master", "br0", "up")
                try ns.ip("addr", "add", "\(address)/24", "dev", "eth0")
                try ns.ip("link", "set", "eth0", "up")
                try ns.ip("route", "add", "default", "via", "198.18.5.1")
            }
            try node.ip("link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", outside.name)
            try node.ip("addr", "add", "203.0.113.1/24", "dev", "eth1")
            try node.ip("link", "set", "eth1", "up")
            try outside.ip("addr", "add", "203.0.113.2/24", "dev", "eth0")
            try outside.ip("link", "set", "eth0", "up")
            // (on lo: this kernel has no dummy driver)
            try outside.ip("addr", "add", "198.18.9.1/32", "dev", "lo")
            try outside.ip("route", "add", "198.18.5.0/24", "via", "203.0.113.1")
            try node.ip("route", "add", "198.18.9.0/24", "via", "203.0.113.2")
            try node.exec("/usr/sbin/sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"])
            try outside.exec("/usr/sbin/sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"])

            // One-shot-per-connection TCP servers that answer each client with the source
            // address they saw; they exit by themselves after 60 s idle, and withNamespaces
            // kills whatever still runs in the namespaces.
            let servers = try [outside, pod2].map { ns in
                try ChildProcess(
                    "/usr/sbin/ip", ["netns", "exec", ns.name, "/usr/bin/python3", server, "8080"],
                    logPath: dir + "/server-\(ns.name).log")
            }
            defer { for s in servers { s.stop(signal: SIGKILL) } }

            /// The source address `destination`'s server saw for a connection from the pod.
            func sourceSeen(by destination: String) async -> String? {
                var seen: String?
                _ = await eventually(timeout: .seconds(5)) {
                    seen = try? run("/usr/sbin/ip", ["netns", "exec", pod.name, "/usr/bin/python3", client, destination, "8080"])
                        .trimmingCharacters(in: .whitespacesAndNewlines)
                    return seen != nil
                }
                return seen
            }

            // Control: no rules yet, so the outside host sees the pod's own address.
            #expect(await sourceSeen(by: "203.0.113.2") == "198.18.5.2")

            let masq = Self.masquerade(in: node)
            try masq.ensure()
            // Leaving the overlay: the node's address.
            #expect(await sourceSeen(by: "203.0.113.2") == "203.0.113.1")
            #expect(pod.ping("203.0.113.2"))
            // A pod on another node's subnet, reached over the same underlay: not masqueraded.
            #expect(await sourceSeen(by: "198.18.9.1") == "198.18.5.2")
            // A pod on the same bridge: not masqueraded.
            #expect(await sourceSeen(by: "198.18.5.3") == "198.18.5.2")
            // The MASQUERADE rule counted the outside connection (proof the rule, not
            // something else, did it).
            let counters = try node.exec("/usr/sbin/iptables", ["-w", "-t", "nat", "-L", "FLANNEL-POSTRTG", "-n", "-v", "-x"])
            let masqueradeLine = counters.split(separator: "\n").first { $0.contains("MASQUERADE") && $0.contains("!224.0.0.0/4") }
            let packets = masqueradeLine.flatMap { Int($0.split(separator: " ").first ?? "") } ?? 0
            #expect(packets > 0, "\(counters)")

            masq.teardown()
            // Rules gone: new connections keep the pod's address again.
            #expect(await sourceSeen(by: "203.0.113.2") == "198.18.5.2")
        }
    }

    /// Serves TCP on 0.0.0.0:PORT, writing each client's source address back to it.
    static let peerServer = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", int(sys.argv[1])))
        s.listen(16)
        s.settimeout(60)
        while True:
            try:
                c, peer = s.accept()
            except socket.timeout:
                sys.exit(0)
            print(peer[0], flush=True)
            c.sendall((peer[0] + "\\n").encode())
            c.close()
        """

    /// Connects to HOST PORT and prints what the server wrote (the address it saw).
    static let peerClient = """
        import socket, sys
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
        c.settimeout(2)
        print(c.recv(64).decode().strip())
        """
}

private final class DoneFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
