import Foundation
import Logging
import Testing
import TwillAddress
import TwillEtcd
import TwillLease
import TwillTestSupport

@testable import TwillAgent

/// The lease keeper's rules on the in-memory etcd and a manual clock: renewal only when due,
/// an outage ridden out while the lease lives, a deleted key put back, an overwritten one left
/// to the other node. Against a real etcd these are `AgentTests` and the fault end-to-end tests.
@Suite struct LeaseKeeperTests {
    static let ttl: Int64 = 30

    static func keeper() async throws -> (InMemoryEtcd, LeaseKeeper, NetworkConfig, Lease) {
        let etcd = InMemoryEtcd()
        try await etcd.put(EtcdLayout().configKey, #"{"Network":"198.18.0.0/16"}"#)
        let registry = SubnetRegistry(etcd: etcd)
        let config = try await registry.networkConfig()
        let clock = etcd.clock
        let keeper = LeaseKeeper(
            registry: registry, ttl: ttl, schedule: RenewSchedule(interval: .seconds(10)), requestTimeout: .seconds(5),
            logger: Logger(label: "test"), state: AgentState(), now: { clock.now })
        let lease = try await keeper.establish(
            config: config, attributes: LeaseAttributes(publicIP: IPv4Address(198, 51, 100, 1)), previous: nil)
        return (etcd, keeper, config, lease)
    }

    @Test func renewsOnlyWhenDueAndKeepsTheLeaseAliveOnTheClock() async throws {
        let (etcd, keeper, _, lease) = try await Self.keeper()
        #expect(await keeper.step() == nil)
        #expect(etcd.calls(.keepAlive) == 0)
        // 100 s of the clock, a step a second: a renewal every 10 s, and the 30 s lease lives.
        for _ in 0..<100 {
            etcd.advance(by: .seconds(1))
            #expect(await keeper.step() == nil)
        }
        #expect(etcd.calls(.keepAlive) == 10)
        #expect(etcd.value(EtcdLayout().key(for: lease.subnet))?.lease == lease.etcdLease)
    }

    @Test func anOutageShorterThanTheTTLIsRiddenOut() async throws {
        let (etcd, keeper, _, lease) = try await Self.keeper()
        let down = EtcdError.transport(endpoints: [etcd.endpoint], message: "connection refused")
        for _ in 0..<3 { etcd.failNext(.keepAlive, with: down) }
        var steps = 0
        while etcd.calls(.keepAlive) < 4, steps < 60 {
            etcd.advance(by: .seconds(1))
            #expect(await keeper.step() == nil)
            steps += 1
        }
        // Three failures, retried faster than the 10 s interval, then renewed: same lease, no move.
        #expect(etcd.calls(.keepAlive) == 4)
        #expect(steps < 10 + 3 * 10)
        #expect(keeper.lease?.etcdLease == lease.etcdLease)
        #expect(etcd.value(EtcdLayout().key(for: lease.subnet)) != nil)
    }

    @Test func aDeletedKeyIsPutBackOnTheSameSubnet() async throws {
        let (etcd, keeper, _, lease) = try await Self.keeper()
        let key = EtcdLayout().key(for: lease.subnet)
        try await etcd.delete(key)
        keeper.noteOwnKey(.deleted(key: key))
        #expect(await keeper.step() == nil)
        #expect(etcd.value(key) != nil)
        #expect(keeper.lease?.subnet == lease.subnet)
    }

    @Test func anotherNodesValueInOurKeyMovesUsAndNeverTouchesTheirs() async throws {
        let (etcd, keeper, config, lease) = try await Self.keeper()
        let key = EtcdLayout().key(for: lease.subnet)
        let theirs = LeaseAttributes(publicIP: IPv4Address(198, 51, 100, 9)).json()
        try await etcd.put(key, value: theirs, lease: 0)
        keeper.noteOwnKey(.changed(try #require(etcd.value(key))))
        let move = try #require(await keeper.step())
        #expect(move.from.subnet == lease.subnet && move.to.subnet != lease.subnet)
        #expect(config.fits(move.to.subnet.ipv4))
        #expect(etcd.value(key)?.value == theirs)
        #expect(etcd.value(EtcdLayout().key(for: move.to.subnet)) != nil)
    }
}
