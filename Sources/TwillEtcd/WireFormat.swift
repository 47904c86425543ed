#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// The gateway's JSON (grpc-gateway v1): proto field names, base64 bytes, 64-bit integers as
// strings, and zero values left out. Every field is optional for that reason.

/// A 64-bit integer that the gateway writes as a JSON string (and tolerates as a number).
struct WireInt: Codable, Sendable {
    var value: Int64
    init(_ value: Int64) { self.value = value }
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            if let v = Int64(s) {
                value = v
                return
            }
            if let u = UInt64(s) {
                value = Int64(bitPattern: u)
                return
            } // cluster/member IDs are uint64
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "\"\(s)\" is not an integer")
        }
        value = try c.decode(Int64.self)
    }
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(String(value))
    }
}

/// Bytes that travel as base64 text.
struct WireBytes: Codable, Sendable {
    var data: Data
    init(_ data: Data) { self.data = data }
    init(_ string: String) { self.data = Data(string.utf8) }
    init(_ bytes: [UInt8]) { self.data = Data(bytes) }
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let d = Data(base64Encoded: s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not base64: \(s.prefix(40))")
        }
        data = d
    }
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(data.base64EncodedString())
    }
    var string: String { String(decoding: data, as: UTF8.self) }
}

struct WireHeader: Decodable {
    var cluster_id: WireInt?
    var member_id: WireInt?
    var revision: WireInt?
    var raft_term: WireInt?

    var model: ResponseHeader {
        ResponseHeader(
            clusterID: UInt64(bitPattern: cluster_id?.value ?? 0),
            memberID: UInt64(bitPattern: member_id?.value ?? 0),
            revision: revision?.value ?? 0,
            raftTerm: UInt64(bitPattern: raft_term?.value ?? 0))
    }
}

struct WireKeyValue: Decodable {
    var key: WireBytes?
    var create_revision: WireInt?
    var mod_revision: WireInt?
    var version: WireInt?
    var value: WireBytes?
    var lease: WireInt?

    var model: KeyValue {
        KeyValue(
            key: key?.string ?? "",
            value: value?.data ?? Data(),
            createRevision: create_revision?.value ?? 0,
            modRevision: mod_revision?.value ?? 0,
            version: version?.value ?? 0,
            lease: lease?.value ?? 0)
    }
}

struct WireRangeRequest: Encodable {
    var key: WireBytes
    var range_end: WireBytes?
    var limit: WireInt?
    var count_only: Bool?
}

struct WireRangeResponse: Decodable {
    var header: WireHeader?
    var kvs: [WireKeyValue]?
    var count: WireInt?
    var more: Bool?

    var model: RangeResult {
        RangeResult(
            header: header?.model ?? ResponseHeader(revision: 0),
            kvs: (kvs ?? []).map(\.model),
            count: count?.value ?? 0,
            more: more ?? false)
    }
}

struct WirePutRequest: Encodable {
    var key: WireBytes
    var value: WireBytes
    var lease: WireInt?
}

struct WireDeleteRequest: Encodable {
    var key: WireBytes
    var range_end: WireBytes?
}

struct WireDeleteResponse: Decodable {
    var header: WireHeader?
    var deleted: WireInt?
}

struct WirePutResponse: Decodable {
    var header: WireHeader?
}

struct WireCompare: Encodable {
    var key: WireBytes
    var target: String
    var result: String
    var version: WireInt?
    var create_revision: WireInt?
    var mod_revision: WireInt?
    var value: WireBytes?
    var lease: WireInt?

    init(_ c: Compare) {
        key = WireBytes(c.key)
        result = c.result.rawValue
        switch c.target {
        case .version(let v):
            target = "VERSION"
            version = WireInt(v)
        case .createRevision(let v):
            target = "CREATE"
            create_revision = WireInt(v)
        case .modRevision(let v):
            target = "MOD"
            mod_revision = WireInt(v)
        case .value(let d):
            target = "VALUE"
            value = WireBytes(d)
        case .lease(let v):
            target = "LEASE"
            lease = WireInt(v)
        }
    }
}

struct WireRequestOp: Encodable {
    var request_range: WireRangeRequest?
    var request_put: WirePutRequest?
    var request_delete_range: WireDeleteRequest?

