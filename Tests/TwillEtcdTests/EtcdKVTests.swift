import Foundation
import Testing
import TwillEtcd
import TwillTestSupport

@Suite(.serialized, .requiresEtcd) struct EtcdKVTests {
    @Test func putGetListDelete() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let h1 = try await c.put("/t/a", "1")
            try await c.put("/t/b", "2")
            try await c.put("/t0", "outside the prefix")
            let a = try await c.get("/t/a")
            #expect(a.kvs.first?.valueString == "1")
            #expect(a.kvs.first?.createRevision == h1.revision)
            #expect(a.kvs.first?.version == 1)
            #expect(a.kvs.first?.lease == 0)
            #expect(a.header.revision >= h1.revision)
            let missing = try await c.get("/t/none")
            #expect(missing.kvs.isEmpty)
            await #expect(throws: EtcdError.keyNotFound(key: "/t/none")) { try await c.value("/t/none") }
            let list = try await c.list(prefix: "/t/")
            #expect(list.kvs.map(\.key) == ["/t/a", "/t/b"])
            #expect(list.count == 2)
            #expect(try await c.delete("/t/a") == 1)
            #expect(try await c.delete("/t/a") == 0)
            #expect(try await c.list(prefix: "/t/").kvs.map(\.key) == ["/t/b"])
            // Binary-safe values.
            let bytes = Data((0...255).map { UInt8($0) })
            try await c.put("/t/bin", value: bytes)
            #expect(try await c.value("/t/bin").value == bytes)
        }
    }

    @Test func txnCreateIfAbsentAndCompareAndSwap() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let first = try await c.txn(
                compare: [.absent("/k")], success: [.put(key: "/k", value: Data("mine".utf8))], failure: [.get(key: "/k")])
            #expect(first.succeeded)
            #expect(first.responses == [.put])
            let second = try await c.txn(
                compare: [.absent("/k")], success: [.put(key: "/k", value: Data("theirs".utf8))], failure: [.get(key: "/k")])
            #expect(!second.succeeded)
            guard case .range(let r)? = second.responses.first else {
                Issue.record("failure branch should return the range")
                return
            }
            #expect(r.kvs.first?.valueString == "mine")
            // VERSION == 0 is the other create-if-absent spelling.
            let v = try await c.txn(compare: [Compare(key: "/k", .version(0))], success: [.delete(key: "/k")], failure: [])
            #expect(!v.succeeded)
            // Compare-and-swap on mod_revision: the current one wins, a stale one loses.
            let kv = try await c.value("/k")
            let cas = try await c.txn(
                compare: [.unchanged("/k", modRevision: kv.modRevision)], success: [.put(key: "/k", value: Data("v2".utf8))], failure: [])
            #expect(cas.succeeded)
            let stale = try await c.txn(
                compare: [.unchanged("/k", modRevision: kv.modRevision)], success: [.put(key: "/k", value: Data("v3".utf8))], failure: [])
            #expect(!stale.succeeded)
            let now = try await c.value("/k")
            #expect(now.valueString == "v2" && now.version == 2 && now.modRevision == cas.header.revision)
            // List inside a txn.
            let l = try await c.txn(compare: [], success: [.list(prefix: "/")], failure: [])
            guard case .range(let all)? = l.responses.first else {
                Issue.record("expected a range")
                return
            }
            #expect(all.kvs.map(\.key) == ["/k"])
        }
    }

    @Test func connectionsAreReused() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            for i in 0..<50 { try await c.put("/reuse/\(i)", "x") }
            // Sequential requests ride one connection (a handful at most, never one each).
            #expect(c.connectionsOpened <= 2, "opened \(c.connectionsOpened) connections for 50 requests")
        }
    }

    @Test func firstEndpointDeadStillSucceeds() async throws {
        try await withEtcd { etcd in
            let dead = "http://127.0.0.1:\(try freePort())"
            let c = try etcd.client(endpoints: [dead, etcd.endpoint])
            try await c.put("/f", "ok")
            #expect(try await c.value("/f").valueString == "ok")
        }
    }

    @Test func allEndpointsDeadNamesThemAll() async throws {
        let a = "http://127.0.0.1:\(try freePort())"
        let b = "http://127.0.0.1:\(try freePort())"
        let c = try EtcdClient(EtcdConfiguration(endpoints: [a, b], connectTimeout: .seconds(1)))
        do {
            _ = try await c.get("/x")
            Issue.record("expected a transport error")
        } catch {
            let e = error
            guard case .transport(let tried, _) = e else {
                Issue.record("expected transport, got \(e)")
                return
            }
            #expect(Set(tried) == [a, b])
            #expect(e.description.contains(a) && e.description.contains(b))
        }
    }

    @Test func etcdStoppedMidTestFailsFastNotHangs() async throws {
        let etcd = try await EtcdServer.start()
        defer { etcd.stop() }
        let c = try etcd.client(requestTimeout: .seconds(3))
        try await c.put("/s", "1")
        let stream = c.watch(prefix: "/s", fromRevision: nil)
        var it = stream.makeAsyncIterator()
        let created = try await it.next()
        #expect(created?.created == true)
        etcd.kill9()
        let start = ContinuousClock.now
        await #expect(throws: EtcdError.self) { try await c.get("/s") }
        #expect(ContinuousClock.now - start < .seconds(10))
        // The watch is told, not silently ended.
        do {
            while try await it.next() != nil {}
            Issue.record("watch ended without an error")
        } catch let e as EtcdError {
            #expect(e.isTransient, "\(e)")
        }
    }
}
