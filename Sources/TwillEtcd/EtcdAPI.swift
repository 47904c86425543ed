#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The etcd operations the rest of Twill needs: the seam between the lease logic and the
/// network. `EtcdClient` is the real implementation.
public protocol EtcdAPI: Sendable {
    /// The value of `key`, or nil when absent, with the header revision.
    func get(_ key: String) async throws(EtcdError) -> RangeResult
    /// Every key starting with `prefix`, in key order.
    func list(prefix: String) async throws(EtcdError) -> RangeResult
    /// Writes `value` at `key`, attached to `lease` when non-zero. Returns the header.
    @discardableResult
    func put(_ key: String, value: Data, lease: Int64) async throws(EtcdError) -> ResponseHeader
    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    @discardableResult
    func delete(_ key: String) async throws(EtcdError) -> Int64
    /// Runs `success` when every compare holds, else `failure`, atomically.
    func txn(compare: [Compare], success: [RequestOp], failure: [RequestOp]) async throws(EtcdError) -> TxnResult
    /// Grants a lease of `ttl` seconds.
    func grant(ttl: Int64) async throws(EtcdError) -> LeaseGrant
    /// Refreshes a lease once; returns its new TTL. Throws `leaseNotFound` when it is gone.
    func keepAlive(lease: Int64) async throws(EtcdError) -> Int64
    /// Revokes a lease, deleting every key attached to it.
    func revoke(lease: Int64) async throws(EtcdError)
    /// What etcd knows about a lease; nil when it does not exist.
    func timeToLive(lease: Int64) async throws(EtcdError) -> LeaseStatus?
    /// Watches every key starting with `prefix` from `fromRevision` (or from now when nil).
    func watch(prefix: String, fromRevision: Int64?) -> AsyncThrowingStream<WatchResponse, any Error>
}

extension EtcdAPI {
    /// Writes a UTF-8 string value.
    @discardableResult
    public func put(_ key: String, _ value: String, lease: Int64 = 0) async throws(EtcdError) -> ResponseHeader {
        try await put(key, value: Data(value.utf8), lease: lease)
    }
}
