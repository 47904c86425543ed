import Logging
import ServiceLifecycle
import Synchronization
import TwillAddress
import TwillDatapath
import TwillEtcd
import TwillLease
import TwillNetlink
import TwillSystem

/// One node's agent: a supervisor over node sessions.
///
/// A session is config -> backend -> lease -> data path and subnet.env -> loops (watch,
/// lease, kernel, iptables). A valid change of the network config ends the session and
/// starts the next from the right step: the backend is rebuilt only when its type or settings
/// changed, the subnet re-leased only when it no longer fits. A lost or taken lease is
/// followed within the session. The process lives on through all of it.
public final class Agent: Service, Sendable {
    /// Builds the backend named by the network config, for the chosen interface. It must not
    /// touch the kernel yet (that is `prepare()`).
    public typealias BackendFactory = @Sendable (NetworkConfig, ExternalInterface) throws -> any Backend
    /// Checks what a network config asks of its backend (type, families, settings) without
    /// building one: run for every config read, and once a second while a bad one waits.
    public typealias BackendCheck = @Sendable (NetworkConfig) throws -> Void

    public let configuration: AgentConfiguration
    public let state = AgentState()
    let makeBackend: BackendFactory
    let checkBackend: BackendCheck
    let logger: Logger
    /// Called once subnet.env is written and the backend is up (sd_notify READY=1 hooks here).
    let onReady: @Sendable () -> Void
    private let readyNotified = Atomic<Bool>(false)
    /// The running backend, for metrics scrapes.
    private let backendBox = Mutex<(any Backend)?>(nil)
    /// The etcd client, for the node status.
    private let etcdBox = Mutex<EtcdClient?>(nil)
    /// What the status shows about the node: interface, config, backend MTU.
    private let statusFacts = Mutex<(external: ExternalInterface?, config: NetworkConfig?, mtu: Int?)>((nil, nil, nil))
    /// The etcd layout, for lease keys in the status.
    private var layout: EtcdLayout { configuration.layout }

    /// Where the packet engine's descriptors were kept by the previous run (systemd's store).
    let descriptorKeeper: any DescriptorKeeper

    public init(
        configuration: AgentConfiguration, logger: Logger = Logger(label: "twill.agent"),
        descriptorKeeper: any DescriptorKeeper = NoDescriptorKeeper(),
        onReady: @escaping @Sendable () -> Void = {}, checkBackend: @escaping BackendCheck = { _ in },
        makeBackend: @escaping BackendFactory
    ) {
        self.checkBackend = checkBackend
        self.descriptorKeeper = descriptorKeeper
        self.configuration = configuration
        self.logger = logger
        self.onReady = onReady
        self.makeBackend = makeBackend
    }

    /// The etcd endpoints' health as the agent's client sees it.
    public var etcdHealth: [EndpointHealth] { etcdBox.withLock { $0?.endpointHealth ?? [] } }

    /// A backend running for one network config.
    struct RunningBackend {
        var backend: any Backend
        /// The Backend object it was built from: a change of it rebuilds the backend.
        var spec: JSONValue
        /// The families it was built for (`EnableIPv4`, `EnableIPv6`): a change rebuilds it too.
        var families: IPFamilies
        var advert: BackendAdvert
    }

