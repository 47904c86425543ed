import Foundation
import Testing

@testable import TwillEtcd

@Suite struct WireFormatTests {
    @Test func prefixRangeEndIncrementsLastByte() {
        #expect(prefixRangeEnd("/coreos.com/network/subnets/") == Array("/coreos.com/network/subnets0".utf8))
        #expect(prefixRangeEnd("a") == Array("b".utf8))
    }

    @Test func prefixRangeEndDropsTrailingFF() {
        // Built from raw bytes: 0x61 0xff -> 0x62.
        let key = String(decoding: [0x61], as: UTF8.self)
        #expect(prefixRangeEnd(key) == [0x62])
        #expect(prefixRangeEnd("") == [0])
    }

    @Test func int64FieldsAreStrings() throws {
        let json =
            #"{"header":{"cluster_id":"14841639068965178418","revision":"42"},"kvs":[{"key":"YQ==","value":"Yg==","create_revision":"3","mod_revision":"4","version":"2","lease":"7587"}],"count":"1"}"#
        let r = try JSONDecoder().decode(WireRangeResponse.self, from: Data(json.utf8)).model
        #expect(r.header.revision == 42)
        #expect(r.header.clusterID == 14_841_639_068_965_178_418)
        #expect(r.kvs == [KeyValue(key: "a", value: Data("b".utf8), createRevision: 3, modRevision: 4, version: 2, lease: 7587)])
        #expect(r.count == 1)
    }

