/// Everything that can go wrong talking to etcd, in cases a caller can act on.
///
/// Messages name the endpoint(s) and what etcd or libcurl said, so an operator reading a log
/// line knows where to look.
public enum EtcdError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The requested revision has been compacted away; re-list, then watch from the new revision.
    case compacted(revision: Int64)
    /// The etcd lease does not exist (expired or revoked).
    case leaseNotFound(id: Int64)
    /// Authentication failed or the token was refused.
    case unauthenticated(endpoint: String, message: String)
    /// The member answered but cannot serve now (no leader, not capable, too many requests,
    /// a timeout inside etcd, HTTP 5xx): another member may.
    case unavailable(endpoint: String, message: String)
    /// A key that had to exist does not.
    case keyNotFound(key: String)
    /// Every endpoint failed (could not connect, did not answer in time, TLS, unavailable);
    /// `message` says what each one did.
    case transport(endpoints: [String], message: String)
    /// The answer was not what the gateway sends; `snippet` is the start of the body.
    case malformedResponse(endpoint: String, path: String, reason: String, snippet: String)
    /// Any other error etcd reported (gRPC code, HTTP status, message).
    case server(endpoint: String, code: Int, httpStatus: Int, message: String)
    /// The watch stream ended or was canceled by the server for a reason other than compaction.
    case watchClosed(endpoint: String, reason: String)
    /// The client was configured with something unusable (bad endpoint URL, unreadable file).
    case invalidConfiguration(String)
    /// The store's revision is below one already seen: etcd was restored from a snapshot or
    /// started on a new data directory. Everything must be listed again.
    case revisionWentBackwards(endpoint: String, known: Int64, current: Int64)
    /// The endpoints now belong to another cluster (a restore or a new cluster at the same
    /// address): everything must be listed again.
    case clusterChanged(endpoint: String, known: UInt64, current: UInt64)

    public var description: String {
        switch self {
        case .compacted(let revision):
            return "etcd: the requested revision has been compacted (compact revision \(revision))"
        case .leaseNotFound(let id):
            return "etcd: lease \(id) not found (expired or revoked)"
        case .unauthenticated(let endpoint, let message):
            return "etcd at \(endpoint): authentication failed: \(message)"
        case .unavailable(let endpoint, let message):
            return "etcd at \(endpoint) is unavailable: \(message)"
        case .keyNotFound(let key):
            return "etcd: key \(key) not found"
        case .transport(let endpoints, let message):
            return "etcd unreachable (tried \(endpoints.joined(separator: ", "))): \(message)"
        case .malformedResponse(let endpoint, let path, let reason, let snippet):
            return "etcd at \(endpoint)\(path) sent an unexpected answer (\(reason)): \(snippet)"
        case .server(let endpoint, let code, let httpStatus, let message):
            return "etcd at \(endpoint) refused the request (code \(code), HTTP \(httpStatus)): \(message)"
        case .watchClosed(let endpoint, let reason):
            return "etcd watch on \(endpoint) ended: \(reason)"
        case .invalidConfiguration(let message):
            return "etcd client configuration: \(message)"
        case .revisionWentBackwards(let endpoint, let known, let current):
            return
                "etcd at \(endpoint) is at revision \(current), below the \(known) already seen: it was restored from a snapshot or started afresh"
        case .clusterChanged(let endpoint, let known, let current):
            return
                "etcd at \(endpoint) belongs to cluster \(String(current, radix: 16)), not \(String(known, radix: 16)) as before: it was restored or replaced"
        }
    }

    /// A short name of the case, for metric labels.
    public var kind: String {
        switch self {
        case .compacted: "compacted"
        case .leaseNotFound: "lease_not_found"
        case .unauthenticated: "unauthenticated"
        case .unavailable: "unavailable"
        case .keyNotFound: "key_not_found"
        case .transport: "transport"
        case .malformedResponse: "malformed_response"
        case .server: "server"
        case .watchClosed: "watch_closed"
        case .invalidConfiguration: "invalid_configuration"
        case .revisionWentBackwards: "revision_went_backwards"
        case .clusterChanged: "cluster_changed"
        }
    }

    /// Whether retrying later (or on another endpoint) may succeed.
    public var isTransient: Bool {
        switch self {
        case .transport, .unavailable, .watchClosed, .revisionWentBackwards, .clusterChanged: return true
        default: return false
        }
    }
}
