#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension EtcdClient {
    /// The value of `key` (in `kvs`, empty when absent), with the header revision.
    public func get(_ key: String) async throws(EtcdError) -> RangeResult {
        let answer: WireRangeResponse = try await call("/v3/kv/range", WireRangeRequest(key: WireBytes(key)))
        return answer.model
    }

    /// The value of `key`; throws `keyNotFound` when absent.
    public func value(_ key: String) async throws(EtcdError) -> KeyValue {
        guard let kv = try await get(key).kvs.first else { throw .keyNotFound(key: key) }
        return kv
    }

    /// Every key starting with `prefix`, in key order.
    public func list(prefix: String) async throws(EtcdError) -> RangeResult {
        let answer: WireRangeResponse = try await call(
            "/v3/kv/range", WireRangeRequest(key: WireBytes(prefix), range_end: WireBytes(prefixRangeEnd(prefix))))
        return answer.model
    }

    /// Writes `value` at `key`, attached to the etcd lease `lease` when non-zero.
    @discardableResult
    public func put(_ key: String, value: Data, lease: Int64 = 0) async throws(EtcdError) -> ResponseHeader {
        let answer: WirePutResponse = try await call(
            "/v3/kv/put", WirePutRequest(key: WireBytes(key), value: WireBytes(value), lease: lease == 0 ? nil : WireInt(lease)))
        return answer.header?.model ?? ResponseHeader(revision: 0)
    }

    /// Deletes `key`; returns how many keys went (0 or 1).
    @discardableResult
    public func delete(_ key: String) async throws(EtcdError) -> Int64 {
        let answer: WireDeleteResponse = try await call("/v3/kv/deleterange", WireDeleteRequest(key: WireBytes(key)))
        return answer.deleted?.value ?? 0
    }

    /// Deletes every key starting with `prefix`; returns how many.
    @discardableResult
    public func delete(prefix: String) async throws(EtcdError) -> Int64 {
        let answer: WireDeleteResponse = try await call(
            "/v3/kv/deleterange", WireDeleteRequest(key: WireBytes(prefix), range_end: WireBytes(prefixRangeEnd(prefix))))
        return answer.deleted?.value ?? 0
    }

    /// Runs `success` if every compare holds, else `failure`, atomically (`/v3/kv/txn`).
    public func txn(compare: [Compare], success: [RequestOp], failure: [RequestOp] = []) async throws(EtcdError) -> TxnResult {
        let answer: WireTxnResponse = try await call(
            "/v3/kv/txn",
            WireTxnRequest(
                compare: compare.map(WireCompare.init), success: success.map(WireRequestOp.init), failure: failure.map(WireRequestOp.init)))
        return TxnResult(
            header: answer.header?.model ?? ResponseHeader(revision: 0),
            succeeded: answer.succeeded ?? false,
            responses: (answer.responses ?? []).map(\.model))
    }

    /// Compacts the key history up to `revision` (used by tests and operators).
    public func compact(revision: Int64) async throws(EtcdError) {
        let _: WireEmptyResponse = try await call("/v3/kv/compaction", WireCompactionRequest(revision: WireInt(revision), physical: true))
    }

    /// Asks an endpoint for its status; a cheap liveness probe.
    public func status() async throws(EtcdError) -> ResponseHeader {
        let answer: WireEmptyResponse = try await call("/v3/maintenance/status", [String: String]())
        return answer.header?.model ?? ResponseHeader(revision: 0)
    }
}
