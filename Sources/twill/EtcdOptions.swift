import ArgumentParser
import Logging
import TwillEtcd
import TwillLease
import TwillSystem

/// The etcd flags every command takes (flanneld's names); FLANNELD_ values are merged into
/// the arguments before parsing (``FlannelEnvironment/merge(_:flags:environment:)``).
struct EtcdOptions: ParsableArguments {
    @Option(
        name: .customLong("etcd-endpoints"), help: "Comma-separated etcd client URLs (default http://127.0.0.1:4001,http://127.0.0.1:2379)."
    )
    var endpoints: String?
    @Option(name: .customLong("etcd-prefix"), help: "etcd key prefix (default /coreos.com/network).")
    var prefix: String?
    @Option(name: .customLong("etcd-keyfile"), help: "TLS client key (PEM).")
    var keyFile: String?
    @Option(name: .customLong("etcd-certfile"), help: "TLS client certificate (PEM).")
    var certFile: String?
    @Option(name: .customLong("etcd-cafile"), help: "CA that signed etcd's certificate (PEM).")
    var caFile: String?
    @Option(name: .customLong("etcd-username"), help: "etcd user name.")
    var username: String?
    @Option(name: .customLong("etcd-password"), help: "etcd password.")
    var password: String?
    @Option(
        name: .customLong("etcd-endpoint-timeout"),
        help: "Twill: seconds one etcd member may take to answer before the next is tried (default 3).")
    var endpointTimeout: Double?
    @Option(
        name: .customLong("etcd-request-timeout"), help: "Twill: seconds one etcd request may take in all, failover included (default 10).")
    var requestTimeout: Double?
    @Option(
        name: .customLong("etcd-watch-timeout"),
        help: "Twill: seconds of silence after which the watch's member is probed, and left if it fails (default 5).")
    var watchTimeout: Double?

    static let defaultEndpoints = "http://127.0.0.1:4001,http://127.0.0.1:2379"

    static let environmentFlags: [EnvironmentFlag] = [
        .value("etcd-endpoints"), .value("etcd-prefix"), .value("etcd-keyfile"), .value("etcd-certfile"), .value("etcd-cafile"),
        .value("etcd-username"), .value("etcd-password"), .value("etcd-endpoint-timeout"), .value("etcd-request-timeout"),
        .value("etcd-watch-timeout"),
    ]

    /// A timeout flag in seconds.
    func seconds(_ flag: String, _ value: Double?) throws -> Duration? {
        guard let v = value else { return nil }
        guard v > 0, v <= 3600 else {
            throw ValidationError("--\(flag) \(v) must be a number of seconds between 0 and 3600")
        }
        return .milliseconds(Int64(v * 1000))
    }

    func validate() throws {
        _ = try seconds("etcd-endpoint-timeout", endpointTimeout)
        _ = try seconds("etcd-request-timeout", requestTimeout)
        _ = try seconds("etcd-watch-timeout", watchTimeout)
    }

    var layout: EtcdLayout {
        EtcdLayout(prefix: prefix ?? "/coreos.com/network")
    }

    func configuration(logger: Logger) -> EtcdConfiguration {
        let list = endpoints ?? Self.defaultEndpoints
        var c = EtcdConfiguration(
            endpoints: list.split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty },
            username: username,
            password: password,
            caFile: caFile,
            certFile: certFile,
            keyFile: keyFile,
            logger: logger)
        // Checked in validate(); a bad value cannot get here.
        if let t = try? seconds("etcd-endpoint-timeout", endpointTimeout) { c.endpointTimeout = t }
        if let t = try? seconds("etcd-request-timeout", requestTimeout) { c.requestTimeout = t }
        if let t = try? seconds("etcd-watch-timeout", watchTimeout) { c.watchProgressTimeout = t }
        return c
    }

    func client(logger: Logger = Logger(label: "twill.etcd")) throws -> EtcdClient {
        try EtcdClient(configuration(logger: logger))
    }

    func registry(logger: Logger = Logger(label: "twill.lease")) throws -> SubnetRegistry {
        SubnetRegistry(etcd: try client(), layout: layout, logger: logger)
    }
}

/// `--log-level`, shared by every command.
struct LoggingOptions: ParsableArguments {
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default info).")
    var level: String?

    static let environmentFlags: [EnvironmentFlag] = [.value("log-level")]

    func bootstrap() throws {
        let text = level ?? "info"
        guard let lvl = Logger.Level(rawValue: text.lowercased()) else {
            throw ValidationError("--log-level \(text) is not one of trace, debug, info, notice, warning, error, critical")
        }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = lvl
            return h
        }
    }
}