    public func run() async throws {
        let etcd = try EtcdClient(configuration.etcd)
        etcdBox.withLock { $0 = etcd }
        let registry = SubnetRegistry(etcd: etcd, layout: configuration.layout, logger: logger)
        let external: ExternalInterface
        // An interface with IPv6 only suits an IPv6-only network alone: why it does not suit
        // an IPv4 one is said once the config is known.
        var unfitForIPv4: String?
        do {
            external = try resolveInterface(allowIPv6Only: false)
        } catch {
            guard let lenient = try? resolveInterface(allowIPv6Only: true) else { throw AgentError(error.description) }
            external = lenient
            unfitForIPv4 = error.description
        }
        logger.info(
            "using interface",
            metadata: [
                "iface": "\(external.name)", "local_ip": "\(external.localIP)", "public_ip": "\(external.publicIP)",
                "public_ipv6": "\(external.publicIPv6.map(\.description) ?? "-")", "mtu": "\(external.mtu)",
            ])
        statusFacts.withLock { $0.external = external }
        let keeper = LeaseKeeper(
            registry: registry, ttl: configuration.ttlSeconds, schedule: RenewSchedule(interval: configuration.renewInterval),
            requestTimeout: configuration.etcd.requestTimeout, logger: logger, state: state)
        let rules = RulesSlot()

        guard var config = try await cancellable({ try await self.waitForConfig(registry) }) else { return }
        if let unfitForIPv4, config.enableIPv4 { throw AgentError(unfitForIPv4) }
        // The last subnet.env names the subnet to ask for again; an unreadable one is not fatal
        // (a fresh subnet is chosen) but is said, since it means losing the node's old subnet.
        var previous: IPv4Network?
        var previous6: IPv6Network?
        do {
            let env = try SubnetEnv.read(path: configuration.subnetFile)
            previous = env?.subnet
            previous6 = env?.ipv6Subnet
        } catch {
            logger.warning("cannot reuse the previous subnet", metadata: ["error": "\(error)"])
        }

        var running: RunningBackend?
        sessions: while true {
            // 1. The backend the config asks for.
            if running?.spec != config.backend || running?.families != config.families {
                if let old = running {
                    state.setBackend(type: old.backend.type, up: false)
                    await old.backend.teardown()
                    logger.notice("removed the \(old.backend.type) backend for the new network config")
                    running = nil
                    backendBox.withLock { $0 = nil }
                }
                do {
                    let backend = try makeBackend(config, external)
                    // Devices another backend left (a udp node turned vxlan while stopped, say).
                    await removeOtherTwillDevices(keeping: backend.devices)
                    backendBox.withLock { $0 = backend }
                    state.setBackend(type: backend.type, up: false)
                    running = RunningBackend(
                        backend: backend, spec: config.backend, families: config.families,
                        advert: try await backend.prepare())
                    if let wanted = try? BackendSpec(config).int("MTU", in: 0...Int.max), wanted > external.mtu {
                        // flannel takes Backend.MTU as given; so does Twill, but larger than the
                        // underlay's own MTU it means fragmented or dropped packets.
                        logger.warning(
                            "Backend.MTU is larger than the external interface's MTU; packets that big will be fragmented or dropped",
                            metadata: [
                                "backend_mtu": "\(wanted)", "iface": "\(external.name)", "iface_mtu": "\(external.mtu)",
                            ])
                    }
                } catch {
                    logger.error(
                        "cannot set up the backend; retrying", metadata: ["backend": "\(config.backendType)", "error": "\(error)"])
                    if let b = backendBox.withLock({ $0 }) { await b.stop() }
                    backendBox.withLock { $0 = nil }
                    switch await waitForChange(registry, from: config, upTo: .seconds(10)) {
                    case .shutdown: break sessions
                    case .changed(let new): config = new
                    case .unchanged: break
                    }
                    continue sessions
                }
            }
            guard let current = running else { continue }
            statusFacts.withLock {
                $0.config = config
                $0.mtu = current.advert.mtu
            }
            // PublicIPv6 is published only for a dual-stack network: peers route to it.
            // An IPv6-only node publishes no IPv4 address (flannel's "0.0.0.0"): it is known by PublicIPv6.
            let attributes = LeaseAttributes(
                publicIP: config.enableIPv4 ? external.publicIP : .any,
                publicIPv6: config.enableIPv6 ? external.publicIPv6 : nil,
                backendType: current.advert.backendType, backendData: current.advert.backendData,
                backendV6Data: config.enableIPv6 ? current.advert.backendV6Data : nil)

            // 2. The lease.
            let lease: Lease
            let (wanted, reuse, reuse6) = (config, previous, previous6)
            do {
                guard
                    let l = try await cancellable({
                        try await self.retrying("acquire a subnet lease") { () async throws(LeaseError) -> Lease in
                            try await keeper.establish(config: wanted, attributes: attributes, previous: reuse, previous6: reuse6)
                        }
                    })
                else { break sessions }
                lease = l
            } catch {
                // Not transient (out of subnets under a new config, etcd refusing this node):
                // the node stays up, says why it is not ready, and tries again, sooner when
                // the config changes. Other nodes' leases expiring can free a subnet too.
                logger.error(
                    "cannot lease a subnet; retrying in 30 s or when the network config changes",
                    metadata: [
                        "network": "\(config.network.map { "\($0)" } ?? "-")", "error": "\(error)",
                    ])
                state.setChangingOver("cannot lease a subnet: \(error)")
                switch await waitForChange(registry, from: config, upTo: .seconds(30), orFreedSubnetIn: etcd) {
                case .shutdown: break sessions
                case .changed(let new): config = new
                case .unchanged: break
                }
                continue sessions
            }
            previous = nil
            previous6 = nil
            logger.info(
                "holding subnet lease",
                metadata: [
                    "subnet": "\(lease.subnet.ipv4)", "subnet6": "\(lease.subnet.ipv6.map(\.description) ?? "-")",
                    "reservation": "\(lease.isReservation)", "etcd_lease": "\(lease.etcdLease)",
                ])

            // 3. The node: data path, iptables rules, subnet.env; then the session's loops.
            let session = NodeSession(
                agent: self, etcd: etcd, registry: registry, keeper: keeper, config: config,
                backend: current.backend, mtu: current.advert.mtu, external: external, rules: rules)
            do {
                try await session.configureNode(lease)
            } catch {
                logger.error("cannot start the data path; retrying", metadata: ["backend": "\(current.backend.type)", "error": "\(error)"])
                state.setBackend(type: current.backend.type, up: false)
                await current.backend.stop()
                running = nil
                switch await waitForChange(registry, from: config, upTo: .seconds(10)) {
                case .shutdown: break sessions
                case .changed(let new): config = new
                case .unchanged: break
                }
                continue
            }
            state.setChangingOver(nil)
            // What an earlier run kept open that this data path did not take (another TUN name,
            // another backend) goes now.
            let keeper = descriptorKeeper
            await Blocking.run { EngineDescriptors.discardUntaken(keeper) }
            let ending = await cancelWhenGracefulShutdown { await session.run() }
            if stopping { break sessions }
            switch ending {
            case .shutdown:
                break sessions
            case .configChanged(let new):
                state.setChangingOver("applying a new network config")
                logger.notice(
                    "applying the new network config",
                    metadata: [
                        "network": "\(new.network.map { "\($0)" } ?? "-")", "subnet_len": "\(new.subnetLength)",
                        "backend": "\(new.backendType)",
                        "backend_changed": "\(new.backend != config.backend)",
                    ])
                config = new
            }
        }

        // A plain stop leaves the data path as it is (flanneld's behaviour): routes, devices,
        // neighbour and FDB entries, rules and the blackhole route stay, so the node goes on
        // forwarding while no agent runs, and the next start adopts them. --release-on-exit
        // gives the subnet back, and then nothing of it may stay.
        // Clean-up runs in a task of its own: the current one is cancelled, and etcd calls
        // made from a cancelled task would be cut short.
        let release = configuration.releaseOnExit
        let log = logger
        let backend = running?.backend
        let masq = rules.get()
        let descriptors = descriptorKeeper
        await Task {
            guard release else {
                await backend?.stop()
                if descriptors.handOff() {
                    log.info(
                        "a holder keeps the data path's queues and sockets open for the next start",
                        metadata: ["for": "\(HeldDescriptorStore.linger) s"])
                }
                log.info(
                    "left the data path in place for the next start (`twill cleanup` removes it)",
                    metadata: ["backend": "\(backend?.type ?? "-")"])
                return
            }
            if let masq { await Blocking.run { masq.teardown() } }
            await backend?.teardown()
            do { try await Blocking.run { () throws in try BlackholeRoute.removeAll(netlink: try Netlink()) } } catch {
                log.error("could not remove the blackhole route", metadata: ["error": "\(error)"])
            }
            if let lease = keeper.lease {
                do {
                    try await keeper.release()
                    log.info("released subnet lease", metadata: ["subnet": "\(lease.subnet.ipv4)"])
                } catch {
                    log.error("could not release subnet lease", metadata: ["subnet": "\(lease.subnet.ipv4)", "error": "\(error)"])
                }
            }
        }.value
        logger.info("agent stopped")
    }

