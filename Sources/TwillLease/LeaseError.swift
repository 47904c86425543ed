import TwillEtcd

/// What can go wrong with the network config, leases and subnet.env, in words an operator
/// can act on.
public enum LeaseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The network config is missing.
    case configNotFound(key: String)
    /// The network config is there but wrong; `reason` says what.
    case invalidConfig(key: String, reason: String)
    /// Every subnet is taken.
    case outOfSubnets(network: String, subnetLength: Int, total: UInt64, taken: Int)
    /// Creating a lease kept losing races with other nodes.
    case contention(attempts: Int)
    /// A subnet.env file could not be read or written.
    case subnetFile(path: String, reason: String)
    /// A lease key or value that cannot be understood.
    case malformedLease(key: String, reason: String)
    /// An operator command refused (e.g. reserving a subnet that is taken).
    case refused(String)
    /// etcd failed.
    case etcd(EtcdError)

    public var description: String {
        switch self {
        case .configNotFound(let key):
            return
                "network config not found at \(key): write one with `twill network set` (flannel: etcdctl put \(key) '{\"Network\":\"10.244.0.0/16\"}'); note that Twill reads etcd's v3 API, not v2"
        case .invalidConfig(let key, let reason):
            return "network config at \(key) is invalid: \(reason)"
        case .outOfSubnets(let network, let len, let total, let taken):
            return "out of subnets: \(network) has \(total) subnets of /\(len) between SubnetMin and SubnetMax, and \(taken) are taken"
        case .contention(let attempts):
            return "could not create a lease after \(attempts) attempts: other nodes kept taking the chosen subnets"
        case .subnetFile(let path, let reason):
            return "subnet file \(path): \(reason)"
        case .malformedLease(let key, let reason):
            return "lease \(key) is malformed: \(reason)"
        case .refused(let message):
            return message
        case .etcd(let e):
            return e.description
        }
    }
}
