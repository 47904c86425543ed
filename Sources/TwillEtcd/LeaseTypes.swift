/// A freshly granted etcd lease.
public struct LeaseGrant: Sendable, Equatable {
    public var id: Int64
    /// Seconds the lease lives unless kept alive.
    public var ttl: Int64

    public init(id: Int64, ttl: Int64) {
        self.id = id
        self.ttl = ttl
    }
}

/// What etcd knows about a lease.
public struct LeaseStatus: Sendable, Equatable {
    public var id: Int64
    /// Seconds left.
    public var ttl: Int64
    /// The TTL it was granted with.
    public var grantedTTL: Int64
    /// Keys attached to it.
    public var keys: [String]

    public init(id: Int64, ttl: Int64, grantedTTL: Int64, keys: [String]) {
        self.id = id
        self.ttl = ttl
        self.grantedTTL = grantedTTL
        self.keys = keys
    }
}
