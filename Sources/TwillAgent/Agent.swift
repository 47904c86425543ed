import Logging
import ServiceLifecycle
import Synchronization
import TwillAddress
import TwillDatapath
import TwillEtcd
import TwillLease
import TwillNetlink

/// One node's agent: lease -> subnet.env -> backend, then renew and watch until shutdown.
public final class Agent: Service, Sendable {
    /// Builds the backend named by the network config, for the chosen interface.
    public typealias BackendFactory = @Sendable (NetworkConfig, ExternalInterface) throws -> any Backend

    public let configuration: AgentConfiguration
    public let state = AgentState()
    let makeBackend: BackendFactory
    let logger: Logger
    /// Called once subnet.env is written and the backend is up (sd_notify READY=1 hooks here).
    let onReady: @Sendable () -> Void
    /// Set when the watch sees this node's own key change: renew now rather than later.
    private let checkLeaseNow = Atomic<Bool>(false)
    /// Set when the kernel changed in a way that may have disturbed the backend.
    private let kernelDirty = Atomic<Bool>(false)
    /// The masquerade rules for the current subnet, when --ip-masq is on.
    private let masquerade = Mutex<IPMasquerade?>(nil)
    /// The running backend, for metrics scrapes.
    private let backendBox = Mutex<(any Backend)?>(nil)

    public init(
        configuration: AgentConfiguration, logger: Logger = Logger(label: "twill.agent"),
        onReady: @escaping @Sendable () -> Void = {}, makeBackend: @escaping BackendFactory
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onReady = onReady
        self.makeBackend = makeBackend
    }