    /// Removes Twill's devices that the running backend does not use (``OwnedKernelState``).
    func removeOtherTwillDevices(keeping wanted: [String]) async {
        let (log, tunName) = (logger, configuration.tunName)
        await Blocking.run {
            do {
                try OwnedKernelState.removeDevices(try Netlink(), tunName: tunName, keeping: wanted, logger: log)
            } catch {
                log.warning("cannot check for devices an earlier run left", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Whether the agent is asked to stop (its task cancelled, or a graceful shutdown).
    var stopping: Bool { Task.isCancelled || Task.isShuttingDownGracefully }

    /// Runs `body` until it finishes or graceful shutdown is asked for (then nil).
    func cancellable<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T? {
        do {
            let value = try await cancelWhenGracefulShutdown { try await body() }
            return stopping ? nil : value
        } catch is CancellationError {
            return nil
        } catch  where stopping {
            return nil
        }
    }

    /// Waits for a valid network config, saying once a second why it cannot go on.
    func waitForConfig(_ registry: SubnetRegistry) async throws -> NetworkConfig {
        var lastMessage = ""
        while true {
            do {
                let config = try await registry.networkConfig()
                try validate(config)
                logger.info(
                    "network config",
                    metadata: [
                        "network": "\(config.network.map { "\($0)" } ?? "-")", "subnet_len": "\(config.subnetLength)",
                        "backend": "\(config.backendType)",
                    ])
                return config
            } catch {
                let message = "\(error)"
                if message != lastMessage {
                    logger.error("waiting for a usable network config", metadata: ["error": "\(message)"])
                    lastMessage = message
                }
            }
            try await Task.sleep(for: configuration.configRetryInterval)
        }
    }

    /// Checks what the config asks of the backend (type, Port, VNI...) without touching the kernel.
    func validate(_ config: NetworkConfig) throws {
        try checkBackend(config)
        // The interface the agent runs with (it is chosen once, at start); before that, the flags'.
        guard let external = statusFacts.withLock({ $0.external }) ?? (try? resolveInterface(allowIPv6Only: !config.enableIPv4)) else {
            return
        }
        if config.enableIPv4, external.publicIP == .any {
            throw AgentError(
                "interface \(external.name) has no IPv4 address, but the network config has an IPv4 Network; give it one (and restart the agent), or set EnableIPv4 to false for an IPv6-only network"
            )
        }
        if !config.enableIPv4, external.publicIPv6 == nil {
            throw AgentError(
                "EnableIPv4 is false (an IPv6-only network), but interface \(external.name) has no global IPv6 address and no --public-ipv6 is given"
            )
        }
    }

    /// The external interface from the flags (``ExternalInterfaceResolver``).
    func resolveInterface(allowIPv6Only: Bool) throws(ExternalInterfaceResolver.Failure) -> ExternalInterface {
        try ExternalInterfaceResolver.resolve(
            ifaces: configuration.ifaces, ifaceRegex: configuration.ifaceRegex,
            canReach: configuration.ifaceCanReach, publicIP: configuration.publicIP,
            publicIPv6: configuration.publicIPv6, allowIPv6Only: allowIPv6Only)
    }

    enum ConfigWait {
        case changed(NetworkConfig)
        case unchanged, shutdown
    }

    /// After a failure: waits up to `limit` for a different valid config.
    /// With `etcd`, also returns (`.unchanged`, to try again at once) when a lease is deleted
    /// or expires: a node out of subnets takes a freed one within moments, not at the next timer.
    func waitForChange(
        _ registry: SubnetRegistry, from config: NetworkConfig, upTo limit: Duration,
        orFreedSubnetIn etcd: EtcdClient? = nil
    ) async -> ConfigWait {
        guard let etcd else { return await pollForChange(registry, from: config, upTo: limit) }
        let (layout, log) = (configuration.layout, logger)
        return await withTaskGroup(of: ConfigWait?.self) { group -> ConfigWait in
            group.addTask { await self.pollForChange(registry, from: config, upTo: limit) }
            group.addTask {
                for await event in ClusterWatcher(etcd: etcd, layout: layout, logger: log).events() {
                    switch event {
                    case .leaseDeleted(let key):
                        log.info("a lease was deleted or expired; trying to lease a subnet again", metadata: ["key": "\(key)"])
                        return .unchanged
                    case .reset(_, _, _, let reason) where reason != .initial:
                        return .unchanged
                    default:
                        continue
                    }
                }
                return nil
            }
            var outcome = ConfigWait.unchanged
            for await result in group {
                if let result {
                    outcome = result
                    break
                }
            }
            group.cancelAll()
            return outcome
        }
    }

    private func pollForChange(_ registry: SubnetRegistry, from config: NetworkConfig, upTo limit: Duration) async -> ConfigWait {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) } } catch { return .shutdown }
            if let new = try? await registry.networkConfig(), new != config, (try? validate(new)) != nil { return .changed(new) }
        }
        return .unchanged
    }

