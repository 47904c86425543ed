import Logging
import Synchronization
import TwillAddress
import TwillDatapath
import TwillEtcd
import TwillLease
import TwillNetlink
import TwillSystem

/// Why a node session ended.
enum SessionEnding: Sendable, Equatable {
    /// The agent is stopping.
    case shutdown
    /// A valid new network config: the supervisor applies it and starts the next session.
    case configChanged(NetworkConfig)
}

/// One node session: the data path, iptables rules and subnet.env for one network config
/// and lease, and the loops that keep them true until the config changes or the agent stops.
///
/// - watch: one etcd watch over the prefix; every lease passes ``PeerSet`` validation before
///   the backend sees it; changes of the own key go to the ``LeaseKeeper``; a config change
///   ends the session (an invalid one is logged and refused).
/// - lease: renewals and the own key's defence; a move to another subnet reconfigures the node.
/// - kernel: netlink events and a timer reconcile the backend, which repairs what broke;
///   subnet.env is rewritten when it differs from the lease.
/// - iptables: the rules' resync loop (``IPTablesRules/run(resync:firstPassNow:onPass:)``).
///
/// Every loop reports progress to ``AgentState``.
final class NodeSession: Sendable {
    let agent: Agent
    let etcd: EtcdClient
    let registry: SubnetRegistry
    let keeper: LeaseKeeper
    let config: NetworkConfig
    let backend: any Backend
    let mtu: Int
    let external: ExternalInterface
    /// The firewall rules this node runs (iptables or nftables), shared across sessions.
    let rules: RulesSlot

    private enum Input: Sendable {
        case cluster(ClusterEvent)
        case moved(Lease)
    }
    private let inbox: AsyncStream<Input>
    private let inboxContinuation: AsyncStream<Input>.Continuation
    /// The backend's one door: starts, lease changes and reconciles, one at a time.
    let store: PeerStore
    /// What subnet.env must say.
    private let expectedEnv = Mutex<SubnetEnv?>(nil)
    /// The last subnet.env failure logged, so that a full disk is not logged every second.
    private let lastEnvError = Mutex<(message: String, at: ContinuousClock.Instant)?>(nil)
    /// The file as this agent last wrote it (device, inode, size, mtime): while stat shows the
    /// same, it is not read again.
    private let writtenEnv = Mutex<FileIdentity?>(nil)

    /// How long each loop may go without progress before /healthz says so.
    static let deadlines: [AgentState.Loop: Duration] = [.watch: .seconds(90), .lease: .seconds(120), .kernel: .seconds(60)]

    var state: AgentState { agent.state }
    var configuration: AgentConfiguration { agent.configuration }
    var logger: Logger { agent.logger }
    var overlay: IPv4Network { config.network ?? .all }
    /// The IPv6 overlay, when the network is dual stack.
    var overlay6: IPv6Network? { config.enableIPv6 ? config.ipv6Network : nil }

    /// The node's addressing for `lease`, per family the network runs: the one place the
    /// data path's and the rules' view of the overlay is made.
    func addressing(_ lease: Lease) -> NodeAddressing {
        Overlay(
            v4: config.enableIPv4 ? lease.subnet.ipv4Subnet.map { OverlayPart(network: overlay, subnet: $0) } : nil,
            v6: overlay6.flatMap { network6 in lease.subnet.ipv6.map { OverlayPart(network: network6, subnet: $0) } })
    }

    init(
        agent: Agent, etcd: EtcdClient, registry: SubnetRegistry, keeper: LeaseKeeper, config: NetworkConfig,
        backend: any Backend, mtu: Int, external: ExternalInterface, rules: RulesSlot
    ) {
        self.agent = agent
        self.etcd = etcd
        self.registry = registry
        self.keeper = keeper
        self.config = config
        self.backend = backend
        self.store = PeerStore(backend: backend, logger: agent.logger)
        self.mtu = mtu
        self.external = external
        self.rules = rules
        (inbox, inboxContinuation) = AsyncStream<Input>.makeStream()
    }

