import Foundation
import Testing
import TwillAddress
import TwillEtcd
import TwillTestSupport

@testable import TwillLease

/// The registry's and the watcher's logic on the in-memory etcd: TTLs on a manual clock, so
/// what takes a real etcd seconds of waiting runs in milliseconds. The same rules against a
/// real etcd are `SubnetRegistryTests` and `ClusterWatcherTests` (integration tier).
@Suite struct SubnetRegistryInMemoryTests {
    static func node(_ n: Int) -> LeaseAttributes { LeaseAttributes(publicIP: IPv4Address(198, 51, 100, UInt8(n))) }

    static func configured(_ json: String = #"{"Network":"198.18.0.0/16"}"#) async throws -> (InMemoryEtcd, NetworkConfig) {
        let etcd = InMemoryEtcd()
        try await etcd.put(EtcdLayout().configKey, json)
        return (etcd, try await SubnetRegistry(etcd: etcd).networkConfig())
    }

    @Test func concurrentRegistriesGetDistinctSubnets() async throws {
        let (etcd, config) = try await Self.configured()
        let subnets = try await withThrowingTaskGroup(of: IPv4Network.self) { group in
            for i in 1...100 {
                group.addTask {
                    let r = SubnetRegistry(etcd: etcd, maxAttempts: 50)
                    let attrs = LeaseAttributes(publicIP: IPv4Address(rawValue: IPv4Address(198, 51, 100, 0).rawValue + UInt32(i)))
                    return try await r.acquire(config: config, attributes: attrs, previous: nil, ttl: 60).subnet.ipv4
                }
            }
            var out: [IPv4Network] = []
            for try await s in group { out.append(s) }
            return out
        }
        #expect(Set(subnets).count == 100 && subnets.allSatisfy { config.fits($0) })
        #expect(try await etcd.list(prefix: EtcdLayout().subnetsPrefix).kvs.count == 100)
    }

    @Test func anExpiredLeaseIsReacquiredOnTheSameSubnet() async throws {
        let (etcd, config) = try await Self.configured()
        let r = SubnetRegistry(etcd: etcd)
        var lease = try await r.acquire(config: config, attributes: Self.node(1), previous: nil, ttl: 3)
        // Four TTLs, renewed every second of the manual clock.
        for _ in 0..<12 {
            etcd.advance(by: .seconds(1))
            guard case .renewed(let l) = try await r.renew(lease, config: config, ttl: 3) else {
                Issue.record("lease should have been renewed, not re-acquired")
                return
            }
            lease = l
        }
        // Not renewed for longer than the TTL: etcd deletes the key, the next renewal takes
        // the same subnet again under a new etcd lease.
        etcd.advance(by: .seconds(4))
        #expect(etcd.value(EtcdLayout().key(for: lease.subnet)) == nil)
        guard case .reacquired(let again) = try await r.renew(lease, config: config, ttl: 3) else {
            Issue.record("expected re-acquisition")
            return
        }
        #expect(again.subnet == lease.subnet && again.etcdLease != lease.etcdLease)
    }

    @Test func anEtcdFailureIsTheRegistrysErrorAndNothingIsWritten() async throws {
        let (etcd, config) = try await Self.configured()
        let down = EtcdError.transport(endpoints: [etcd.endpoint], message: "connection refused")
        etcd.failNext(.grant, with: down)
        await #expect(throws: LeaseError.etcd(down)) {
            _ = try await SubnetRegistry(etcd: etcd).acquire(config: config, attributes: Self.node(1), previous: nil, ttl: 60)
        }
        #expect(try await etcd.list(prefix: EtcdLayout().subnetsPrefix).kvs.isEmpty)
    }

    @Test func aWatcherAwayPastACompactionListsAgain() async throws {
        let etcd = InMemoryEtcd()
        let prefix = EtcdLayout().subnetsPrefix
        let start = try await etcd.put(prefix + "198.18.1.0-24", value: Self.node(1).json(), lease: 0).revision
        try await etcd.delete(prefix + "198.18.1.0-24")
        try await etcd.put(prefix + "198.18.3.0-24", value: Self.node(3).json(), lease: 0)
        etcd.compact()
        var it = ClusterWatcher(etcd: etcd, layout: EtcdLayout()).events(watchingFrom: start + 1).makeAsyncIterator()
        var first: ClusterEvent?
        for _ in 0..<10 {
            first = await it.next()
            if case .connectivity = first { continue }
            break
        }
        guard case .reset(_, let leases, _, .compacted)? = first else {
            Issue.record("expected a reset after the compaction, got \(String(describing: first))")
            return
        }
        #expect(leases.map(\.key) == [prefix + "198.18.3.0-24"])
        try await etcd.put(prefix + "198.18.4.0-24", value: Self.node(4).json(), lease: 0)
        var next: ClusterEvent?
        for _ in 0..<10 {
            next = await it.next()
            if case .connectivity = next { continue }
            break
        }
        guard case .leasePut(let kv)? = next else {
            Issue.record("expected the new lease, got \(String(describing: next))")
            return
        }
        #expect(kv.key == prefix + "198.18.4.0-24")
    }
}