    init(_ op: RequestOp) {
        switch op {
        case .put(let key, let value, let lease):
            request_put = WirePutRequest(key: WireBytes(key), value: WireBytes(value), lease: lease == 0 ? nil : WireInt(lease))
        case .get(let key):
            request_range = WireRangeRequest(key: WireBytes(key))
        case .list(let prefix):
            request_range = WireRangeRequest(key: WireBytes(prefix), range_end: WireBytes(prefixRangeEnd(prefix)))
        case .delete(let key):
            request_delete_range = WireDeleteRequest(key: WireBytes(key))
        }
    }
}

struct WireTxnRequest: Encodable {
    var compare: [WireCompare]
    var success: [WireRequestOp]
    var failure: [WireRequestOp]
}

struct WireResponseOp: Decodable {
    var response_range: WireRangeResponse?
    var response_put: WirePutResponse?
    var response_delete_range: WireDeleteResponse?

    var model: ResponseOp {
        if let r = response_range { return .range(r.model) }
        if let d = response_delete_range { return .delete(deleted: d.deleted?.value ?? 0) }
        return .put
    }
}

struct WireTxnResponse: Decodable {
    var header: WireHeader?
    var succeeded: Bool?
    var responses: [WireResponseOp]?
}

struct WireLeaseGrantRequest: Encodable {
    var TTL: WireInt
    var ID: WireInt
}
struct WireLeaseGrantResponse: Decodable {
    var header: WireHeader?
    var ID: WireInt?
    var TTL: WireInt?
    var error: String?
}
struct WireLeaseIDRequest: Encodable { var ID: WireInt }
struct WireLeaseTTLRequest: Encodable {
    var ID: WireInt
    var keys: Bool
}
struct WireKeepAliveResponse: Decodable {
    struct Result: Decodable {
        var header: WireHeader?
        var ID: WireInt?
        var TTL: WireInt?
    }
    var result: Result?
    var error: WireStreamError?
}
struct WireTimeToLiveResponse: Decodable {
    var header: WireHeader?
    var ID: WireInt?
    var TTL: WireInt?
    var grantedTTL: WireInt?
    var keys: [WireBytes]?
}
struct WireEmptyResponse: Decodable { var header: WireHeader? }

struct WireAuthRequest: Encodable {
    var name: String
    var password: String
}
struct WireAuthResponse: Decodable {
    var header: WireHeader?
    var token: String?
}

struct WireCompactionRequest: Encodable {
    var revision: WireInt
    var physical: Bool
}

struct WireWatchCreate: Encodable {
    struct Create: Encodable {
        var key: WireBytes
        var range_end: WireBytes?
        var start_revision: WireInt?
        var progress_notify: Bool
        var prev_kv: Bool
    }
    var create_request: Create
}

struct WireWatchMessage: Decodable {
    struct Result: Decodable {
        var header: WireHeader?
        var watch_id: WireInt?
        var created: Bool?
        var canceled: Bool?
        var compact_revision: WireInt?
        var cancel_reason: String?
        var events: [WireEvent]?
    }
    var result: Result?
    var error: WireStreamError?
}

struct WireEvent: Decodable {
    var type: String?
    var kv: WireKeyValue?
    var prev_kv: WireKeyValue?
}

/// The error object inside a streamed answer (watch, keepalive).
struct WireStreamError: Decodable {
    var grpc_code: Int?
    var http_code: Int?
    var message: String?
    var http_status: String?
}

/// What the client reads from every answer, whatever its type: the header (for the cluster
/// ID) and, for streamed answers, an error object sent with HTTP 200.
protocol WireAnswer: Decodable, Sendable {
    var wireHeader: WireHeader? { get }
    var wireError: WireStreamError? { get }
}

extension WireAnswer {
    var wireError: WireStreamError? { nil }
}

extension WireRangeResponse: WireAnswer { var wireHeader: WireHeader? { header } }
extension WireDeleteResponse: WireAnswer { var wireHeader: WireHeader? { header } }
extension WirePutResponse: WireAnswer { var wireHeader: WireHeader? { header } }
extension WireTxnResponse: WireAnswer { var wireHeader: WireHeader? { header } }
extension WireLeaseGrantResponse: WireAnswer { var wireHeader: WireHeader? { header } }
extension WireTimeToLiveResponse: WireAnswer { var wireHeader: WireHeader? { header } }
extension WireEmptyResponse: WireAnswer { var wireHeader: WireHeader? { header } }
extension WireAuthResponse: WireAnswer { var wireHeader: WireHeader? { header } }
extension WireKeepAliveResponse: WireAnswer {
    var wireHeader: WireHeader? { result?.header }
    var wireError: WireStreamError? { error }
}

/// The error body of a unary answer.
struct WireErrorBody: Decodable {
    var error: String?
    var message: String?
    var code: Int?
}
