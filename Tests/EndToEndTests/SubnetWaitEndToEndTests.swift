import Foundation
import Testing
import TwillTestSupport

/// A node that found the network out of subnets takes one as soon as a lease is deleted or
/// expires (it watches for that), not at its next 30 s retry.
@Suite(.serialized) struct SubnetWaitEndToEndTests {
    @Test func aFreedSubnetIsTakenAtOnce() async throws {
        try await withCluster(hosts: 3, underlay: "198.51.100") { cluster in
            // Two subnets in all (SubnetMin and SubnetMax).
            try cluster.etcdctl([
                "put", "/coreos.com/network/config",
                #"{"Network":"198.18.0.0/24","SubnetLen":26,"SubnetMin":"198.18.0.0","SubnetMax":"198.18.0.64","Backend":{"Type":"alloc"}}"#,
            ])
            for i in 0..<2 { try cluster.startAgent(i) }
            #expect(await eventually(timeout: .seconds(20)) { cluster.subnet(0) != nil && cluster.subnet(1) != nil })
            try cluster.startAgent(2)
            #expect(
                await eventually(timeout: .seconds(20)) { cluster.agentLog(2).contains("cannot lease a subnet") }, "\(cluster.agentLog(2))")
            // Host 1 is gone for good and its lease deleted (as an expiry would).
            cluster.stopAgent(0, signal: SIGKILL)
            // FLANNEL_SUBNET is the subnet's first address: 198.18.0.65/26 is 198.18.0.64/26.
            let env = try String(contentsOfFile: cluster.subnetFile(0), encoding: .utf8)
            let first = try #require(
                env.split(separator: "\n").first { $0.hasPrefix("FLANNEL_SUBNET=") }?.dropFirst("FLANNEL_SUBNET=".count))
            let parts = first.split(separator: "/")
            var octets = parts[0].split(separator: ".").compactMap { Int($0) }
            octets[3] -= 1
            let freed = octets.map(String.init).joined(separator: ".") + "/" + parts[1]
            let clock = ContinuousClock()
            let start = clock.now
            #expect(try cluster.etcdctl(["del", cluster.leaseKey(freed)]).contains("1"), "no lease at \(cluster.leaseKey(freed))")
            var took: Duration?
            for _ in 0..<200 where took == nil {
                if cluster.subnet(2) != nil { took = clock.now - start } else { try await Task.sleep(for: .milliseconds(50)) }
            }
            print("out of subnets: a freed subnet taken after \(took.map { "\($0)" } ?? "more than 10 s")")
            #expect(took != nil && took! < .seconds(5), "\(cluster.agentLog(2))")
        }
    }
}
