import Foundation
import Testing
import TwillEtcd
import TwillTestSupport

/// The in-memory etcd keeps the rules of etcd that the lease logic relies on; if it drifted
/// from them, the unit tier would test against a store that does not exist.
@Suite struct InMemoryEtcdTests {
    @Test func revisionsVersionsAndTransactions() async throws {
        let etcd = InMemoryEtcd()
        let start = etcd.revision
        let h1 = try await etcd.put("/a/1", "one")
        #expect(h1.revision == start + 1)
        try await etcd.put("/a/1", "uno")
        try await etcd.put("/a/0", "zero")
        try await etcd.put("/b/0", "other")
        let kv = try #require(try await etcd.get("/a/1").kvs.first)
        #expect(kv.createRevision == start + 1 && kv.modRevision == start + 2 && kv.version == 2 && kv.valueString == "uno")
        #expect(try await etcd.list(prefix: "/a/").kvs.map(\.key) == ["/a/0", "/a/1"])

        // Create-if-absent: the first wins, the second sees the winner; one revision per txn.
        let before = etcd.revision
        let won = try await etcd.txn(
            compare: [.absent("/a/2")], success: [.put(key: "/a/2", value: Data("x".utf8)), .put(key: "/a/3", value: Data("y".utf8))],
            failure: [])
        #expect(won.succeeded && won.header.revision == before + 1)
        #expect(try await etcd.get("/a/3").kvs.first?.modRevision == before + 1)
        let lost = try await etcd.txn(compare: [.absent("/a/2")], success: [.delete(key: "/a/2")], failure: [.get(key: "/a/2")])
        #expect(!lost.succeeded && etcd.revision == before + 1)
        guard case .range(let r)? = lost.responses.first else {
            Issue.record("expected the failure branch's get, got \(lost.responses)")
            return
        }
        #expect(r.kvs.first?.valueString == "x")
        // Compare-and-swap on mod revision.
        let cas = try await etcd.txn(
            compare: [.unchanged("/a/2", modRevision: before + 1)], success: [.delete(key: "/a/2")], failure: [])
        #expect(cas.succeeded && cas.responses == [.delete(deleted: 1)])
        #expect(try await etcd.delete("/a/2") == 0)
    }

    @Test func leasesExpireOnTheInjectedClockAndTheirKeysGoInOneRevision() async throws {
        let etcd = InMemoryEtcd()
        let grant = try await etcd.grant(ttl: 10)
        try await etcd.put("/s/1", "a", lease: grant.id)
        try await etcd.put("/s/2", "b", lease: grant.id)
        var watch = etcd.watch(prefix: "/s/", fromRevision: nil).makeAsyncIterator()
        #expect(try await watch.next()?.kind == .created)
        etcd.advance(by: .seconds(9))
        #expect(try await etcd.keepAlive(lease: grant.id) == 10)
        etcd.advance(by: .seconds(9))
        #expect(try await etcd.timeToLive(lease: grant.id)?.keys == ["/s/1", "/s/2"])
        etcd.advance(by: .seconds(2))
        #expect(try await etcd.list(prefix: "/s/").kvs.isEmpty)
        let gone = try #require(try await watch.next())
        #expect(gone.events.map(\.kind) == [.delete, .delete])
        #expect(Set(gone.events.map(\.kv.modRevision)).count == 1)
        await #expect(throws: EtcdError.leaseNotFound(id: grant.id)) { try await etcd.keepAlive(lease: grant.id) }
        #expect(try await etcd.timeToLive(lease: grant.id) == nil)
        await #expect(throws: EtcdError.leaseNotFound(id: grant.id)) { try await etcd.put("/s/3", "c", lease: grant.id) }
    }

    @Test func watchesReplayProgressAndCompaction() async throws {
        let etcd = InMemoryEtcd()
        let first = try await etcd.put("/w/1", "a").revision
        try await etcd.put("/x/1", "outside")
        try await etcd.delete("/w/1")
        // From the past: created, then each revision's events under the prefix, in order.
        var it = etcd.watch(prefix: "/w/", fromRevision: first).makeAsyncIterator()
        #expect(try await it.next()?.kind == .created)
        let put = try #require(try await it.next())
        let del = try #require(try await it.next())
        #expect(put.events.map(\.kind) == [.put] && del.events.map(\.kind) == [.delete])
        #expect(del.resumeRevision == first + 3)
        etcd.sendProgress()
        let progress = try #require(try await it.next())
        #expect(progress.kind == .progress && progress.resumeRevision == etcd.revision + 1)
        try await etcd.put("/w/2", "live")
        #expect(try await it.next()?.events.first?.kv.key == "/w/2")

        etcd.compact()
        var old = etcd.watch(prefix: "/w/", fromRevision: first).makeAsyncIterator()
        await #expect(throws: EtcdError.compacted(revision: etcd.revision)) { _ = try await old.next() }
        etcd.breakWatches(with: .watchClosed(endpoint: etcd.endpoint, reason: "member went away"))
        await #expect(throws: EtcdError.self) { _ = try await it.next() }
        #expect(etcd.openWatches == 0)
    }

    @Test func injectedFailuresComeOnceEach() async throws {
        let etcd = InMemoryEtcd()
        let down = EtcdError.transport(endpoints: [etcd.endpoint], message: "connection refused")
        etcd.failNext(.put, with: down)
        await #expect(throws: down) { try await etcd.put("/k", "v") }
        try await etcd.put("/k", "v")
        #expect(etcd.calls(.put) == 2)
        etcd.failNext(.watch, with: down)
        var it = etcd.watch(prefix: "/", fromRevision: nil).makeAsyncIterator()
        await #expect(throws: down) { _ = try await it.next() }
    }
}
