import Foundation
import Logging
import Testing
import TwillAddress
import TwillAgent
import TwillDatapath
import TwillEtcd
import TwillLease
import TwillTestSupport

/// The agent's control plane, in-process, with the lease-only backend and a real etcd.
@Suite(.serialized, .requiresEtcd) struct AgentTests {
    static func configuration(_ etcd: EtcdServer, dir: String, ip: String, ttl: Int = 86400) -> AgentConfiguration {
        var c = AgentConfiguration(etcd: EtcdConfiguration(endpoints: [etcd.endpoint]))
        c.ifaces = ["lo"]
        c.publicIP = IPv4Address(ip)
        c.subnetFile = dir + "/subnet.env"
        c.leaseTTL = .seconds(ttl)
        c.configRetryInterval = .milliseconds(200)
        return c
    }

    static func start(_ c: AgentConfiguration) -> (Agent, Task<Void, any Error>) {
        let agent = Agent(configuration: c) { _, ext in AllocBackend(mtu: ext.mtu) }
        return (agent, Task { try await agent.run() })
    }

    @Test func waitsForConfigThenLeasesAndWritesSubnetEnv() async throws {
        try await withEtcd { etcd in
            let dir = try makeTempDir(prefix: "twill-test-agent-")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let (agent, task) = Self.start(Self.configuration(etcd, dir: dir, ip: "198.51.100.1"))
            defer { task.cancel() }
            try await Task.sleep(for: .milliseconds(600))
            #expect(!agent.state.isReady)
            let c = try etcd.client()
            try await c.put("/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"alloc"}}"#)
            #expect(await eventually { agent.state.isReady })
            let env = try #require(try SubnetEnv.read(path: dir + "/subnet.env", requireComplete: true))
            #expect(env.network == IPv4Network("198.18.0.0/16"))
            #expect(env.subnet == agent.state.lease?.subnet.ipv4)
            #expect(env.mtu == 65536) // lo's MTU: the alloc backend reports the interface's
            let kv = try await c.value("/coreos.com/network/subnets/\(try #require(agent.state.lease?.subnet))")
            #expect(kv.valueString == #"{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"alloc"}"#)
            #expect(kv.lease != 0)
        }
    }

    @Test func deletedLeaseIsReacquiredWhileRunning() async throws {
        try await withEtcd { etcd in
            let dir = try makeTempDir(prefix: "twill-test-agent-")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let c = try etcd.client()
            try await c.put("/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"alloc"}}"#)
            let (agent, task) = Self.start(Self.configuration(etcd, dir: dir, ip: "198.51.100.2"))
            defer { task.cancel() }
            #expect(await eventually { agent.state.isReady })
            let subnet = try #require(agent.state.lease?.subnet)
            let key = "/coreos.com/network/subnets/\(subnet)"
            try await c.delete(key)
            // The watch sees its own key go and the agent puts it back well before any renewal.
            #expect(try await eventually(timeout: .seconds(10)) { try await !c.get(key).kvs.isEmpty })
            #expect(agent.state.lease?.subnet == subnet)
            // Revoked etcd lease (as on expiry): back again on the same subnet.
            try await c.revoke(lease: try await c.value(key).lease)
            #expect(try await eventually(timeout: .seconds(10)) { try await !c.get(key).kvs.isEmpty })
            #expect(task.isCancelled == false)
        }
    }

    @Test func shortTTLIsKeptAliveAndRestartReusesSubnet() async throws {
        try await withEtcd { etcd in
            let dir = try makeTempDir(prefix: "twill-test-agent-")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let c = try etcd.client()
            try await c.put("/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"alloc"}}"#)
            let config = Self.configuration(etcd, dir: dir, ip: "198.51.100.3", ttl: 3)
            #expect(config.renewInterval == .seconds(1))
            let (agent, task) = Self.start(config)
            #expect(await eventually { agent.state.isReady })
            let first = try #require(agent.state.lease)
            // Three TTLs later the same lease (same etcd lease) is still there.
            try await Task.sleep(for: .seconds(9))
            let kv = try await c.value("/coreos.com/network/subnets/\(first.subnet)")
            #expect(kv.lease == first.etcdLease)
            task.cancel()
            _ = try? await task.value
            // A new agent for the same node gets the same subnet back.
            let (again, task2) = Self.start(config)
            defer { task2.cancel() }
            #expect(await eventually { again.state.isReady })
            #expect(again.state.lease?.subnet == first.subnet)
        }
    }

    @Test func peersAreReportedFromTheWatch() async throws {
        try await withEtcd { etcd in
            let dir = try makeTempDir(prefix: "twill-test-agent-")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let c = try etcd.client()
            try await c.put("/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"alloc"}}"#)
            try await c.put("/coreos.com/network/subnets/198.18.200.0-24", #"{"PublicIP":"203.0.113.200","PublicIPv6":null}"#)
            let (agent, task) = Self.start(Self.configuration(etcd, dir: dir, ip: "198.51.100.4"))
            defer { task.cancel() }
            #expect(await eventually { agent.state.isReady && agent.state.peerCount == 1 })
            try await c.put("/coreos.com/network/subnets/198.18.201.0-24", #"{"PublicIP":"203.0.113.201","PublicIPv6":null}"#)
            #expect(await eventually { agent.state.peerCount == 2 })
            try await c.delete("/coreos.com/network/subnets/198.18.200.0-24")
            #expect(await eventually { agent.state.peerCount == 1 })
        }
    }
}