    public func run() async throws {
        let etcd = try EtcdClient(configuration.etcd)
        let registry = SubnetRegistry(etcd: etcd, layout: configuration.layout, logger: logger)
        let external: ExternalInterface
        do {
            external = try ExternalInterfaceResolver.resolve(ifaces: configuration.ifaces, ifaceRegex: configuration.ifaceRegex, publicIP: configuration.publicIP)
        } catch {
            throw AgentError(error.description)
        }
        logger.info("using interface", metadata: ["iface": "\(external.name)", "local_ip": "\(external.localIP)", "public_ip": "\(external.publicIP)", "mtu": "\(external.mtu)"])

        let network: NetworkConfig
        do {
            network = try await cancelWhenGracefulShutdown { try await self.waitForConfig(registry) }
        } catch is CancellationError {
            return
        }
        let backend = try makeBackend(network, external)
        backendBox.withLock { $0 = backend }
        let advert = try await backend.prepare()
        // The last subnet.env names the subnet to ask for again; an unreadable one is not fatal
        // (a fresh subnet is chosen) but is said, since it means losing the node's old subnet.
        let previous: IPv4Network?
        do {
            previous = try SubnetEnv.read(path: configuration.subnetFile)?.subnet
        } catch {
            logger.warning("cannot reuse the previous subnet", metadata: ["error": "\(error)"])
            previous = nil
        }
        let attributes = LeaseAttributes(publicIP: external.publicIP, publicIPv6: configuration.publicIPv6, backendType: advert.backendType, backendData: advert.backendData)

        let acquired: Lease
        do {
            acquired = try await cancelWhenGracefulShutdown {
                try await self.retrying("acquire a subnet lease") { () async throws(LeaseError) -> Lease in
                    try await registry.acquire(config: network, attributes: attributes, previous: previous, ttl: self.configuration.ttlSeconds)
                }
            }
        } catch {
            await backend.stop()
            if error is CancellationError { return }
            throw error
        }
        logger.info("acquired subnet lease", metadata: ["subnet": "\(acquired.subnet.ipv4)", "reservation": "\(acquired.isReservation)", "etcd_lease": "\(acquired.etcdLease)"])

        do {
            try await configureNode(acquired, network: network, backend: backend, mtu: advert.mtu)
        } catch {
            await backend.stop()
            throw error
        }
        state.setReady(acquired, ttl: configuration.ttlSeconds)
        onReady()

        // Renew and watch until shutdown is asked for.
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.renewLoop(acquired, registry: registry, network: network, backend: backend, mtu: advert.mtu) }
                group.addTask { await self.watchLoop(registry, backend: backend, own: external.publicIP) }
                if backend.type != "alloc" {
                    group.addTask { await self.kernelLoop(backend: backend) }
                }
                if self.masquerade.withLock({ $0 }) != nil {
                    group.addTask { await self.masqueradeLoop() }
                }
                await group.waitForAll()
            }
        }

        // Clean-up runs in a task of its own: the current one is cancelled, and etcd calls
        // made from a cancelled task would be cut short.
        let final = state.lease ?? acquired
        let release = configuration.releaseOnExit
        let log = logger
        let masq = masquerade.withLock { $0 }
        await Task {
            masq?.teardown()
            await backend.stop()
            if release {
                do {
                    try await registry.release(final)
                    log.info("released subnet lease", metadata: ["subnet": "\(final.subnet.ipv4)"])
                } catch {
                    log.error("could not release subnet lease", metadata: ["subnet": "\(final.subnet.ipv4)", "error": "\(error)"])
                }
            }
        }.value
        logger.info("agent stopped")
    }

    /// Waits for a valid network config, saying once a second why it cannot go on.
    func waitForConfig(_ registry: SubnetRegistry) async throws -> NetworkConfig {
        var lastMessage = ""
        while true {
            do {
                let config = try await registry.networkConfig()
                logger.info("network config", metadata: ["network": "\(config.network.map { "\($0)" } ?? "-")", "subnet_len": "\(config.subnetLength)", "backend": "\(config.backendType)"])
                return config
            } catch {
                let message = error.description
                if message != lastMessage {
                    logger.error("waiting for a usable network config", metadata: ["error": "\(message)"])
                    lastMessage = message
                }
            }
            try await Task.sleep(for: configuration.configRetryInterval)
        }
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

    /// Starts the data path for `lease` and writes subnet.env (atomically).
    func configureNode(_ lease: Lease, network: NetworkConfig, backend: any Backend, mtu: Int) async throws {
        guard let overlay = network.network else { throw AgentError("the network config has no IPv4 Network") }
        try await backend.start(local: LocalLease(network: overlay, subnet: lease.subnet.ipv4))
        let env = SubnetEnv(network: overlay, subnet: lease.subnet.ipv4, mtu: mtu, ipMasq: configuration.ipMasq)
        if configuration.ipMasq || configuration.iptablesForwardRules, backend.type != "alloc" {
            // Rebuilding for a new subnet replaces the old subnet's rules. FORWARD rules are on
            // by default (as in flannel) so overlay traffic passes hosts whose FORWARD policy is
            // DROP (Docker sets it); only --ip-masq makes failing to install them fatal.
            let rules = IPMasquerade(network: overlay, subnet: lease.subnet.ipv4, forwardRules: configuration.iptablesForwardRules,
                                     masquerade: configuration.ipMasq, logger: logger)
            do {
                try rules.ensure()
                masquerade.withLock { $0 = rules }
            } catch where !configuration.ipMasq {
                logger.error("cannot install the FORWARD rules (--iptables-forward-rules); overlay traffic may be dropped on hosts whose FORWARD policy is DROP", metadata: ["error": "\(error)"])
            }
        }
        try env.write(path: configuration.subnetFile)
        logger.info("wrote subnet file", metadata: ["path": "\(configuration.subnetFile)", "subnet": "\(lease.subnet.ipv4)", "mtu": "\(mtu)"])
    }

    /// Keeps the lease alive; re-acquires it when it was lost, reconfiguring if the subnet changed.
    func renewLoop(_ initial: Lease, registry: SubnetRegistry, network: NetworkConfig, backend: any Backend, mtu: Int) async {
        var lease = initial
        var failureDelay = Duration.seconds(1)
        let interval = configuration.renewInterval
        let tick = min(interval, .seconds(1))
        while !Task.isCancelled {
            // Sleep until the next renewal, waking early when the watch saw our key change.
            var waited = Duration.zero
            while waited < interval, !checkLeaseNow.exchange(false, ordering: .relaxed) {
                do { try await Task.sleep(for: tick) } catch { return }
                waited += tick
            }
            do {
                switch try await registry.renew(lease, config: network, ttl: configuration.ttlSeconds) {
                case .renewed(let l):
                    lease = l
                    logger.debug("renewed subnet lease", metadata: ["subnet": "\(l.subnet.ipv4)"])
                case .reacquired(let l):
                    if l.subnet != lease.subnet {
                        logger.error("lost this node's subnet to another node; moved to a new one (restart workloads on this node)", metadata: ["old": "\(lease.subnet.ipv4)", "new": "\(l.subnet.ipv4)"])
                        do { try await configureNode(l, network: network, backend: backend, mtu: mtu) } catch {
                            logger.error("could not reconfigure for the new subnet", metadata: ["error": "\(error)"])
                        }
                    } else {
                        logger.notice("re-acquired this node's subnet lease", metadata: ["subnet": "\(l.subnet.ipv4)"])
                    }
                    lease = l
                }
                state.setLease(lease, ttl: configuration.ttlSeconds)
                failureDelay = .seconds(1)
            } catch {
                if Task.isCancelled { return }
                logger.warning("could not renew subnet lease; retrying", metadata: ["error": "\(error)", "retry_in": "\(failureDelay)"])
                do { try await Task.sleep(for: failureDelay) } catch { return }
                failureDelay = min(failureDelay * 2, .seconds(60))
                checkLeaseNow.store(true, ordering: .relaxed)
            }
        }
    }

    /// Feeds other nodes' leases to the backend.
    func watchLoop(_ registry: SubnetRegistry, backend: any Backend, own: IPv4Address) async {
        var watcher = LeaseWatcher(registry: registry, ownPublicIP: own)
        let state = self.state
        watcher.onResync = { state.countResync() }
        var peers: [SubnetKey: PeerLease] = [:]
        for await event in watcher.events() {
            do {
                switch event {
                case .snapshot(let leases):
                    peers = Dictionary(leases.map { ($0.subnet, Self.peer($0)) }, uniquingKeysWith: { a, _ in a })
                    try await backend.reconcile(peers: Array(peers.values))
                    logger.info("peers", metadata: ["count": "\(peers.count)"])
                case .added(let lease):
                    let p = Self.peer(lease)
                    peers[lease.subnet] = p
                    try await backend.peerAdded(p)
                    logger.info("peer added", metadata: ["subnet": "\(lease.subnet.ipv4)", "public_ip": "\(lease.attributes.publicIP)", "backend": "\(lease.attributes.backendType ?? "udp")"])
                case .removed(let lease):
                    peers[lease.subnet] = nil
                    try await backend.peerRemoved(Self.peer(lease))
                    logger.info("peer removed", metadata: ["subnet": "\(lease.subnet.ipv4)", "public_ip": "\(lease.attributes.publicIP)"])
                case .ownChanged(let subnet, let lease):
                    if lease == nil || lease?.attributes.publicIP == own {
                        logger.debug("own lease key changed; checking it", metadata: ["subnet": "\(subnet)"])
                        checkLeaseNow.store(true, ordering: .relaxed)
                    }
                }
            } catch {
                logger.error("backend could not apply a lease change", metadata: ["event": "\(event)", "error": "\(error)"])
            }
            state.setPeers(Array(peers.values))
        }
    }

    /// Makes the kernel match the leases again whenever something else changes it (a route
    /// deleted by hand, the device removed), and every `resyncInterval` regardless.
    func kernelLoop(backend: any Backend) async {
        let monitor: NetlinkMonitor
        do {
            monitor = try Netlink().monitor()
        } catch {
            logger.error("cannot watch the kernel for changes; reconciling on a timer only", metadata: ["error": "\(error)"])
            await periodicReconcile(backend: backend)
            return
        }
        defer { monitor.stop() }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await change in monitor.changes where backend.needsReconcile(after: change) {
                    self.kernelDirty.store(true, ordering: .relaxed)
                }
            }
            group.addTask { await self.periodicReconcile(backend: backend) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Reconciles shortly after `dirty` is set (changes come in bursts), and once a minute.
    private func periodicReconcile(backend: any Backend) async {
        var sinceLast = Duration.zero
        let tick = Duration.milliseconds(250)
        while !Task.isCancelled {
            do { try await Task.sleep(for: tick) } catch { return }
            sinceLast += tick
            let changed = kernelDirty.exchange(false, ordering: .relaxed)
            guard changed || sinceLast >= configuration.resyncInterval else { continue }
            sinceLast = .zero
            do {
                try await backend.reconcile(peers: state.peers)
                if changed {
                    state.countKernelReconcile()
                    logger.info("kernel state changed under the backend; reconciled")
                }
            } catch {
                logger.error("reconcile failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Puts the masquerade rules back whenever something removed them.
    func masqueradeLoop() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: configuration.iptablesResync) } catch { return }
            guard let masq = masquerade.withLock({ $0 }) else { return }
            do { try masq.ensure() } catch {
                logger.error("cannot restore the masquerade rules", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Brings pull-style figures up to date before a scrape: the backend's data path counters.
    public func refreshMetrics() {
        if let source = backendBox.withLock({ $0 }) as? any DatapathMetricsSource { source.publishMetrics() }
    }

    static func peer(_ lease: Lease) -> PeerLease {
        PeerLease(subnet: lease.subnet.ipv4, publicIP: lease.attributes.publicIP, backendType: lease.attributes.backendType, backendData: lease.attributes.backendData)
    }
}

/// A reason the agent cannot run, for the operator.
public struct AgentError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
