import Foundation
import Testing
import TwillTestSupport

@testable import TwillEtcd

/// The client against a real 3-member cluster whose members hang, die or lose the quorum.
@Suite(.serialized, .requiresEtcd) struct EtcdFailoverTests {
    static func client(
        _ endpoints: [String], endpointTimeout: Duration = .seconds(1), requestTimeout: Duration = .seconds(6),
        watchProgressTimeout: Duration = .seconds(2)
    ) throws -> EtcdClient {
        try EtcdClient(
            EtcdConfiguration(
                endpoints: endpoints, connectTimeout: .seconds(1), endpointTimeout: endpointTimeout,
                requestTimeout: requestTimeout, watchProgressTimeout: watchProgressTimeout))
    }

    /// A frozen first endpoint costs one endpoint timeout, once: the next request goes
    /// straight to a healthy member.
    @Test func aFrozenMemberCostsOneEndpointTimeoutOnce() async throws {
        try await withEtcdCluster { cluster in
            let c = try Self.client(cluster.endpoints)
            try await c.put("/f/warm", "1")
            #expect(c.endpointHealth.first?.preferred == true)
            cluster.freeze(0)
            defer { cluster.thaw(0) }
            let start = ContinuousClock.now
            try await c.put("/f/a", "1")
            let first = ContinuousClock.now - start
            let again = ContinuousClock.now
            #expect(try await c.value("/f/a").valueString == "1")
            let second = ContinuousClock.now - again
            print("frozen first member: first request \(first), next \(second)")
            #expect(first < .seconds(5))
            #expect(second < .milliseconds(900), "the frozen member must not be tried first again")
            let health = c.endpointHealth
            #expect(health[0].healthy == false && health[0].lastError != nil)
            #expect(health.filter(\.preferred).first?.endpoint != cluster.endpoints[0])
        }
    }

    /// A watch on a member that freezes moves to another and resumes: the event written
    /// meanwhile arrives once, nothing before it again.
    @Test func aWatchLeavesAFrozenMemberWithoutLossOrRepeat() async throws {
        try await withEtcdCluster { cluster in
            let c = try Self.client(cluster.endpoints)
            let writer = try Self.client(Array(cluster.endpoints.dropFirst()))
            var it = c.watch(prefix: "/w/", fromRevision: nil).makeAsyncIterator()
            let created = try #require(try await it.next())
            #expect(created.kind == .created && created.endpoint == cluster.endpoints[0])
            try await writer.put("/w/1", "before")
            var keys: [String] = []
            while keys.isEmpty, let r = try await it.next() { keys += r.events.map(\.kv.key) }
            cluster.freeze(0)
            defer { cluster.thaw(0) }
            let frozenAt = ContinuousClock.now
            try await writer.put("/w/2", "after")
            var moved: WatchResponse?
            while keys.count < 2, let r = try await it.next() {
                keys += r.events.map(\.kv.key)
                if !r.events.isEmpty { moved = r }
            }
            let took = ContinuousClock.now - frozenAt
            print("watch moved off the frozen member in \(took)")
            #expect(keys == ["/w/1", "/w/2"])
            #expect(moved?.endpoint != cluster.endpoints[0])
            #expect(took < .seconds(8))
        }
    }

    /// A member that is up but has no quorum (the two others frozen) fails linearizable reads:
    /// the request ends within its deadline and says why, rather than hanging.
    @Test func aMemberWithoutQuorumFailsWithinTheDeadline() async throws {
        try await withEtcdCluster { cluster in
            let c = try Self.client([cluster.endpoints[0]], requestTimeout: .seconds(4))
            try await c.put("/q/a", "1")
            cluster.freeze(1)
            cluster.freeze(2)
            defer {
                cluster.thaw(1)
                cluster.thaw(2)
            }
            let start = ContinuousClock.now
            let e = await #expect(throws: EtcdError.self) { try await c.get("/q/a") }
            let took = ContinuousClock.now - start
            #expect(took < .seconds(5))
            guard case .transport(let endpoints, let message)? = e else {
                Issue.record("expected transport, got \(String(describing: e))")
                return
            }
            #expect(endpoints == [cluster.endpoints[0]])
            #expect(!message.isEmpty)
        }
    }

    /// No request outlives its deadline, even with every member hung.
    @Test func everyMemberFrozenFailsAtTheDeadline() async throws {
        try await withEtcdCluster { cluster in
            let c = try Self.client(cluster.endpoints, endpointTimeout: .seconds(2), requestTimeout: .seconds(3))
            try await c.put("/d/a", "1")
            for i in 0..<3 { cluster.freeze(i) }
            defer { for i in 0..<3 { cluster.thaw(i) } }
            let start = ContinuousClock.now
            let e = await #expect(throws: EtcdError.self) { try await c.get("/d/a") }
            let took = ContinuousClock.now - start
            #expect(took < .seconds(4), "took \(took)")
            #expect(e?.description.contains("deadline") == true, "\(String(describing: e))")
        }
    }

    /// The leader killed: requests go on through the survivors.
    @Test func theLeaderKilled() async throws {
        try await withEtcdCluster { cluster in
            let c = try Self.client(cluster.endpoints)
            try await c.put("/l/a", "1")
            let leader = try #require(try cluster.leader())
            cluster.kill9(leader)
            for i in 0..<5 { try await c.put("/l/\(i)", "v") }
            #expect(try await c.list(prefix: "/l/").kvs.count == 6)
            try cluster.restart(leader)
            try await cluster.waitHealthy()
        }
    }
}

@Suite struct EndpointPoolTests {
    @Test func failedEndpointsGoLastOldestFailureFirst() {
        let pool = EndpointPool(endpoints: ["a", "b", "c"], cooldown: .seconds(30))
        #expect(pool.order() == [0, 1, 2])
        pool.succeeded(1)
        #expect(pool.order() == [1, 2, 0])
        pool.failed(1, reason: "hung", kind: "timeout")
        #expect(pool.order() == [2, 0, 1])
        pool.failed(2, reason: "refused", kind: "connect")
        #expect(pool.order() == [0, 1, 2])
        pool.succeeded(0)
        #expect(pool.order() == [0, 1, 2])
        let health = pool.health()
        #expect(health.map(\.healthy) == [true, false, false])
        #expect(health[1].lastError == "hung" && health[0].preferred)
    }

    @Test func aFailureIsForgottenAfterTheCooldown() {
        let pool = EndpointPool(endpoints: ["a", "b"], cooldown: .seconds(30))
        pool.failed(0, reason: "x", kind: "timeout")
        #expect(pool.order() == [1, 0])
        #expect(pool.order(now: .now + .seconds(31)) == [0, 1])
    }
}
