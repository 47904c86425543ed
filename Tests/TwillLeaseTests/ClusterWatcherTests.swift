import Foundation
import Testing
import TwillAddress
import TwillEtcd
import TwillTestSupport

@testable import TwillLease

@Suite(.serialized, .requiresEtcd) struct ClusterWatcherTests {
    static let prefix = "/coreos.com/network"

    static func put(_ c: EtcdClient, _ subnet: String, ip: String) async throws -> Int64 {
        try await c.put("\(prefix)/subnets/\(subnet)", value: LeaseAttributes(publicIP: IPv4Address(ip)!).json()).revision
    }

    /// Reads events (heartbeats left out) until `count` arrived or 15 s passed.
    static func take(_ it: inout AsyncStream<ClusterEvent>.Iterator, _ count: Int) async -> [ClusterEvent] {
        var out: [ClusterEvent] = []
        let deadline = ContinuousClock.now + .seconds(15)
        while out.count < count, ContinuousClock.now < deadline {
            guard let e = await it.next() else { break }
            if case .connectivity = e { continue }
            out.append(e)
        }
        return out
    }

    static func keys(_ kvs: [KeyValue]) -> [String] { kvs.map { String($0.key.dropFirst("\(prefix)/subnets/".count)) }.sorted() }

    @Test func listsThenReportsConfigAndLeaseChangesInOrder() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            try await c.put("\(Self.prefix)/config", #"{"Network":"198.18.0.0/16"}"#)
            _ = try await Self.put(c, "198.18.1.0-24", ip: "198.51.100.1")
            try await c.put("/coreos.com/other/x", "outside the prefix")
            var it = ClusterWatcher(etcd: c, layout: EtcdLayout()).events().makeAsyncIterator()
            let first = await Self.take(&it, 1)
            guard case .reset(let config, let leases, _, .initial)? = first.first else {
                Issue.record("expected a reset, got \(first)")
                return
            }
            #expect(config?.valueString == #"{"Network":"198.18.0.0/16"}"#)
            #expect(Self.keys(leases) == ["198.18.1.0-24"])
            _ = try await Self.put(c, "198.18.2.0-24", ip: "198.51.100.2")
            try await c.put("\(Self.prefix)/config", #"{"Network":"198.18.0.0/15"}"#)
            try await c.delete("\(Self.prefix)/subnets/198.18.1.0-24")
            try await c.put("/coreos.com/networkother/y", "shares the prefix string but not the directory")
            try await c.delete("\(Self.prefix)/config")
            let events = await Self.take(&it, 4)
            guard events.count == 4, case .leasePut(let a) = events[0], case .config(let cfg?) = events[1],
                case .leaseDeleted(let d) = events[2], case .config(nil) = events[3]
            else {
                Issue.record("unexpected events \(events)")
                return
            }
            #expect(a.key.hasSuffix("198.18.2.0-24"))
            #expect(cfg.valueString.contains("/15"))
            #expect(d.hasSuffix("198.18.1.0-24"))
        }
    }

    /// A watcher that was away past a compaction lists again: the reset holds exactly the
    /// leases there are now, and it watches on from there.
    @Test func aCompactionLeadsToAResetWithNothingLost() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let start = try await Self.put(c, "198.18.1.0-24", ip: "198.51.100.1")
            try await c.delete("\(Self.prefix)/subnets/198.18.1.0-24")
            _ = try await Self.put(c, "198.18.3.0-24", ip: "198.51.100.3")
            let last = try await Self.put(c, "198.18.2.0-24", ip: "198.51.100.22")
            try await c.compact(revision: last)
            var it = ClusterWatcher(etcd: c, layout: EtcdLayout()).events(watchingFrom: start + 1).makeAsyncIterator()
            let events = await Self.take(&it, 1)
            guard case .reset(_, let leases, let revision, .compacted)? = events.first else {
                Issue.record("expected a reset after the compaction, got \(events)")
                return
            }
            #expect(Self.keys(leases) == ["198.18.2.0-24", "198.18.3.0-24"])
            #expect(revision >= last)
            _ = try await Self.put(c, "198.18.4.0-24", ip: "198.51.100.4")
            let more = await Self.take(&it, 1)
            guard case .leasePut(let kv)? = more.first else {
                Issue.record("expected the next lease after the reset, got \(more)")
                return
            }
            #expect(kv.key.hasSuffix("198.18.4.0-24"))
        }
    }

    /// etcd restored from a snapshot to an older revision: the watcher notices the store went
    /// backwards and lists again, so it sees the restored state, not what it had.
    @Test func aRestoreToAnOlderRevisionLeadsToAReset() async throws {
        try await withEtcdCluster(size: 1) { cluster in
            let c = try EtcdClient(
                EtcdConfiguration(endpoints: cluster.endpoints, endpointTimeout: .seconds(2), watchProgressTimeout: .seconds(1)))
            _ = try await Self.put(c, "198.18.1.0-24", ip: "198.51.100.1")
            let snapshot = try cluster.snapshot()
            var it = ClusterWatcher(etcd: c, layout: EtcdLayout()).events().makeAsyncIterator()
            _ = await Self.take(&it, 1)
            for i in 2...6 { _ = try await Self.put(c, "198.18.\(i).0-24", ip: "198.51.100.\(i)") }
            let seen = await Self.take(&it, 5)
            #expect(seen.count == 5)
            try await cluster.restore(from: snapshot)
            let after = await Self.take(&it, 1)
            guard case .reset(_, let leases, _, .restored)? = after.first else {
                Issue.record("expected a reset after the restore, got \(after)")
                return
            }
            #expect(Self.keys(leases) == ["198.18.1.0-24"])
        }
    }
}
