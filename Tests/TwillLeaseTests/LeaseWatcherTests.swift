import Foundation
import Testing
import TwillAddress
import TwillEtcd
import TwillTestSupport
@testable import TwillLease

@Suite(.serialized) struct LeaseWatcherTests {
    static func put(_ c: EtcdClient, _ subnet: String, ip: String) async throws -> Int64 {
        let attrs = LeaseAttributes(publicIP: IPv4Address(ip)!)
        return try await c.put("/coreos.com/network/subnets/\(subnet)", value: attrs.json()).revision
    }

    /// Reads events until `count` arrived or 10 s passed.
    static func take(_ it: inout AsyncStream<LeaseEvent>.Iterator, _ count: Int) async -> [LeaseEvent] {
        var out: [LeaseEvent] = []
        let deadline = ContinuousClock.now + .seconds(10)
        while out.count < count, ContinuousClock.now < deadline {
            guard let e = await it.next() else { break }
            out.append(e)
        }
        return out
    }

    @Test func snapshotThenAddedAndRemovedForOthersOnly() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            _ = try await Self.put(c, "198.18.1.0-24", ip: "198.51.100.1")
            _ = try await Self.put(c, "198.18.2.0-24", ip: "198.51.100.2")
            let watcher = LeaseWatcher(registry: SubnetRegistry(etcd: c), ownPublicIP: IPv4Address("198.51.100.1"))
            var it = watcher.events().makeAsyncIterator()
            let first = await Self.take(&it, 1)
            guard case .snapshot(let leases)? = first.first else {
                Issue.record("expected a snapshot, got \(first)")
                return
            }
            #expect(leases.map(\.subnet.description) == ["198.18.2.0-24"])
            _ = try await Self.put(c, "198.18.3.0-24", ip: "198.51.100.3")
            try await c.delete("/coreos.com/network/subnets/198.18.2.0-24")
            try await c.delete("/coreos.com/network/subnets/198.18.1.0-24")
            let events = await Self.take(&it, 3)
            #expect(events.count == 3)
            guard events.count == 3 else { return }
            guard case .added(let a) = events[0], case .removed(let r) = events[1], case .ownChanged(let own, nil) = events[2] else {
                Issue.record("unexpected events \(events)")
                return
            }
            #expect(a.subnet.description == "198.18.3.0-24")
            #expect(r.subnet.description == "198.18.2.0-24")
            #expect(own.description == "198.18.1.0-24")
        }
    }

    @Test func compactionDuringWatchIsRecoveredWithNoEventLost() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let registry = SubnetRegistry(etcd: c)
            _ = try await Self.put(c, "198.18.1.0-24", ip: "198.51.100.1")
            _ = try await Self.put(c, "198.18.2.0-24", ip: "198.51.100.2")
            // What a watcher knew at this revision...
            let (revision, known) = try await registry.leases()
            // ...then, while it was away, changes and a compaction past its revision.
            try await c.delete("/coreos.com/network/subnets/198.18.1.0-24")
            _ = try await Self.put(c, "198.18.3.0-24", ip: "198.51.100.3")
            _ = try await Self.put(c, "198.18.2.0-24", ip: "198.51.100.22")
            let last = try await Self.put(c, "198.18.9.0-24", ip: "198.51.100.9")
            try await c.delete("/coreos.com/network/subnets/198.18.9.0-24")
            try await c.compact(revision: last)
            var resyncs = 0
            let counter = Counter()
            var watcher = LeaseWatcher(registry: registry, ownPublicIP: nil)
            watcher.onResync = { counter.increment() }
            var it = watcher.events(resumingFrom: (revision, known)).makeAsyncIterator()
            let events = await Self.take(&it, 4)
            resyncs = counter.value
            #expect(resyncs == 1)
            var removed: Set<String> = []
            var added: [String: String] = [:]
            var snapshot: [String]?
            for e in events {
                switch e {
                case .removed(let l): removed.insert(l.subnet.description)
                case .added(let l): added[l.subnet.description] = "\(l.attributes.publicIP)"
                case .snapshot(let ls): snapshot = ls.map(\.subnet.description).sorted()
                default: break
                }
            }
            #expect(removed == ["198.18.1.0-24"])
            #expect(added == ["198.18.3.0-24": "198.51.100.3", "198.18.2.0-24": "198.51.100.22"])
            #expect(snapshot == ["198.18.2.0-24", "198.18.3.0-24"])
            // And it watches on from the new revision.
            _ = try await Self.put(c, "198.18.4.0-24", ip: "198.51.100.4")
            let more = await Self.take(&it, 1)
            guard case .added(let l)? = more.first else {
                Issue.record("expected an added event after the resync, got \(more)")
                return
            }
            #expect(l.subnet.description == "198.18.4.0-24")
        }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
