import ArgumentParser
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import TwillAddress
import TwillAgent
import TwillDatapath
import TwillLease
import TwillNetlink
import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the node agent: lease a subnet, write subnet.env, program the data path.",
        discussion:
            "Flags take flanneld's names; each can also come from FLANNELD_<NAME> (e.g. FLANNELD_ETCD_ENDPOINTS) when not given, checked like the flag."
    )

    @OptionGroup var etcd: EtcdOptions
    @OptionGroup var logging: LoggingOptions

    @Option(name: .customLong("iface"), help: "Interface (name or IPv4 address) for inter-node traffic; repeatable, first match wins.")
    var iface: [String] = []
    @Option(name: .customLong("iface-regex"), help: "Regex matched against interface names and addresses; repeatable.")
    var ifaceRegex: [String] = []
    @Option(
        name: .customLong("iface-can-reach"),
        help: "Use the interface (and source address) the kernel would use to reach this IP (`ip route get`).")
    var ifaceCanReach: String?
    @Option(name: .customLong("public-ip"), help: "IPv4 address other nodes use to reach this one (default: the interface's).")
    var publicIP: String?
    @Option(name: .customLong("public-ipv6"), help: "IPv6 address other nodes use to reach this one.")
    var publicIPv6: String?
    @Option(name: .customLong("subnet-file"), help: "Where to write subnet.env (default /run/flannel/subnet.env).")
    var subnetFile: String?
    @Option(
        name: .customLong("subnet-lease-renew-margin"),
        help: "Renew the lease at least this many minutes before it expires (1-1439, default 60).")
    var renewMargin: Int?
    @Option(name: .customLong("subnet-lease-ttl"), help: "Lease lifetime in seconds (default 86400, as flannel).")
    var leaseTTL: Int?
    @Flag(name: .customLong("ip-masq"), help: "Set up IP masquerade for traffic leaving the overlay (FLANNEL_IPMASQ).")
    var ipMasq = false
    @Flag(
        name: .customLong("ip-masq-fully-random-disable"),
        help: "Masquerade without fully random source port allocation (iptables random-fully, nftables fully-random).")
    var ipMasqFullyRandomDisable = false
    @Flag(
        name: .customLong("ip-blackhole-route"),
        help: "Add a blackhole route for this node's subnet, so unused addresses in it go nowhere else.")
    var ipBlackholeRoute = false
    @Option(name: .customLong("healthz-ip"), help: "Address for /healthz, /readyz and /metrics (default 0.0.0.0).")
    var healthzIP: String?
    @Option(name: .customLong("healthz-port"), help: "Port for /healthz, /readyz and /metrics; 0 (the default) turns them off.")
    var healthzPort: Int?
    @Option(
        name: .customLong("iptables-resync"), help: "Seconds between checks that the masquerade/forward rules are still there (default 5).")
    var iptablesResync: Int?
    @Option(name: .customLong("iptables-forward-rules"), help: "Add FORWARD accept rules for the overlay (true/false, default true).")
    var iptablesForwardRules: Bool?
    @Option(name: .customLong("tun-name"), help: "udp backend: name of the TUN device (default twill0).")
    var tunName: String?
    @Option(
        name: .customLong("udp-queues"),
        help: "udp backend: packet queues (a thread each, multi-queue TUN, SO_REUSEPORT sockets); default half the online CPUs, at least 1."
    )
    var udpQueues: Int?
    @Option(
        name: .customLong("udp-offloads"),
        help: "udp backend: use TUN and UDP offloads (TSO, UDP GSO/GRO) where the kernel has them (true/false, default true).")
    var udpOffloads: Bool?
    @Option(
        name: .customLong("wireguard-engine"),
        help: "wireguard backend: auto (the kernel's WireGuard where it has it, else Twill's own), kernel, or userspace (default auto).")
    var wireGuardEngine: String?
    @Flag(
        name: .customLong("udp-accept-any-source"),
        help: "udp backend: forward datagrams from any sender (no PublicIP/subnet checks). Only for NAT between nodes.")
    var udpAcceptAnySource = false
    @Flag(name: .customLong("release-on-exit"), help: "Give the subnet back when stopped cleanly (default: keep it, as flannel).")
    var releaseOnExit = false

    /// Every flag here and in the option groups, for FLANNELD_ values (a test keeps the list
    /// complete against the help text).
    static let environmentFlags: [EnvironmentFlag] =
        EtcdOptions.environmentFlags + LoggingOptions.environmentFlags + [
            .repeatable("iface"), .repeatable("iface-regex"), .value("iface-can-reach"), .flag("ip-masq-fully-random-disable"),
            .flag("ip-blackhole-route"), .value("public-ip"), .value("public-ipv6"), .value("subnet-file"),
            .value("subnet-lease-renew-margin"), .value("subnet-lease-ttl"), .flag("ip-masq"), .value("healthz-ip"), .value("healthz-port"),
            .value("iptables-resync"), .value("iptables-forward-rules"), .value("tun-name"), .value("udp-queues"), .value("udp-offloads"),
            .flag("udp-accept-any-source"), .flag("release-on-exit"), .value("wireguard-engine"),
        ]

    func validate() throws {
        try etcd.validate()
        if let m = renewMargin, !(1...1439).contains(m) {
            throw ValidationError("--subnet-lease-renew-margin \(m) is outside 1..1439 minutes")
        }
        if let p = healthzPort, !(0...65535).contains(p) {
            throw ValidationError("--healthz-port \(p) is outside 0..65535")
        }
        if let e = wireGuardEngine, WireGuardBackend.Engine(rawValue: e) == nil {
            throw ValidationError("--wireguard-engine \(e) is not one of auto, kernel, userspace")
        }
        if let q = udpQueues, !(1...256).contains(q) {
            throw ValidationError("--udp-queues \(q) is outside 1..256")
        }
        if let r = iptablesResync, !(1...86400).contains(r) {
            throw ValidationError("--iptables-resync \(r) must be a whole number of seconds from 1 to 86400")
        }
        #if DEBUG
        if let v = ProcessInfo.processInfo.environment[Self.testRekeyVariable], Int(v).map({ (4...120).contains($0) }) != true {
            throw ValidationError("\(Self.testRekeyVariable)=\(v) must be a whole number of seconds from 4 to 120")
        }
        #endif
        if let t = leaseTTL, t < 2 { throw ValidationError("--subnet-lease-ttl \(t) is too short (at least 2 seconds)") }
        if let ip = ifaceCanReach, IPv4Address(ip) == nil {
            throw ValidationError("--iface-can-reach \(ip) is not an IPv4 address")
        }
        if let ip = publicIP, IPv4Address(ip) == nil {
            throw ValidationError("--public-ip \(ip) is not an IPv4 address")
        }
        if let ip = publicIPv6, IPv6Address(ip) == nil {
            throw ValidationError("--public-ipv6 \(ip) is not an IPv6 address")
        }
        if let name = tunName, name.isEmpty || name.utf8.count > 15 {
            throw ValidationError("--tun-name \(name) must be 1 to 15 characters")
        }
    }

    func resolvedConfiguration(logger: Logger) -> AgentConfiguration {
        var c = AgentConfiguration(etcd: etcd.configuration(logger: logger), layout: etcd.layout)
        c.ifaces = iface.flatMap { $0.split(separator: ",").map(String.init) }
        c.ifaceRegex = ifaceRegex
        c.ifaceCanReach = ifaceCanReach.flatMap(IPv4Address.init)
        c.ipMasqFullyRandom = !ipMasqFullyRandomDisable
        c.blackholeRoute = ipBlackholeRoute
        c.publicIP = publicIP.flatMap(IPv4Address.init)
        c.publicIPv6 = publicIPv6.flatMap(IPv6Address.init)
        c.subnetFile = subnetFile ?? SubnetEnv.defaultPath
        if let m = renewMargin { c.renewMargin = .seconds(m * 60) }
        if let t = leaseTTL { c.leaseTTL = .seconds(t) }
        c.ipMasq = ipMasq
        if let r = iptablesResync { c.iptablesResync = .seconds(r) }
        if let f = iptablesForwardRules { c.iptablesForwardRules = f }
        c.releaseOnExit = releaseOnExit
        c.tunName = tunName ?? "twill0"
        return c
    }

    var backendOptions: BackendRegistry.Options {
        let environment = ProcessInfo.processInfo.environment
        var timers = WireGuardTimers()
        #if DEBUG
        if let s = environment[Self.testRekeyVariable].flatMap(Int.init) { timers = .shortened(rekeyAfter: s) }
        #endif
        return BackendRegistry.Options(
            tunName: tunName ?? "twill0", acceptAnySource: udpAcceptAnySource, udpQueues: udpQueues, udpOffloads: udpOffloads ?? true,
            wireGuardKeyFile: environment["WIREGUARD_KEY_FILE"].flatMap { $0.isEmpty ? nil : $0 } ?? WireGuardKeyFile.defaultPath,
            wireGuardTimers: timers, wireGuardEngine: wireGuardEngine.flatMap { WireGuardBackend.Engine(rawValue: $0) } ?? .auto)
    }

    /// Tests only, and read only by debug builds (the tests run the debug binary; a release
    /// binary ignores it): WireGuard's rekey interval in seconds, the other timers scaled with it.
    static let testRekeyVariable = "TWILL_TEST_WIREGUARD_REKEY_SECONDS"

    func run() async throws {
        try logging.bootstrap()
        let logger = Logger(label: "twill.agent")
        let configuration = resolvedConfiguration(logger: Logger(label: "twill.etcd"))
        let notifier = SystemdNotifier()
        let subnetFile = configuration.subnetFile
        // The packet engine's TUN queues and sockets are kept across restarts: in systemd's
        // descriptor store under systemd (FileDescriptorStoreMax= in the unit), otherwise by a
        // holder process the stopping agent leaves for the next one.
        let keeper: any DescriptorKeeper = SystemdDescriptorStore.fromEnvironment() ?? HeldDescriptorStore()
        if !keeper.untaken().isEmpty {
            logger.info("descriptors kept by the previous run", metadata: ["names": "\(keeper.untaken().joined(separator: ","))"])
        }
        var options = backendOptions
        options.descriptorKeeper = keeper
        let agent = Agent(
            configuration: configuration, logger: logger, descriptorKeeper: keeper,
            onReady: {
                // systemd (Type=notify) starts dependent units, Docker among them, only now.
                notifier.notify("READY=1\nSTATUS=subnet.env written to \(subnetFile)")
                // Start-up ran code from all over the binary and its libraries; an idle agent needs
                // a small part of it. Let what is not used again leave the RSS (see CodeMappings).
                Task.detached {
                    try? await Task.sleep(for: .seconds(3))
                    CodeMappings.adviseRandomAccess()
                    CodeMappings.dropMappedPages()
                }
            },
            checkBackend: { [options] network in
                try BackendRegistry.validate(BackendSpec(network), options: options, families: network.families)
            }
        ) { [options] network, external in
            try BackendRegistry.make(BackendSpec(network), external: external, options: options, families: network.families)
        }
        // WATCHDOG=1 at half the unit's WatchdogSec, only while the agent's loops make progress
        // (systemd restarts a wedged agent); the reasons go to the log and to STATUS=.
        let watchdog = Task { [state = agent.state] in
            guard let interval = notifier.watchdogInterval else { return }
            var wasAlive = true
            while !Task.isCancelled {
                let (alive, reasons) = state.liveness
                if alive {
                    notifier.notify("WATCHDOG=1")
                } else if wasAlive {
                    logger.critical(
                        "not pinging the systemd watchdog: the agent is stuck", metadata: ["reasons": "\(reasons.joined(separator: "; "))"])
                    notifier.notify("STATUS=stuck: \(reasons.joined(separator: "; "))")
                }
                wasAlive = alive
                try? await Task.sleep(for: interval)
            }
        }
        defer {
            watchdog.cancel()
            notifier.notify("STOPPING=1")
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(
                service: agent, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)
        ]
        let port = healthzPort ?? 0
        if port != 0 {
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            let host = healthzIP ?? "0.0.0.0"
            services.append(
                .init(
                    service: HealthServer(
                        host: host, port: port, state: agent.state, registry: registry,
                        refresh: { agent.refreshMetrics() },
                        status: { agent.status(version: TwillVersion.string) })))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }
}
