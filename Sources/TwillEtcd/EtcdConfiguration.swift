import Logging
import TwillSystem

/// How to reach an etcd cluster.
public struct EtcdConfiguration: Sendable {
    /// Client URLs. A request that fails because of the member (no connection, no answer in
    /// time, TLS, HTTP 5xx, no leader, not capable, too many requests) moves on to the next at
    /// once; the last endpoint that answered is tried first.
    public var endpoints: [String]
    /// Credentials for etcd's auth (`/v3/auth/authenticate`); both or neither.
    public var username: String?
    public var password: String?
    /// PEM files for https endpoints: the CA that signed etcd's certificate, and an optional
    /// client certificate and key for `--client-cert-auth`.
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    /// How long to wait for a TCP (and TLS) connection to one endpoint.
    public var connectTimeout: Duration
    /// How long one endpoint may take to answer one request before the next endpoint is
    /// tried. A member that accepts connections but does not answer (a stalled disk, a
    /// SIGSTOPped process, a member cut off from the quorum) costs at most this much.
    public var endpointTimeout: Duration
    /// The deadline of a whole request, failover included: no call waits longer.
    public var requestTimeout: Duration
    /// A watch silent this long has its member probed (a linearizable read on that member);
    /// if the probe fails, the watch moves to another endpoint and resumes where it was.
    /// etcd sends no progress notifications by default (every 10 min at most), so this
    /// probe is what notices a hung member under an idle watch.
    public var watchProgressTimeout: Duration
    /// How long an endpoint that failed is tried only after the others.
    public var endpointCooldown: Duration
    /// Where the client logs failover and re-authentication.
    public var logger: Logger

    /// Defaults: connect 2 s, 3 s per endpoint, 10 s per request, watch probed after 5 s of
    /// silence, a failed endpoint demoted for 30 s.
    public init(
        endpoints: [String],
        username: String? = nil,
        password: String? = nil,
        caFile: String? = nil,
        certFile: String? = nil,
        keyFile: String? = nil,
        connectTimeout: Duration = .seconds(2),
        endpointTimeout: Duration = .seconds(3),
        requestTimeout: Duration = .seconds(10),
        watchProgressTimeout: Duration = .seconds(5),
        endpointCooldown: Duration = .seconds(30),
        logger: Logger = Logger(label: "twill.etcd")
    ) {
        self.endpoints = endpoints
        self.username = username
        self.password = password
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.connectTimeout = connectTimeout
        self.endpointTimeout = endpointTimeout
        self.requestTimeout = requestTimeout
        self.watchProgressTimeout = watchProgressTimeout
        self.endpointCooldown = endpointCooldown
        self.logger = logger
    }

    /// Endpoints with trailing slashes removed, checked to be http(s) URLs.
    func validatedEndpoints() throws(EtcdError) -> [String] {
        if endpoints.isEmpty { throw .invalidConfiguration("no etcd endpoints given") }
        var out: [String] = []
        for raw in endpoints {
            var e = raw.trimmingWhitespace()
            guard e.hasPrefix("http://") || e.hasPrefix("https://") else {
                throw .invalidConfiguration("endpoint \"\(raw)\" must start with http:// or https://")
            }
            while e.hasSuffix("/") { e.removeLast() }
            guard e.count > "https://".count - 1, !e.hasSuffix(":") else {
                throw .invalidConfiguration("endpoint \"\(raw)\" has no host")
            }
            out.append(e)
        }
        if (username == nil) != (password == nil) {
            throw .invalidConfiguration("an etcd username needs a password, and a password a username")
        }
        for (name, value) in [
            ("connect timeout", connectTimeout), ("endpoint timeout", endpointTimeout),
            ("request timeout", requestTimeout), ("watch progress timeout", watchProgressTimeout),
        ]
        where value <= .zero {
            throw .invalidConfiguration("the etcd \(name) must be positive (got \(value))")
        }
        if (certFile == nil) != (keyFile == nil) {
            throw .invalidConfiguration("a client certificate (--etcd-certfile) needs its key (--etcd-keyfile), and the reverse")
        }
        return out
    }
}

extension Duration {
    var milliseconds: Int {
        let (s, attos) = components
        return Int(s) * 1000 + Int(attos / 1_000_000_000_000_000)
    }
}