    @Test func omittedZeroValuesDecode() throws {
        let r = try JSONDecoder().decode(WireRangeResponse.self, from: Data(#"{"header":{"revision":"5"}}"#.utf8)).model
        #expect(r.kvs.isEmpty && r.count == 0 && r.header.revision == 5)
        let t = try JSONDecoder().decode(
            WireTxnResponse.self, from: Data(#"{"header":{},"responses":[{"response_range":{"header":{}}}]}"#.utf8))
        #expect(t.succeeded == nil)
    }

    @Test func compareEncodesTargetAndValue() throws {
        let data = try JSONEncoder().encode(WireCompare(.absent("k")))
        let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        #expect(obj?["target"] as? String == "CREATE")
        #expect(obj?["create_revision"] as? String == "0")
        #expect(obj?["key"] as? String == "aw==")
    }

    @Test(arguments: [
        ("etcdserver: mvcc: required revision has been compacted", 11, 400, "compacted"),
        ("etcdserver: requested lease not found", 5, 404, "leaseNotFound"),
        ("etcdserver: invalid auth token", 16, 401, "unauthenticated"),
        ("etcdserver: authentication failed, invalid user ID or password", 3, 400, "unauthenticated"),
        ("etcdserver: no leader", 14, 503, "unavailable"),
        ("etcdserver: not capable", 14, 503, "unavailable"),
        ("etcdserver: too many requests", 8, 429, "unavailable"),
        ("etcdserver: request timed out", 14, 503, "unavailable"),
        ("etcdserver: leader changed", 14, 503, "unavailable"),
        ("context deadline exceeded", 4, 504, "unavailable"),
        ("etcdserver: key is not provided", 3, 400, "server"),
    ])
    func errorsAreClassified(message: String, code: Int, status: Int, expected: String) {
        let e = EtcdClient.classify(endpoint: "http://127.0.0.1:1", code: code, httpStatus: status, message: message)
        let kind: String
        switch e {
        case .compacted: kind = "compacted"
        case .leaseNotFound: kind = "leaseNotFound"
        case .unauthenticated: kind = "unauthenticated"
        case .unavailable: kind = "unavailable"
        case .server: kind = "server"
        default: kind = "other"
        }
        #expect(kind == expected)
        #expect(e.description.contains("127.0.0.1:1") || kind == "compacted" || kind == "leaseNotFound")
    }

    /// A proxy's page with a 5xx is the member's fault (fail over); with a 4xx it is not.
    @Test func unreadableErrorBodiesAreClassifiedByStatus() {
        let bad = EtcdClient.mapError(
            endpoint: "http://h:1", path: "/v3/kv/range", status: 502, body: Array("<html>bad gateway</html>".utf8))
        guard case .unavailable(_, let message) = bad else {
            Issue.record("expected unavailable, got \(bad)")
            return
        }
        #expect(message.contains("HTTP 502") && message.contains("bad gateway"))
        let e = EtcdClient.mapError(endpoint: "http://h:1", path: "/v3/kv/range", status: 404, body: Array("<html>not found</html>".utf8))
        guard case .malformedResponse(_, let path, let reason, let snippet) = e else {
            Issue.record("expected malformedResponse, got \(e)")
            return
        }
        #expect(path == "/v3/kv/range" && reason == "HTTP 404" && snippet.contains("not found"))
    }

    @Test func endpointValidationNamesTheBadEndpoint() {
        #expect(throws: EtcdError.invalidConfiguration("endpoint \"127.0.0.1:2379\" must start with http:// or https://")) {
            try EtcdClient(EtcdConfiguration(endpoints: ["127.0.0.1:2379"]))
        }
        #expect(throws: EtcdError.self) { try EtcdClient(EtcdConfiguration(endpoints: [])) }
        #expect(throws: EtcdError.self) { try EtcdClient(EtcdConfiguration(endpoints: ["http://x"], username: "u")) }
        #expect(throws: EtcdError.self) { try EtcdClient(EtcdConfiguration(endpoints: ["https://x"], caFile: "/nonexistent/ca.pem")) }
        #expect(throws: EtcdError.self) { try EtcdClient(EtcdConfiguration(endpoints: ["http://x"], requestTimeout: .zero)) }
    }
}

@Suite struct WatchStreamParserTests {
    /// A parser of a watch session with no server behind it (the parser never calls out).
    static func parser(from revision: Int64? = nil) throws -> (
        WatchStreamParser, WatchSession, AsyncThrowingStream<WatchResponse, any Error>
    ) {
        let (stream, continuation) = AsyncThrowingStream<WatchResponse, any Error>.makeStream()
        let client = try EtcdClient(EtcdConfiguration(endpoints: ["http://127.0.0.1:1"]))
        let session = WatchSession(
            client: client, key: "/p/", rangeEnd: nil, prevKV: false, progressNotify: true,
            fromRevision: revision, continuation: continuation)
        return (WatchStreamParser(session: session, endpoint: "e"), session, stream)
    }

    static func feed(_ parser: WatchStreamParser, _ text: String) -> Bool {
        Array(text.utf8).withUnsafeBytes { parser.feed($0) }
    }

    /// Where a re-established watch must start: after a `created` header (from now) the next
    /// revision, after events the last event's mod_revision + 1 (never the header's, which may
    /// run ahead of what was delivered), after a progress notification its revision + 1.
    @Test func resumeRevisionFollowsWhatWasDelivered() async throws {
        let (parser, session, stream) = try Self.parser(from: 5)
        #expect(Self.feed(parser, #"{"result":{"header":{"revision":"30"},"created":true}}"# + "\n"))
        #expect(session.state.withLock { $0.resume } == 5)
        #expect(Self.feed(parser, #"{"result":{"header":{"revision":"30"},"events":[{"kv":{"key":"YQ==","mod_revision":"12"}}]}}"# + "\n"))
        #expect(session.state.withLock { $0.resume } == 13)
        #expect(Self.feed(parser, #"{"result":{"header":{"revision":"31"}}}"# + "\n"))
        #expect(session.state.withLock { $0.resume } == 32)
        session.continuation.finish()
        var got: [WatchResponse] = []
        for try await r in stream { got.append(r) }
        #expect(got.map(\.kind) == [.created, .events, .progress])
        #expect(got.map(\.resumeRevision) == [5, 13, 32])
        let (fresh, freshSession, _) = try Self.parser()
        #expect(Self.feed(fresh, #"{"result":{"header":{"revision":"40"},"created":true}}"# + "\n"))
        #expect(freshSession.state.withLock { $0.resume } == 41)
    }

    /// A `created` header below a revision already seen makes the monitor check the member.
    @Test func createdBelowTheHighWaterIsSuspect() throws {
        let (parser, session, _) = try Self.parser(from: 101)
        #expect(Self.feed(parser, #"{"result":{"header":{"revision":"60"},"created":true}}"# + "\n"))
        #expect(session.state.withLock { $0.suspectBackwards })
        #expect(session.state.withLock { $0.highWater } == 100)
    }

    /// Feeds the stream one byte at a time: messages must come out whole.
    @Test func parsesMessagesSplitAtEveryByte() async throws {
        let (parser, session, stream) = try Self.parser()
        let text =
            #"{"result":{"header":{"revision":"7"},"created":true}}"# + "\n"
            + #"{"result":{"header":{"revision":"8"},"events":[{"kv":{"key":"YQ==","value":"MQ==","mod_revision":"8"}},{"type":"DELETE","kv":{"key":"Yg==","mod_revision":"8"}}]}}"#
            + "\n"
            + #"{"result":{"header":{"revision":"9"}}}"# + "\n"
        for byte in Array(text.utf8) {
            let ok = [byte].withUnsafeBytes { parser.feed($0) }
            #expect(ok)
        }
        session.continuation.finish()
        var got: [WatchResponse] = []
        for try await r in stream { got.append(r) }
        #expect(got.count == 3)
        #expect(got[0].created && got[0].revision == 7)
        #expect(got[1].events.map(\.kind) == [.put, .delete])
        #expect(got[1].events[0].kv.valueString == "1")
        #expect(got[1].events[1].kv.key == "b")
        #expect(got[2].events.isEmpty && got[2].revision == 9)
    }

    @Test func canceledWithCompactRevisionIsTypedError() throws {
        let (parser, _, _) = try Self.parser()
        let line = Array((#"{"result":{"header":{"revision":"20"},"canceled":true,"compact_revision":"15"}}"# + "\n").utf8)
        let more = line.withUnsafeBytes { parser.feed($0) }
        #expect(!more)
        #expect(parser.outcome == .compacted(revision: 15))
    }

    @Test func garbageIsMalformedNotACrash() throws {
        let (parser, _, _) = try Self.parser()
        let more = Array("not json at all\n".utf8).withUnsafeBytes { parser.feed($0) }
        #expect(!more)
        if case .malformedResponse(_, _, _, let snippet)? = parser.outcome {
            #expect(snippet.contains("not json"))
        } else {
            Issue.record("expected malformedResponse, got \(String(describing: parser.outcome))")
        }
    }
}