    // MARK: The node

    /// Starts the data path for `lease`, installs the iptables rules and writes subnet.env.
    func configureNode(_ lease: Lease) async throws {
        let local = addressing(lease)
        // The peers as etcd has them now, without waiting for the watch: a restarted udp or
        // wireguard engine forwards what queued while no agent ran (rather than answering
        // "net unreachable") from its first packet. The watch's first list follows and
        // reconciles again; a failure here is left to it.
        let known = await currentPeers(within: .seconds(2))
        try await store.start(local: local, peers: known)
        state.setBackend(type: backend.type, up: true)
        state.setDatapathFailure(nil)
        await keepBlackholeRoute(lease.subnet.ipv4)
        if configuration.ipMasq || configuration.iptablesForwardRules, backend.type != "alloc" {
            // FORWARD rules are on by default (as in flannel) so overlay traffic passes hosts whose
            // FORWARD policy is DROP (Docker sets it). A failure is retried by the resync loop.
            let rules: any TrafficRules
            let parts = local
            if config.enableNFTables {
                rules = NFTablesRules(
                    overlay: parts, forwardRules: configuration.iptablesForwardRules, masquerade: configuration.ipMasq,
                    fullyRandom: configuration.ipMasqFullyRandom, logger: logger)
            } else {
                rules = IPTablesRules(
                    overlay: parts, forwardRules: configuration.iptablesForwardRules, masquerade: configuration.ipMasq,
                    fullyRandom: configuration.ipMasqFullyRandom, logger: logger)
            }
            if let old = self.rules.get(), old.mode != rules.mode {
                // A live switch of EnableNFTables: the old mode's rules go first.
                await Blocking.run { old.teardown() }
            }
            if self.rules.claimCleanup() {
                // As flannel: at start the other mode's rules (flanneld's, or this node's
                // before a switch) are removed, so one set of rules is left.
                let (log, nft) = (logger, config.enableNFTables)
                await Blocking.run {
                    if nft { IPTablesRules.removeLeftovers(logger: log) } else { NFTablesRules.removeLeftovers(logger: log) }
                }
            }
            if !config.enableNFTables, overlay6 == nil || !config.enableIPv4 {
                // A family off (now): no rules of an earlier run for it stay.
                let (log, v4) = (logger, config.enableIPv4)
                await Blocking.run { v4 ? IPTablesRules.removeIPv6Leftovers(logger: log) : IPTablesRules.removeIPv4Leftovers(logger: log) }
            }
            do { try await rules.ensureOffPool() } catch {
                logger.error(
                    "cannot install the \(rules.mode) rules yet; retrying every \(configuration.iptablesResync)",
                    metadata: [
                        "masquerade": "\(configuration.ipMasq)", "forward_rules": "\(configuration.iptablesForwardRules)",
                        "error": "\(error)",
                    ])
            }
            self.rules.set(rules)
        }
        let env = SubnetEnv(
            network: config.network, subnet: lease.subnet.ipv4Subnet, ipv6Network: overlay6, ipv6Subnet: local.subnet6,
            mtu: mtu, ipMasq: configuration.ipMasq)
        expectedEnv.withLock { $0 = env }
        await writeSubnetEnv(env, reason: "wrote subnet file")
        agent.notifyReadyOnce()
    }

