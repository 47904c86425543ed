import Foundation
import Testing
import TwillEtcd
import TwillTestSupport

@Suite(.serialized, .requiresEtcd) struct EtcdWatchTests {
    @Test func receivesEventsWrittenAfterStart() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let start = try await c.put("/w/before", "0")
            let stream = c.watch(prefix: "/w/", fromRevision: nil)
            var it = stream.makeAsyncIterator()
            let created = try #require(try await it.next())
            #expect(created.created && created.revision == start.revision)
            // A value far larger than one read: the message must be reassembled.
            let big = String(repeating: "x", count: 300_000)
            try await c.put("/w/a", "1")
            try await c.put("/w/big", big)
            try await c.delete("/w/a")
            try await c.put("/x/outside", "ignored")
            var events: [WatchEvent] = []
            while events.count < 3, let r = try await it.next() { events += r.events }
            #expect(events.map(\.kind) == [.put, .put, .delete])
            #expect(events.map(\.kv.key) == ["/w/a", "/w/big", "/w/a"])
            #expect(events[1].kv.valueString == big)
            #expect(events[2].kv.modRevision > events[1].kv.modRevision)
        }
    }

    @Test func replaysFromRevision() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let r1 = try await c.put("/r/1", "a")
            try await c.put("/r/2", "b")
            var it = c.watch(prefix: "/r/", fromRevision: r1.revision).makeAsyncIterator()
            var keys: [String] = []
            while keys.count < 2, let r = try await it.next() { keys += r.events.map(\.kv.key) }
            #expect(keys == ["/r/1", "/r/2"])
        }
    }

    @Test func compactedRevisionGivesTypedError() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let r1 = try await c.put("/c/k", "1")
            try await c.put("/c/k", "2")
            let r3 = try await c.put("/c/k", "3")
            try await c.compact(revision: r3.revision)
            let stream = c.watch(prefix: "/c/", fromRevision: r1.revision)
            do {
                for try await _ in stream {}
                Issue.record("watch should have failed")
            } catch let e as EtcdError {
                #expect(e == .compacted(revision: r3.revision))
            }
        }
    }

    @Test func cancellingTheConsumerEndsTheWatch() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let task = Task {
                var n = 0
                for try await _ in c.watch(prefix: "/z/", fromRevision: nil) { n += 1 }
                return n
            }
            try await Task.sleep(for: .milliseconds(300))
            task.cancel()
            let start = ContinuousClock.now
            _ = try? await task.value
            #expect(ContinuousClock.now - start < .seconds(5))
        }
    }
}