    /// Retries transient etcd failures with backoff (1 s doubling to 30 s); other errors throw.
    func retrying<T: Sendable>(_ what: String, _ body: () async throws(LeaseError) -> T) async throws -> T {
        var delay = Duration.seconds(1)
        while true {
            do {
                return try await body()
            } catch {
                // Only an unreachable or unavailable etcd is worth waiting for.
                guard case .etcd(let e) = error, e.isTransient else { throw error }
                logger.warning("cannot \(what) yet; retrying", metadata: ["error": "\(e)", "retry_in": "\(delay)"])
            }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(30))
        }
    }

    /// Tells systemd (once) that the node is ready.
    func notifyReadyOnce() {
        guard state.isReady, !readyNotified.exchange(true, ordering: .relaxed) else { return }
        onReady()
    }

    /// Brings pull-style figures up to date before a scrape: the backend's data path counters.
    public func refreshMetrics() {
        if let source = backendBox.withLock({ $0 }) as? any DatapathMetricsSource { source.publishMetrics() }
    }

    /// The node's view now, for `GET /status`.
    public func status(version: String) -> NodeStatus {
        refreshMetrics()
        let facts = statusFacts.withLock { $0 }
        let backend = backendBox.withLock { $0 }
        let traffic = backend?.traffic() ?? BackendTraffic()
        let lease = state.lease
        let (ready, readyReasons) = state.readiness
        let (healthy, healthReasons) = state.liveness
        let peers = state.peers.sorted {
            ($0.subnet.address, $0.subnet6?.address ?? .any) < ($1.subnet.address, $1.subnet6?.address ?? .any)
        }.map { p -> NodeStatus.PeerInfo in
            let t = traffic.traffic(of: p)
            // An IPv6-only peer has no IPv4 subnet or address to show ("-").
            let only6 = p.ipv4Subnet == nil
            return NodeStatus.PeerInfo(
                subnet: only6 ? "-" : "\(p.subnet)", publicIP: only6 ? "-" : "\(p.publicIP)",
                subnet6: p.subnet6.map { "\($0)" }, publicIPv6: p.publicIPv6.map { "\($0)" }, backend: p.backendType ?? "udp",
                state: "routed",
                txPackets: t?.txPackets, txBytes: t?.txBytes, rxPackets: t?.rxPackets, rxBytes: t?.rxBytes,
                drops: t?.drops, lastHandshake: t?.lastHandshake)
        }
        return NodeStatus(
            version: version, publicIP: facts.external.map { "\($0.publicIP)" }, interface: facts.external?.name,
            network: facts.config?.network.map { "\($0)" }, subnetLength: facts.config?.subnetLength,
            network6: facts.config.flatMap { $0.enableIPv6 ? $0.ipv6Network.map { "\($0)" } : nil },
            publicIPv6: facts.config?.enableIPv6 == true ? facts.external?.publicIPv6.map { "\($0)" } : nil,
            lease: lease.map { l in
                NodeStatus.LeaseInfo(
                    subnet: "\(l.subnet.ipv4)", subnet6: l.subnet.ipv6.map { "\($0)" }, key: layout.key(for: l.subnet),
                    etcdLease: String(UInt64(bitPattern: l.etcdLease), radix: 16),
                    reservation: l.isReservation,
                    expiresInSeconds: l.isReservation ? nil : state.leaseExpiresIn.map { $0.components.seconds })
            },
            backend: backend.map { NodeStatus.BackendInfo(type: $0.type, device: traffic.device, up: state.backendUp, mtu: facts.mtu) },
            ready: ready, readyReasons: readyReasons, healthy: healthy, healthReasons: healthReasons,
            etcdReachable: state.etcdReachable,
            etcd: etcdHealth.map {
                NodeStatus.EndpointInfo(endpoint: $0.endpoint, healthy: $0.healthy, inUse: $0.preferred, lastError: $0.lastError)
            },
            peers: peers, drops: traffic.drops,
            ignoredLeases: Dictionary(uniqueKeysWithValues: state.rejections.map { ($0.key.rawValue, $0.value) }),
            configProblem: state.configProblem)
    }

    static func peer(_ lease: Lease) -> PeerLease {
        PeerLease(
            subnet: lease.subnet.ipv4, publicIP: lease.attributes.publicIP, backendType: lease.attributes.backendType,
            backendData: lease.attributes.backendData,
            subnet6: lease.subnet.ipv6, publicIPv6: lease.attributes.publicIPv6, backendV6Data: lease.attributes.backendV6Data)
    }
}

/// A reason the agent cannot run, for the operator.
public struct AgentError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
