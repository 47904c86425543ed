import Logging

/// How to reach an etcd cluster.
public struct EtcdConfiguration: Sendable {
    /// Client URLs, tried in order; a request that cannot connect moves on to the next.
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
    /// How long one unary request may take in all.
    public var requestTimeout: Duration
    /// Where the client logs failover and re-authentication.
    public var logger: Logger

    public init(
        endpoints: [String],
        username: String? = nil,
        password: String? = nil,
        caFile: String? = nil,
        certFile: String? = nil,
        keyFile: String? = nil,
        connectTimeout: Duration = .seconds(2),
        requestTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "twill.etcd")
    ) {
        self.endpoints = endpoints
        self.username = username
        self.password = password
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
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

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
