extension EtcdClient {
    /// Grants an etcd lease of `ttl` seconds.
    public func grant(ttl: Int64) async throws(EtcdError) -> LeaseGrant {
        let answer: WireLeaseGrantResponse = try await call("/v3/lease/grant", WireLeaseGrantRequest(TTL: WireInt(ttl), ID: WireInt(0)))
        guard let id = answer.ID?.value, id != 0 else {
            throw .malformedResponse(endpoint: endpoints[0], path: "/v3/lease/grant", reason: answer.error ?? "no lease ID", snippet: "")
        }
        return LeaseGrant(id: id, ttl: answer.TTL?.value ?? ttl)
    }

    /// One keepalive round trip. etcd answers once with the new TTL; an answer without a TTL
    /// means the lease is gone.
    public func keepAlive(lease id: Int64) async throws(EtcdError) -> Int64 {
        let answer: WireKeepAliveResponse
        do {
            answer = try await call("/v3/lease/keepalive", WireLeaseIDRequest(ID: WireInt(id)))
        } catch .leaseNotFound {
            throw .leaseNotFound(id: id)
        }
        guard let ttl = answer.result?.TTL?.value, ttl > 0 else { throw .leaseNotFound(id: id) }
        return ttl
    }

    /// Revokes a lease, deleting every key attached to it; `leaseNotFound` when it is gone.
    public func revoke(lease id: Int64) async throws(EtcdError) {
        do {
            let _: WireEmptyResponse = try await call("/v3/lease/revoke", WireLeaseIDRequest(ID: WireInt(id)))
        } catch .leaseNotFound {
            throw .leaseNotFound(id: id)
        }
    }

    /// The lease's remaining and granted TTL and its keys; nil when it does not exist.
    public func timeToLive(lease id: Int64) async throws(EtcdError) -> LeaseStatus? {
        let answer: WireTimeToLiveResponse = try await call("/v3/lease/timetolive", WireLeaseTTLRequest(ID: WireInt(id), keys: true))
        // An unknown lease answers TTL -1 rather than an error.
        guard let ttl = answer.TTL?.value, ttl >= 0 else { return nil }
        return LeaseStatus(id: id, ttl: ttl, grantedTTL: answer.grantedTTL?.value ?? 0, keys: (answer.keys ?? []).map(\.string))
    }
}
