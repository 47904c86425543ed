import Foundation
import Testing
import TwillTestSupport

/// Kubernetes-style pods across two nodes: each node runs `twill agent`; pods (namespaces) are
/// wired by `twill cni` acting as flannel's CNI plugin with Debian's bridge, host-local and
/// loopback plugins; every pod reaches every other.
@Suite(.serialized) struct CNIEndToEndTests {
    static let cniPath = "/usr/lib/cni"

    /// Runs the plugin for `command` inside `host`, for the pod namespace `pod`.
    static func cni(_ cluster: TestCluster, host i: Int, pod: TestNamespace, id: String, command: String) throws -> String {
        let conf =
            #"{"cniVersion":"0.4.0","name":"twill-e2e","type":"flannel","subnetFile":"\#(cluster.subnetFile(i))","dataDir":"\#(cluster.dir)/cni-h\#(i + 1)","delegate":{"ipam":{"dataDir":"\#(cluster.dir)/ipam-h\#(i + 1)"}}}"#
        let env = ["CNI_COMMAND": command, "CNI_CONTAINERID": id, "CNI_NETNS": pod.path, "CNI_IFNAME": "eth0", "CNI_PATH": cniPath]
        return try run(
            "/usr/sbin/ip", ["netns", "exec", cluster.net.hosts[i].name, try twillBinary(), "cni"], environment: env, input: conf)
    }

    /// The pod's IPv4 address on eth0.
    static func address(of pod: TestNamespace) -> String? {
        guard let out = try? pod.ip("-4", "-o", "addr", "show", "eth0") else { return nil }
        return out.split(separator: " ").first { $0.contains("/") }.map { String($0.split(separator: "/")[0]) }
    }

