import Foundation
import Testing
import TwillTestSupport

/// Three hosts (namespaces on one bridge), etcd, and a real `twill agent` on each host, for
/// the backends whose data path is the kernel's own.
@Suite(.serialized) struct KernelBackendEndToEndTests {
    static func routes(_ cluster: TestCluster, _ i: Int) -> String {
        (try? cluster.net.hosts[i].ip("route", "show", "proto", "84")) ?? ""
    }

    /// Overlay route destinations Twill owns on host `i`.
    static func ownedDestinations(_ cluster: TestCluster, _ i: Int) -> Set<String> {
        Set(routes(cluster, i).split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
    }

    /// The bridge address a host's containers would use as gateway: the subnet's .1.
    static func gateway(_ subnet: String) -> String {
        subnet.replacingOccurrences(of: ".0/24", with: ".1")
    }

    @Test(arguments: [("host-gw", "198.51.100"), ("vxlan", "203.0.113")])
    func threeNodes(backend: String, underlay: String) async throws {
        try await withCluster(hosts: 3, underlay: underlay) { cluster in
            let hosts = cluster.net.hosts
            // A route Twill does not own, inside the overlay, made before the agent starts.
            try hosts[0].ip("route", "add", "198.18.250.0/24", "via", "\(underlay).3", "dev", "eth0")
            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"\#(backend)"}}"#])
            for i in 0..<3 { try cluster.startAgent(i, extra: i == 1 ? [] : ["--ip-masq", "--iptables-resync", "1"]) }
            for i in 0..<3 {
                let ok = await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }
                #expect(ok, "agent \(i + 1) wrote no subnet.env: \(cluster.agentLog(i))")
                if !ok { return }
            }
            let subnets = (0..<3).map { cluster.subnet($0) ?? "" }
            #expect(Set(subnets).count == 3)
            // Each host gets a bridge with the first address of its subnet, as docker0 would.
            for (i, h) in hosts.enumerated() {
                try h.ip("link", "add", "twb0", "type", "bridge")
                try h.ip("addr", "add", "\(Self.gateway(subnets[i]))/24", "dev", "twb0")
                try h.ip("link", "set", "twb0", "up")
            }
            // Everyone reaches everyone, subnet to subnet.
            for i in 0..<3 {
                #expect(
                    await eventually(timeout: .seconds(15)) { Self.ownedDestinations(cluster, i).count == 2 },
                    "host \(i + 1) routes: \(Self.routes(cluster, i))\n\(cluster.agentLog(i))")
                for j in 0..<3 where j != i {
                    #expect(
                        hosts[i].pingEventually(Self.gateway(subnets[j]), from: Self.gateway(subnets[i])),
                        "\(backend): h\(i + 1) cannot reach h\(j + 1)'s subnet \(subnets[j])")
                }
            }
            // --ip-masq: flannel's chain for this host's subnet, restored when flushed by hand.
            let masq = { (try? hosts[0].exec("/usr/sbin/iptables", ["-w", "-t", "nat", "-S", "FLANNEL-POSTRTG"])) ?? "" }
            #expect(masq().contains("-s \(subnets[0]) -d 198.18.0.0/16") && masq().contains("MASQUERADE --random-fully"))
            try hosts[0].exec("/usr/sbin/iptables", ["-w", "-t", "nat", "-F", "FLANNEL-POSTRTG"])
            #expect(await eventually(timeout: .seconds(10)) { masq().contains("MASQUERADE") })
            // A route deleted by hand comes back.
            try hosts[0].ip("route", "del", subnets[1])
            #expect(await eventually(timeout: .seconds(10)) { Self.ownedDestinations(cluster, 0).contains(subnets[1]) })
            // Host 3 dies hard and its lease is deleted: exactly its state goes from the others.
            cluster.stopAgent(2, signal: SIGKILL)
            try cluster.etcdctl(["del", cluster.leaseKey(subnets[2])])
            for i in 0..<2 {
                #expect(
                    await eventually(timeout: .seconds(10)) { Self.ownedDestinations(cluster, i) == [subnets[1 - i]] },
                    "host \(i + 1) still has \(Self.routes(cluster, i))")
            }
            if backend == "vxlan" {
                // Its neighbour and FDB entries went too.
                let neigh = try hosts[0].ip("neigh", "show", "dev", "flannel.1")
                #expect(!neigh.contains(Self.gateway(subnets[2]).replacingOccurrences(of: ".1", with: ".0")))
                #expect(try hosts[0].ip("-d", "link", "show", "flannel.1").contains("vxlan id 1"))
            }
            // Host 1 dies hard too, its lease is deleted, and it comes back: no stale state anywhere.
            cluster.stopAgent(0, signal: SIGKILL)
            try cluster.etcdctl(["del", cluster.leaseKey(subnets[0])])
            try cluster.startAgent(0, extra: ["--ip-masq", "--iptables-resync", "1"])
            #expect(
                await eventually(timeout: .seconds(20)) {
                    guard let s = cluster.subnet(0) else { return false }
                    return (try? cluster.etcdctl(["get", cluster.leaseKey(s)]))?.contains("PublicIP") == true
                })
            let again = cluster.subnet(0) ?? ""
            #expect(
                await eventually(timeout: .seconds(10)) { Self.ownedDestinations(cluster, 0) == [subnets[1]] },
                "h1: \(Self.routes(cluster, 0))")
            #expect(
                await eventually(timeout: .seconds(10)) { Self.ownedDestinations(cluster, 1) == [again] }, "h2: \(Self.routes(cluster, 1))")
            #expect(hosts[1].pingEventually(Self.gateway(again), from: Self.gateway(subnets[1])))
            // The foreign route survived every reconcile.
            #expect(try hosts[0].ip("route", "show", "198.18.250.0/24").contains("via \(underlay).3"))
            // A clean stop leaves the data path (routes, rules) in place; `twill cleanup` takes the
            // agent's own kernel state away, masquerade rules included, and leaves the foreign route.
            #expect(cluster.stopAgent(0) == 0)
            #expect(masq().contains("MASQUERADE"))
            #expect(Self.ownedDestinations(cluster, 0) == [subnets[1]])
            try cluster.cleanup(0)
            #expect(!masq().contains("MASQUERADE"))
            #expect(try hosts[0].ip("route", "show", "198.18.250.0/24").contains("via \(underlay).3"))
            #expect(!((try? hosts[0].exec("/usr/sbin/iptables", ["-w", "-S"])) ?? "").contains("FLANNEL-FWD"))
            // Without --ip-masq the FORWARD rules are still there (flannel's default), no nat rules.
            let fwd = (try? hosts[1].exec("/usr/sbin/iptables", ["-w", "-S", "FLANNEL-FWD"])) ?? ""
            #expect(fwd.contains("-d 198.18.0.0/16") && fwd.contains("-j ACCEPT"), "\(fwd)")
            #expect(Self.ownedDestinations(cluster, 0).isEmpty)
        }
    }
}
