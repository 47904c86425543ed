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
        let json = #"{"header":{"cluster_id":"14841639068965178418","revision":"42"},"kvs":[{"key":"YQ==","value":"Yg==","create_revision":"3","mod_revision":"4","version":"2","lease":"7587"}],"count":"1"}"#
        let r = try JSONDecoder().decode(WireRangeResponse.self, from: Data(json.utf8)).model
        #expect(r.header.revision == 42)
        #expect(r.header.clusterID == 14841639068965178418)
        #expect(r.kvs == [KeyValue(key: "a", value: Data("b".utf8), createRevision: 3, modRevision: 4, version: 2, lease: 7587)])
        #expect(r.count == 1)
    }

    @Test func omittedZeroValuesDecode() throws {
        let r = try JSONDecoder().decode(WireRangeResponse.self, from: Data(#"{"header":{"revision":"5"}}"#.utf8)).model
        #expect(r.kvs.isEmpty && r.count == 0 && r.header.revision == 5)
        let t = try JSONDecoder().decode(WireTxnResponse.self, from: Data(#"{"header":{},"responses":[{"response_range":{"header":{}}}]}"#.utf8))
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

    @Test func unreadableErrorBodyIsMalformedWithSnippet() {
        let e = EtcdClient.mapError(endpoint: "http://h:1", path: "/v3/kv/range", status: 502, body: Array("<html>bad gateway</html>".utf8))
        guard case .malformedResponse(_, let path, let reason, let snippet) = e else {
            Issue.record("expected malformedResponse, got \(e)")
            return
        }
        #expect(path == "/v3/kv/range" && reason == "HTTP 502" && snippet.contains("bad gateway"))
    }

    @Test func endpointValidationNamesTheBadEndpoint() {
        #expect(throws: EtcdError.invalidConfiguration("endpoint \"127.0.0.1:2379\" must start with http:// or https://")) {
            try EtcdClient(EtcdConfiguration(endpoints: ["127.0.0.1:2379"]))
        }
        #expect(throws: EtcdError.self) { try EtcdClient(EtcdConfiguration(endpoints: [])) }
        #expect(throws: EtcdError.self) { try EtcdClient(EtcdConfiguration(endpoints: ["http://x"], username: "u")) }
        #expect(throws: EtcdError.self) { try EtcdClient(EtcdConfiguration(endpoints: ["https://x"], caFile: "/nonexistent/ca.pem")) }
    }
}

@Suite struct WatchStreamParserTests {
    /// Feeds the stream one byte at a time: messages must come out whole.
    @Test func parsesMessagesSplitAtEveryByte() async throws {
        let (stream, continuation) = AsyncThrowingStream<WatchResponse, any Error>.makeStream()
        let parser = WatchStreamParser(endpoint: "e", continuation: continuation)
        let text = #"{"result":{"header":{"revision":"7"},"created":true}}"# + "\n"
            + #"{"result":{"header":{"revision":"8"},"events":[{"kv":{"key":"YQ==","value":"MQ==","mod_revision":"8"}},{"type":"DELETE","kv":{"key":"Yg==","mod_revision":"8"}}]}}"# + "\n"
            + #"{"result":{"header":{"revision":"9"}}}"# + "\n"
        for byte in Array(text.utf8) {
            let ok = [byte].withUnsafeBytes { parser.feed($0) }
            #expect(ok)
        }
        continuation.finish()
        var got: [WatchResponse] = []
        for try await r in stream { got.append(r) }
        #expect(got.count == 3)
        #expect(got[0].created && got[0].revision == 7)
        #expect(got[1].events.map(\.kind) == [.put, .delete])
        #expect(got[1].events[0].kv.valueString == "1")
        #expect(got[1].events[1].kv.key == "b")
        #expect(got[2].events.isEmpty && got[2].revision == 9)
    }

    @Test func canceledWithCompactRevisionIsTypedError() {
        let (_, continuation) = AsyncThrowingStream<WatchResponse, any Error>.makeStream()
        let parser = WatchStreamParser(endpoint: "e", continuation: continuation)
        let line = Array((#"{"result":{"header":{"revision":"20"},"canceled":true,"compact_revision":"15"}}"# + "\n").utf8)
        let more = line.withUnsafeBytes { parser.feed($0) }
        #expect(!more)
        #expect(parser.outcome == .compacted(revision: 15))
    }

    @Test func garbageIsMalformedNotACrash() {
        let (_, continuation) = AsyncThrowingStream<WatchResponse, any Error>.makeStream()
        let parser = WatchStreamParser(endpoint: "e", continuation: continuation)
        let more = Array("not json at all\n".utf8).withUnsafeBytes { parser.feed($0) }
        #expect(!more)
        if case .malformedResponse(_, _, _, let snippet)? = parser.outcome {
            #expect(snippet.contains("not json"))
        } else {
            Issue.record("expected malformedResponse, got \(String(describing: parser.outcome))")
        }
    }
}