    @Test(arguments: [("udp", "198.51.100"), ("vxlan", "203.0.113")])
    func podsOnTwoNodesReachEachOther(backend: String, underlay: String) async throws {
        guard FileManager.default.isExecutableFile(atPath: "\(Self.cniPath)/bridge") else {
            Issue.record("containernetworking-plugins is not installed (make deps installs it)")
            return
        }
        try await withCluster(hosts: 2, underlay: underlay) { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"\#(backend)"}}"#])
            for i in 0..<2 {
                try cluster.net.hosts[i].exec("/usr/sbin/sysctl", ["-qw", "net.ipv4.ip_forward=1"])
                try cluster.startAgent(i)
            }
            for i in 0..<2 {
                #expect(await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }, "\(cluster.agentLog(i))")
            }
            try await withNamespaces(["pa1", "pa2", "pb1", "pb2"]) { pods in
                let placement = [(pods[0], 0), (pods[1], 0), (pods[2], 1), (pods[3], 1)]
                for (n, (pod, host)) in placement.enumerated() {
                    let result = try Self.cni(cluster, host: host, pod: pod, id: "pod\(n)", command: "ADD")
                    #expect(result.contains("\"ips\""), "\(result)")
                }
                let addresses = placement.map { Self.address(of: $0.0) ?? "" }
                for (n, (_, host)) in placement.enumerated() {
                    let subnet = cluster.subnet(host) ?? ""
                    #expect(
                        addresses[n].hasPrefix(subnet.replacingOccurrences(of: ".0/24", with: ".")),
                        "pod \(n) got \(addresses[n]), host subnet \(subnet)")
                }
                // Every pod pings every other pod, across nodes and on the same node.
                for (a, (podA, _)) in placement.enumerated() {
                    for (b, _) in placement.enumerated() where a != b {
                        #expect(
                            podA.pingEventually(addresses[b], attempts: 5),
                            "pod \(a) (\(addresses[a])) cannot reach pod \(b) (\(addresses[b]))")
                    }
                }
                // DEL takes the pod's interface away and frees its address.
                _ = try Self.cni(cluster, host: 1, pod: pods[3], id: "pod3", command: "DEL")
                #expect(!(try pods[3].ip("link")).contains("eth0"))
                let ipam = (try? FileManager.default.contentsOfDirectory(atPath: cluster.dir + "/ipam-h2/twill-e2e")) ?? []
                #expect(!ipam.contains(addresses[3]), "\(ipam)")
                #expect(ipam.contains(addresses[2]))
                // The freed address is handed out again.
                _ = try Self.cni(cluster, host: 1, pod: pods[3], id: "pod3b", command: "ADD")
                #expect(Self.address(of: pods[3]) != nil)
                for (n, (pod, host)) in placement.enumerated() {
                    _ = try Self.cni(cluster, host: host, pod: pod, id: n == 3 ? "pod3b" : "pod\(n)", command: "DEL")
                }
            }
        }
    }

    /// The pod's global IPv6 address on eth0.
    static func address6(of pod: TestNamespace) -> String? {
        guard let out = try? pod.ip("-6", "-o", "addr", "show", "eth0", "scope", "global") else { return nil }
        return out.split(separator: " ").first { $0.contains("/") }.map { String($0.split(separator: "/")[0]) }
    }

    /// A dual-stack network: each pod gets an address of each family from its node's subnets,
    /// and reaches the pods of the other node over both.
    @Test(arguments: ["host-gw", "udp"])
    func dualStackPods(backend: String) async throws {
        guard FileManager.default.isExecutableFile(atPath: "\(Self.cniPath)/bridge") else {
            Issue.record("containernetworking-plugins is not installed (make deps installs it)")
            return
        }
        try await withCluster(hosts: 2, underlay: "198.51.100", ipv6: true) { cluster in
            try cluster.etcdctl([
                "put", "/coreos.com/network/config",
                #"{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","Backend":{"Type":"\#(backend)"}}"#,
            ])
            for i in 0..<2 {
                try cluster.net.hosts[i].exec("/usr/sbin/sysctl", ["-qw", "net.ipv4.ip_forward=1"])
                // --ip-masq, as flannel's manifests run it: pod-to-pod traffic keeps its
                // addresses (the bridge plugin's own masquerade would rewrite it on both
                // nodes, which breaks host-gw's unencapsulated replies).
                try cluster.startAgent(i, extra: ["--ip-masq"])
            }
            for i in 0..<2 {
                #expect(await eventually(timeout: .seconds(20)) { cluster.subnet6(i) != nil }, "\(cluster.agentLog(i))")
            }
            try await withNamespaces(["pa", "pb"]) { pods in
                for (n, pod) in pods.enumerated() {
                    let result = try Self.cni(cluster, host: n, pod: pod, id: "pod\(n)", command: "ADD")
                    #expect(result.contains(cluster.subnet6(n).map { String($0.dropLast(4)) } ?? "?"), "\(result)")
                }
                let v4 = pods.map { Self.address(of: $0) ?? "" }
                #expect(await eventually(timeout: .seconds(10)) { pods.allSatisfy { Self.address6(of: $0) != nil } })
                let v6 = pods.map { Self.address6(of: $0) ?? "" }
                for n in 0..<2 {
                    #expect(v6[n].hasPrefix(cluster.subnet6(n).map { String($0.dropLast(4)) } ?? "?"), "pod \(n): \(v6[n])")
                }
                let diagnose = { () -> String in
                    cluster.net.hosts.map { h in
                        ((try? h.ip("route")) ?? "") + ((try? h.ip("-6", "route")) ?? "")
                            + ((try? h.exec("/usr/sbin/iptables", ["-w", "-S"])) ?? "")
                    }.joined(separator: "\n---\n") + "\n" + String(cluster.agentLog(0).suffix(3000))
                }
                #expect(pods[0].pingEventually(v4[1], attempts: 5), "pod a cannot reach \(v4[1]): \(diagnose())")
                var reached = false
                for _ in 0..<10 where !reached {
                    reached = (try? pods[0].exec("/usr/bin/ping", ["-6", "-n", "-c1", "-W2", v6[1]])) != nil
                }
                #expect(reached, "pod a cannot reach pod b at \(v6[1]): \((try? pods[0].ip("-6", "route")) ?? "")")
                for (n, pod) in pods.enumerated() { _ = try Self.cni(cluster, host: n, pod: pod, id: "pod\(n)", command: "DEL") }
            }
        }
    }
}