    /// The peers etcd has now, validated; none when etcd does not answer within `limit` (a
    /// hung member must not hold the data path back: the watch brings them later).
    private func currentPeers(within limit: Duration) async -> [PeerLease] {
        let (etcd, prefix) = (self.etcd, registry.layout.subnetsPrefix)
        let listed = await withTaskGroup(of: RangeResult?.self) { group -> RangeResult? in
            group.addTask { try? await etcd.list(prefix: prefix) }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let listed else { return [] }
        var peers = PeerSet(layout: registry.layout, context: context())
        _ = peers.reset(listed.kvs)
        return peers.peers.map(Agent.peer)
    }

    /// `--ip-blackhole-route`: puts the route for `subnet` in place (and takes away one left
    /// from an earlier subnet, or from a run with the flag on when it is off now).
    private func keepBlackholeRoute(_ subnet: IPv4Network) async {
        // An IPv6-only node has no IPv4 subnet to guard (and 0.0.0.0/0 must never be blackholed).
        let wanted = configuration.blackholeRoute && config.enableIPv4 && subnet.prefixLength > 0
        do {
            let changed = try await Blocking.run { () throws -> Bool in
                let netlink = try Netlink()
                if wanted { return try BlackholeRoute.ensure(subnet, netlink: netlink) }
                try BlackholeRoute.removeAll(netlink: netlink)
                return false
            }
            if changed { logger.info("blackhole route in place", metadata: ["subnet": "\(subnet)"]) }
        } catch {
            logger.error(
                "cannot set the blackhole route; retrying at the next resync", metadata: ["subnet": "\(subnet)", "error": "\(error)"])
        }
    }

    /// Writes subnet.env off the cooperative pool; a failure (a full disk) is logged, named
    /// and shown in readiness, and the old file stays as it was.
    private func writeSubnetEnv(_ env: SubnetEnv, reason: String) async {
        let path = configuration.subnetFile
        do {
            try await Blocking.run { () throws(LeaseError) in try env.write(path: path) }
            writtenEnv.withLock { $0 = FileIdentity(path: path) }
            state.setSubnetEnvProblem(nil)
            lastEnvError.withLock { $0 = nil }
            logger.info("\(reason)", metadata: ["path": "\(path)", "subnet": "\(env.subnet.map { "\($0)" } ?? "-")", "mtu": "\(env.mtu)"])
        } catch {
            let message = "\(error)"
            state.setSubnetEnvProblem("cannot write subnet.env: \(message)")
            let now = ContinuousClock.now
            let logIt = lastEnvError.withLock { last -> Bool in
                guard last == nil || last!.message != message || now - last!.at > .seconds(60) else { return false }
                last = (message, now)
                return true
            }
            if logIt {
                logger.error(
                    "cannot write subnet.env; the old file is left as it was", metadata: ["path": "\(path)", "error": "\(message)"])
            }
        }
    }

    /// Rewrites subnet.env when the file differs from what the lease says (deleted, edited, or
    /// an earlier write failed).
    private func checkSubnetEnv() async {
        guard let env = expectedEnv.withLock({ $0 }) else { return }
        let path = configuration.subnetFile
        // One stat a second; the file is read only when it changed since it was written.
        if let written = writtenEnv.withLock({ $0 }), FileIdentity(path: path) == written { return }
        let onDisk = try? await Blocking.run { () throws(LeaseError) in try SubnetEnv.readText(path: path) }
        if onDisk == env.text {
            writtenEnv.withLock { $0 = FileIdentity(path: path) }
            return state.setSubnetEnvProblem(nil)
        }
        await writeSubnetEnv(
            env, reason: onDisk == nil ? "subnet.env was missing; wrote it again" : "subnet.env did not match the lease; wrote it again")
    }

    // MARK: The loops

    func run() async -> SessionEnding {
        let ending = await withTaskGroup(of: SessionEnding?.self) { group -> SessionEnding in
            group.addTask {
                await self.forwardWatch()
                return nil
            }
            group.addTask { await self.peerLoop() }
            group.addTask {
                await self.leaseLoop()
                return nil
            }
            group.addTask {
                await self.kernelLoop()
                return nil
            }
            group.addTask {
                await self.iptablesLoop()
                return nil
            }
            var ending = SessionEnding.shutdown
            for await result in group {
                if let result {
                    ending = result
                    group.cancelAll()
                }
            }
            return ending
        }
        inboxContinuation.finish()
        for loop in AgentState.Loop.allCases { state.retire(loop) }
        return ending
    }

    private func forwardWatch() async {
        let watcher = ClusterWatcher(etcd: etcd, layout: registry.layout, logger: logger)
        for await event in watcher.events() { inboxContinuation.yield(.cluster(event)) }
    }

    /// A peer's subnets and addresses for the log (each family only where the lease has it).
    static func describe(_ lease: Lease) -> Logger.Metadata {
        var m: Logger.Metadata = [:]
        if let s = lease.subnet.ipv4Subnet {
            m["subnet"] = "\(s)"
            m["public_ip"] = "\(lease.attributes.publicIP)"
        }
        if let s = lease.subnet.ipv6 { m["subnet6"] = "\(s)" }
        if let a = lease.attributes.publicIPv6 { m["public_ipv6"] = "\(a)" }
        return m
    }

    private func context() -> PeerSet.Context {
        let lease = keeper.lease
        return PeerSet.Context(
            network: overlay, subnetLength: config.subnetLength, ownKey: keeper.ownKey,
            ownSubnet: lease?.subnet.ipv4, ownPublicIP: external.publicIP, ownAttributes: lease?.attributes,
            ipv6Network: overlay6, ipv6SubnetLength: config.ipv6SubnetLength, ownSubnet6: lease?.subnet.ipv6,
            ipv4: config.enableIPv4, ownPublicIPv6: external.publicIPv6)
    }

    /// Leases and config from the watch: validated, then to the backend or the keeper.
    private func peerLoop() async -> SessionEnding? {
        var peers = PeerSet(layout: registry.layout, context: context())
        let deadline = Self.deadlines[.watch]!
        state.beat(.watch, deadline: deadline)
        for await input in inbox {
            state.beat(.watch, deadline: deadline)
            switch input {
            case .cluster(.reset(let configKV, let leases, let revision, let reason)):
                if let next = judge(configKV) { return .configChanged(next) }
                if reason != .initial {
                    state.countResync(reason)
                    logger.notice(
                        "re-listed every lease",
                        metadata: ["reason": "\(reason.rawValue)", "revision": "\(revision)", "leases": "\(leases.count)"])
                }
                _ = peers.update(context: context())
                let change = peers.reset(leases)
                log(change, quietly: true)
                await reconcilePeers(peers)
                if let key = keeper.ownKey {
                    if let kv = leases.first(where: { $0.key == key }) {
                        if kv.value != keeper.lease?.attributes.json() { keeper.noteOwnKey(.changed(kv)) }
                    } else {
                        keeper.noteOwnKey(.deleted(key: key))
                    }
                }
            case .cluster(.config(let kv)):
                if let next = judge(kv) { return .configChanged(next) }
            case .cluster(.leasePut(let kv)):
                if kv.key == keeper.ownKey { keeper.noteOwnKey(.changed(kv)) }
                await apply(peers.put(kv))
            case .cluster(.leaseDeleted(let key)):
                if key == keeper.ownKey { keeper.noteOwnKey(.deleted(key: key)) }
                await apply(peers.delete(key: key))
            case .cluster(.connectivity(let reachable)):
                state.setEtcdReachable(reachable)
            case .moved:
                log(peers.update(context: context()), quietly: false)
                // The backend was restarted for the new subnet: give it every peer again.
                await reconcilePeers(peers)
            }
            // The keeper may have moved before its message arrived: keep the rules in step.
            if peers.context != context() { await apply(peers.update(context: context())) }
            state.setPeers(peers.peers.map(Agent.peer))
            state.setRejections(peers.rejectionCounts)
        }
        return nil
    }

    /// A new value of the config key: the next config when it is valid and different; nil
    /// (with the reason logged and exported) when it is invalid, deleted or the same.
    private func judge(_ kv: KeyValue?) -> NetworkConfig? {
        let key = registry.layout.configKey
        guard let kv else {
            let problem = "the network config at \(key) was deleted; the running one stays in force"
            if state.configProblem != problem { logger.error("\(problem)") }
            state.setConfigProblem(problem)
            return nil
        }
        do {
            let new: NetworkConfig
            do { new = try NetworkConfig(json: kv.value) } catch { throw AgentError(error.reason) }
            try agent.validate(new)
            state.setConfigProblem(nil)
            if new == config { return nil }
            logger.notice("the network config changed", metadata: ["key": "\(key)", "revision": "\(kv.modRevision)"])
            return new
        } catch {
            let problem = "the network config at \(key) is invalid and was not applied (the running one stays in force): \(error)"
            logger.error(
                "refusing an invalid network config; the running one stays in force",
                metadata: [
                    "key": "\(key)", "revision": "\(kv.modRevision)", "error": "\(error)",
                ])
            state.setConfigProblem(problem)
            return nil
        }
    }

    private func log(_ change: PeerSet.Change, quietly: Bool) {
        for r in change.rejected {
            logger.warning("ignoring a lease", metadata: ["key": "\(r.key)", "reason": "\(r.reason.rawValue)", "detail": "\(r.detail)"])
        }
        guard !quietly else { return }
        for l in change.removed { logger.info("peer removed", metadata: Self.describe(l)) }
        for l in change.added {
            logger.info("peer added", metadata: Self.describe(l).merging(["backend": "\(l.attributes.backendType ?? "udp")"]) { a, _ in a })
        }
        for l in change.changed {
            logger.info(
                "peer changed", metadata: Self.describe(l).merging(["backend": "\(l.attributes.backendType ?? "udp")"]) { a, _ in a })
        }
    }

    private func apply(_ change: PeerSet.Change) async {
        guard !change.isEmpty else { return }
        log(change, quietly: false)
        await store.apply(change)
    }

    private func reconcilePeers(_ peers: PeerSet) async {
        let list = peers.peers.map(Agent.peer)
        state.setPeers(list)
        do {
            try await store.reset(list)
            logger.info("peers", metadata: ["count": "\(list.count)", "ignored": "\(peers.rejections.count)"])
        } catch {
            logger.error("reconcile failed; retrying", metadata: ["error": "\(error)"])
            store.markDirty()
        }
    }

    /// Renewals and the own key's defence; follows a move to another subnet.
    private func leaseLoop() async {
        let deadline = Self.deadlines[.lease]!
        var pending: Lease?
        while !Task.isCancelled {
            state.beat(.lease, deadline: deadline)
            if let move = await keeper.step() { pending = move.to }
            if let lease = pending {
                do {
                    try await configureNode(lease)
                    pending = nil
                    inboxContinuation.yield(.moved(lease))
                } catch {
                    state.setBackend(type: backend.type, up: false)
                    logger.error(
                        "cannot reconfigure the node for its new subnet; retrying",
                        metadata: ["subnet": "\(lease.subnet.ipv4)", "error": "\(error)"])
                }
            }
            do { try await Task.sleep(for: .milliseconds(250)) } catch { return }
        }
    }

    /// Makes the kernel match the leases again whenever something else changes it (a route
    /// deleted by hand, the device removed or set down, a packet thread that ended), and
    /// every `resyncInterval` regardless; keeps subnet.env true.
    private func kernelLoop() async {
        guard backend.type != "alloc" else { return await filesLoop() }
        let monitor: NetlinkMonitor?
        do {
            monitor = try Netlink().monitor()
        } catch {
            logger.error("cannot watch the kernel for changes; reconciling on a timer only", metadata: ["error": "\(error)"])
            monitor = nil
        }
        defer { monitor?.stop() }
        await withTaskGroup(of: Void.self) { group in
            if let monitor {
                group.addTask {
                    for await change in monitor.changes where self.backend.needsReconcile(after: change) {
                        self.store.markDirty()
                    }
                }
            }
            group.addTask { await self.reconcileLoop() }
            await group.next()
            group.cancelAll()
        }
    }

    /// Reconciles shortly after a change (changes come in bursts), when the backend reports
    /// damage, and once per `resyncInterval`; repairs that keep failing for 30 s mark the data
    /// path broken beyond self-repair (/healthz).
    private func reconcileLoop() async {
        let deadline = Self.deadlines[.kernel]!
        let tick = Duration.milliseconds(250)
        var sinceLast = Duration.zero
        var sinceFiles = Duration.zero
        var failingSince: ContinuousClock.Instant?
        while !Task.isCancelled {
            state.beat(.kernel, deadline: deadline)
            do { try await Task.sleep(for: tick) } catch { return }
            sinceLast += tick
            sinceFiles += tick
            if sinceFiles >= .seconds(1) {
                sinceFiles = .zero
                await checkSubnetEnv()
                agent.notifyReadyOnce()
            }
            let damage = backend.damage()
            let changed = store.takeDirty()
            guard changed || damage != nil || sinceLast >= configuration.resyncInterval else { continue }
            if sinceLast >= configuration.resyncInterval, configuration.blackholeRoute, let lease = keeper.lease {
                await keepBlackholeRoute(lease.subnet.ipv4)
            }
            sinceLast = .zero
            do {
                try await store.reconcile()
                if failingSince != nil {
                    logger.notice("the data path is repaired")
                    state.setDatapathFailure(nil)
                }
                failingSince = nil
                state.setBackend(type: backend.type, up: true)
                if changed || damage != nil {
                    state.countKernelReconcile()
                    if let damage { state.countRepair(damage) }
                    logger.info("kernel state changed under the backend; reconciled", metadata: damage.map { ["repaired": "\($0)"] } ?? [:])
                }
            } catch {
                let now = ContinuousClock.now
                if failingSince == nil { failingSince = now }
                state.setBackend(type: backend.type, up: false)
                logger.error("reconcile failed; retrying", metadata: ["error": "\(error)"])
                if let since = failingSince, now - since >= .seconds(30) { state.setDatapathFailure("\(error)") }
                store.markDirty()
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// For backends without kernel state: only subnet.env.
    private func filesLoop() async {
        while !Task.isCancelled {
            state.beat(.kernel, deadline: Self.deadlines[.kernel]!)
            await checkSubnetEnv()
            agent.notifyReadyOnce()
            do { try await Task.sleep(for: .seconds(1)) } catch { return }
        }
    }

    /// Keeps the iptables rules in place with their resync loop, restarted for new rules
    /// (a new subnet), started even when the first installation failed.
    private func iptablesLoop() async {
        var running: (rules: any TrafficRules, task: Task<Void, Never>)?
        let period = configuration.iptablesResync
        let deadline = period + .seconds(60)
        while !Task.isCancelled {
            if let rules = self.rules.get(), running.map({ !$0.rules.sameRules(as: rules) }) ?? true {
                if let old = running {
                    old.task.cancel()
                    await old.task.value
                }
                let state = self.state
                state.beat(.iptables, deadline: deadline)
                running = (
                    rules,
                    Task {
                        await rules.run(resync: period, firstPassNow: true) { _ in state.beat(.iptables, deadline: deadline) }
                    }
                )
            }
            do { try await Task.sleep(for: .seconds(1)) } catch { break }
        }
        running?.task.cancel()
        await running?.task.value
    }
}

/// The forward and masquerade rules the node runs now, shared by its sessions and the
/// final teardown.
final class RulesSlot: Sendable {
    private let rules = Mutex<(any TrafficRules)?>(nil)
    private let cleaned = Atomic<Bool>(false)
    func get() -> (any TrafficRules)? { rules.withLock { $0 } }
    func set(_ value: (any TrafficRules)?) { rules.withLock { $0 = value } }
    /// True the first time only: the other mode's leftovers are removed once per agent run.
    func claimCleanup() -> Bool { !cleaned.exchange(true, ordering: .relaxed) }
}
