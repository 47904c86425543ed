import Foundation
import Logging
import Testing
import TwillAddress
import TwillEtcd
import TwillTestSupport

@testable import TwillLease

/// Registry tests against a real etcd.
@Suite(.serialized, .requiresEtcd) struct SubnetRegistryTests {
    static func setConfig(_ c: EtcdClient, _ json: String, layout: EtcdLayout = EtcdLayout()) async throws {
        try await c.put(layout.configKey, json)
    }

    static func node(_ n: Int) -> LeaseAttributes { LeaseAttributes(publicIP: IPv4Address(198, 51, 100, UInt8(n))) }

    @Test func hundredRegistriesAcquireConcurrentlyGetDistinctSubnets() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            try await Self.setConfig(c, #"{"Network":"198.18.0.0/16"}"#)
            let config = try await SubnetRegistry(etcd: c).networkConfig()
            let subnets = try await withThrowingTaskGroup(of: IPv4Network.self) { group in
                for i in 0..<100 {
                    group.addTask {
                        // Each registry has a client of its own, as separate nodes would.
                        let r = SubnetRegistry(etcd: try etcd.client(), maxAttempts: 20)
                        let attrs = LeaseAttributes(publicIP: IPv4Address(rawValue: IPv4Address(198, 51, 100, 0).rawValue + UInt32(i)))
                        return try await r.acquire(config: config, attributes: attrs, previous: nil, ttl: 60).subnet.ipv4
                    }
                }
                var out: [IPv4Network] = []
                for try await s in group { out.append(s) }
                return out
            }
            #expect(subnets.count == 100)
            #expect(Set(subnets).count == 100)
            #expect(subnets.allSatisfy { config.fits($0) })
            #expect(try await c.list(prefix: "/coreos.com/network/subnets/").kvs.count == 100)
        }
    }

    @Test func smallNetworkRunsOutWithClearError() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            try await Self.setConfig(c, #"{"Network":"198.18.0.0/28","SubnetLen":30}"#)
            let r = SubnetRegistry(etcd: c)
            let config = try await r.networkConfig()
            var got: [IPv4Network] = []
            for i in 1...3 { got.append(try await r.acquire(config: config, attributes: Self.node(i), previous: nil, ttl: 60).subnet.ipv4) }
            #expect(Set(got) == [IPv4Network("198.18.0.4/30")!, IPv4Network("198.18.0.8/30")!, IPv4Network("198.18.0.12/30")!])
            do {
                _ = try await r.acquire(config: config, attributes: Self.node(4), previous: nil, ttl: 60)
                Issue.record("expected out of subnets")
            } catch {
                #expect(error as? LeaseError == .outOfSubnets(network: "198.18.0.0/28", subnetLength: 30, total: 3, taken: 3))
                #expect("\(error)" == "out of subnets: 198.18.0.0/28 has 3 subnets of /30 between SubnetMin and SubnetMax, and 3 are taken")
            }
        }
    }

    @Test func restartReusesSubnetByPublicIPThenBySubnetEnv() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            try await Self.setConfig(c, #"{"Network":"198.18.0.0/16"}"#)
            let r = SubnetRegistry(etcd: c)
            let config = try await r.networkConfig()
            let first = try await r.acquire(config: config, attributes: Self.node(1), previous: nil, ttl: 60)
            // Same node again (a restart): its lease is taken over, with the same etcd lease.
            let again = try await r.acquire(config: config, attributes: Self.node(1), previous: nil, ttl: 60)
            #expect(again.subnet == first.subnet)
            #expect(again.etcdLease == first.etcdLease)
            // The lease is gone (released); the previous subnet.env brings it back.
            try await r.release(again)
            #expect(try await r.leases().leases.isEmpty)
            let fromEnv = try await r.acquire(config: config, attributes: Self.node(1), previous: first.subnet.ipv4, ttl: 60)
            #expect(fromEnv.subnet == first.subnet)
            // But never a subnet.env subnet another node holds now.
            let other = try await r.acquire(config: config, attributes: Self.node(2), previous: first.subnet.ipv4, ttl: 60)
            #expect(other.subnet != first.subnet)
        }
    }

    @Test func leaseThatNoLongerFitsIsReplaced() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            try await Self.setConfig(c, #"{"Network":"198.18.0.0/16"}"#)
            let r = SubnetRegistry(etcd: c)
            let old = try await r.acquire(config: try await r.networkConfig(), attributes: Self.node(1), previous: nil, ttl: 60)
            try await Self.setConfig(c, #"{"Network":"198.19.0.0/16","SubnetLen":25}"#)
            let config = try await r.networkConfig()
            let new = try await r.acquire(config: config, attributes: Self.node(1), previous: old.subnet.ipv4, ttl: 60)
            #expect(config.fits(new.subnet.ipv4))
            let keys = try await c.list(prefix: "/coreos.com/network/subnets/").kvs.map(\.key)
            #expect(keys == ["/coreos.com/network/subnets/\(new.subnet)"])
        }
    }

    @Test func renewKeepsShortTTLLeaseAliveAndReacquiresWhenGone() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            try await Self.setConfig(c, #"{"Network":"198.18.0.0/16"}"#)
            let r = SubnetRegistry(etcd: c)
            let config = try await r.networkConfig()
            var lease = try await r.acquire(config: config, attributes: Self.node(1), previous: nil, ttl: 3)
            // Four TTLs, renewing every second.
            for _ in 0..<12 {
                try await Task.sleep(for: .milliseconds(1000))
                guard case .renewed(let l) = try await r.renew(lease, config: config, ttl: 3) else {
                    Issue.record("lease should have been renewed, not re-acquired")
                    return
                }
                lease = l
            }
            #expect(try await c.get("/coreos.com/network/subnets/\(lease.subnet)").kvs.count == 1)
            // Deleted by hand: restored on the same subnet.
            try await c.delete("/coreos.com/network/subnets/\(lease.subnet)")
            guard case .reacquired(let back) = try await r.renew(lease, config: config, ttl: 2) else {
                Issue.record("expected re-acquisition")
                return
            }
            #expect(back.subnet == lease.subnet)
            // Expired (etcd lease revoked): re-acquired, same subnet since it is free.
            try await c.revoke(lease: back.etcdLease)
            guard case .reacquired(let again) = try await r.renew(back, config: config, ttl: 2) else {
                Issue.record("expected re-acquisition")
                return
            }
            #expect(again.subnet == lease.subnet)
            #expect(again.etcdLease != back.etcdLease)
        }
    }

    @Test func reservationIsHonouredAndNeverGetsATTL() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            try await Self.setConfig(c, #"{"Network":"198.18.0.0/16"}"#)
            let r = SubnetRegistry(etcd: c)
            let config = try await r.networkConfig()
            _ = try await r.reserve(IPv4Network("198.18.77.0/24")!, publicIP: Self.node(7).publicIP)
            // Someone else may not reserve it over the top.
            await #expect(throws: LeaseError.self) { try await r.reserve(IPv4Network("198.18.77.0/24")!, publicIP: Self.node(8).publicIP) }
            var attrs = Self.node(7)
            attrs.backendType = "alloc"
            let lease = try await r.acquire(config: config, attributes: attrs, previous: nil, ttl: 2)
            #expect(lease.subnet.ipv4 == IPv4Network("198.18.77.0/24"))
            #expect(lease.isReservation)
            let outcome = try await r.renew(lease, config: config, ttl: 2)
            #expect(outcome == .renewed(lease))
            try await Task.sleep(for: .seconds(3))
            let kv = try await c.value("/coreos.com/network/subnets/198.18.77.0-24")
            #expect(kv.lease == 0)
            #expect(kv.valueString == #"{"PublicIP":"198.51.100.7","PublicIPv6":null,"BackendType":"alloc"}"#)
            // Other nodes never get it.
            let other = try await r.acquire(config: config, attributes: Self.node(8), previous: IPv4Network("198.18.77.0/24"), ttl: 60)
            #expect(other.subnet.ipv4 != IPv4Network("198.18.77.0/24"))
            // release() leaves a reservation alone.
            try await r.release(lease)
            #expect(try await c.get("/coreos.com/network/subnets/198.18.77.0-24").kvs.count == 1)
        }
    }

    @Test func handWrittenFlannelLeaseIsUnderstoodAndMalformedOnesSkippedNotDeleted() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            try await Self.setConfig(c, #"{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}"#)
            try etcd.etcdctl([
                "put", "/coreos.com/network/subnets/198.18.5.0-24",
                #"{"PublicIP":"203.0.113.5","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
            ])
            try await c.put("/coreos.com/network/subnets/198.18.6.0-24", "{broken")
            let r = SubnetRegistry(etcd: c)
            let leases = try await r.leases().leases
            #expect(leases.count == 1)
            #expect(leases.first?.subnet.ipv4 == IPv4Network("198.18.5.0/24"))
            #expect(leases.first?.attributes.backendType == "vxlan")
            #expect(leases.first?.isReservation == true)
            // Acquiring never picks the malformed lease's subnet, and never deletes it.
            let config = try await r.networkConfig()
            for i in 1...20 {
                let l = try await r.acquire(config: config, attributes: Self.node(i), previous: IPv4Network("198.18.6.0/24"), ttl: 60)
                #expect(l.subnet.ipv4 != IPv4Network("198.18.6.0/24"))
            }
            #expect(try await c.value("/coreos.com/network/subnets/198.18.6.0-24").valueString == "{broken")
        }
    }

    @Test func missingAndInvalidConfigSayWhatToDo() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let r = SubnetRegistry(etcd: c)
            await #expect(throws: LeaseError.configNotFound(key: "/coreos.com/network/config")) { try await r.networkConfig() }
            try await Self.setConfig(c, #"{"Network":"198.18.0.0/16","SubnetLen":31}"#)
            await #expect(throws: LeaseError.invalidConfig(key: "/coreos.com/network/config", reason: "SubnetLen 31 is larger than /30")) {
                try await r.networkConfig()
            }
        }
    }
}
