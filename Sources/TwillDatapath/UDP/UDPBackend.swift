import Logging
import Metrics
import Synchronization
import TwillAddress
import TwillNetlink
import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// flannel's udp backend: a TUN device and userspace encapsulation, each inner IPv4 packet
/// one UDP datagram to the peer's PublicIP (wire-compatible with flannel udp nodes).
///
/// The device (`--tun-name`, default `twill0`) gets the subnet's network address as /32, the
/// MTU of the external interface less 28 (IPv4 + UDP headers), and one Twill-owned route: the
/// whole overlay network through it. On a dual-stack network it also gets the IPv6 subnet's
/// network address /128 and the IPv6 overlay's route, and IPv6 packets travel in the same
/// IPv4 datagrams (flannel's udp backend has no IPv6: this is Twill's own). The ``PacketEngine`` moves the packets; this type wires it
/// to the kernel and to the leases.
///
/// With several queues (`--udp-queues`, default one per two CPUs) datagrams leave from ephemeral
/// source ports chosen per inner flow, not from `Backend.Port` (see ``FlowHash``): they
/// still go to the peer's `Backend.Port`, which is all flannel peers look at, but a firewall
/// between nodes must admit UDP to that port from any source port. One queue sends from
/// `Backend.Port` itself, as flannel does.
public final class UDPBackend: Backend, DatapathMetricsSource {
    /// flannel's udp backend writes no BackendType.
    public let type = "udp"
    public let tunName: String
    public let port: UInt16
    /// Off only for unusual routing (NAT between nodes): then any sender is accepted.
    public let checkSources: Bool
    /// Try TUN and UDP offloads (falls back by itself when the kernel refuses).
    public let offloads: Bool
    /// Packet queues to ask for (nil: one per online CPU); see ``EngineConfiguration/queues``.
    public let queues: Int?
    let netlink: any KernelRouting
    let external: ExternalInterface
    let logger: Logger
    /// The engine's TUN queues and sockets across rebuilds and restarts.
    let descriptors: EngineDescriptors

    /// What the backend is asked to run (`local`, the peers) and what runs now. `engine` is
    /// nil after a rebuild failed: the next reconcile tries again.
    struct State {
        var local: NodeAddressing?
        var peers: [PeerLease.Key: PeerLease] = [:]
        var engine: PacketEngine?
        var tunIndex: Int32 = 0
    }
    private let state = Mutex(State())
    /// Totals already passed to the metrics system, to turn absolute counters into increments.
    private let published = CounterPublisher()
    /// Failed packet threads already logged (each is logged once).
    private let loggedFailedThreads = Mutex<UInt64>(0)

    /// - Parameter mtu: `Backend.MTU`, the underlay MTU (the TUN gets 28 less); nil: the
    ///   external interface's. (flannel's udp backend has no such key: Twill's own.)
    /// - Parameter families: the families the network runs; without `.ipv4` (an IPv6-only
    ///   network) datagrams go over IPv6 (from the interface's IPv6 address to the peers'
    ///   PublicIPv6) and the TUN gets no IPv4 address or route.
    public init(
        netlink: any KernelRouting, external: ExternalInterface, tunName: String = "twill0", port: UInt16 = 8285,
        checkSources: Bool = true, offloads: Bool = true, queues: Int? = nil, mtu: Int? = nil, families: IPFamilies = .ipv4,
        keeper: any DescriptorKeeper = NoDescriptorKeeper(), logger: Logger = Logger(label: "twill.backend.udp")
    ) {
        self.descriptors = EngineDescriptors(device: tunName, keeper: keeper, netlink: netlink)
        self.outerMTU = mtu
        self.ipv4 = families.contains(.ipv4)
        self.queues = queues
        self.netlink = netlink
        self.external = external
        self.tunName = tunName
        self.port = port
        self.checkSources = checkSources
        self.offloads = offloads
        self.logger = logger
    }

    /// MTU = interface MTU (or `Backend.MTU`) - 28 (IPv4 and UDP headers; 48 over an IPv6
    /// underlay); the lease gets no BackendType (as flannel's udp backend).
    public var mtu: Int { (outerMTU ?? external.mtu) - (ipv4 ? 28 : 48) }
    let outerMTU: Int?
    /// False: an IPv6-only network, datagrams over IPv6.
    let ipv4: Bool

    public func prepare() async throws -> BackendAdvert {
        if !ipv4, external.localIPv6 == nil {
            throw BackendError(backend: type, "an IPv6-only network needs an IPv6 address on \(external.name) to send from")
        }
        if !checkSources {
            logger.warning("udp backend: sender checks are OFF; datagrams from any address are forwarded into the overlay")
        }
        return BackendAdvert(mtu: mtu, backendType: nil)
    }

    public func start(local: NodeAddressing, peers: [PeerLease]) async throws {
        apply { current in current = Dictionary(peers.filter(Self.isUDPPeer).map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a }) }
        try await start(local: local)
    }

    /// Opens the TUN and the sockets, configures the device and starts the packet threads.
    /// Called again on a running backend (a new subnet, a repair), it replaces the engine and
    /// keeps the peers.
    public func start(local: NodeAddressing) async throws {
        let old = state.withLock { s -> PacketEngine? in
            defer {
                s.engine = nil
                s.local = local
            }
            return s.engine
        }
        if let old { descriptors.handBack(old) }
        let (engine, index) = try await Blocking.run { [self] in try openEngine(local) }
        let superseded = state.withLock { s -> Bool in
            // stop() or another start() came in meanwhile: this engine is not wanted.
            guard s.local == local, s.engine == nil else { return true }
            engine.update(peers: Array(s.peers.values))
            s.engine = engine
            s.tunIndex = index
            return false
        }
        if superseded {
            engine.stop()
            return
        }
        logger.info(
            "udp backend up",
            metadata: [
                "tun": "\(tunName)", "mtu": "\(mtu)", "ipv6": "\(local.subnet6.map(\.description) ?? "-")",
                "listen": "\(listenAddress):\(port)", "tun_offloads": "\(engine.hasTUNOffloads)", "queues": "\(engine.queueCount)",
                "udp_offloads": "\(offloads)",
            ])
    }

    /// Where the engine's sockets are bound, for messages.
    var listenAddress: String { ipv4 ? "\(external.localIP)" : "[\(external.localIPv6.map(\.description) ?? "::")]" }

    /// A started engine on a configured TUN for `local`.
    private func openEngine(_ local: NodeAddressing) throws -> (PacketEngine, Int32) {
        var configuration = EngineConfiguration(
            localSubnet: local.ipv4Subnet, peerPort: port, checkSources: checkSources, udpOffloads: offloads, queues: queues,
            localSubnet6: local.network6 == nil ? nil : local.subnet6)
        configuration.ipv6Underlay = !ipv4
        return try Self.startEngine(
            descriptors, configuration: configuration, offloads: offloads, external: external, netlink: netlink,
            mtu: mtu, local: local, askedQueues: queues, backend: type, logger: logger
        ) { engine, _ in
            // Routes before the first packet: what queued in a kept TUN is forwarded, not refused.
            engine.update(peers: self.state.withLock { Array($0.peers.values) })
        }
    }

    /// Opens an engine on `descriptors` (taking over what the previous engine or run left),
    /// configures its TUN for `local`, calls `configure` (peers and keys go in there: the
    /// engine reads packets as soon as it starts), starts it and keeps its descriptors for the
    /// next run.
    /// Returns the engine and the TUN's index. Shared by the backends on the packet engine.
    static func startEngine(
        _ descriptors: EngineDescriptors, configuration: EngineConfiguration, offloads: Bool, external: ExternalInterface,
        netlink: any KernelRouting, mtu: Int, local: NodeAddressing, askedQueues: Int?, backend: String, logger: Logger,
        configure: (PacketEngine, Int32) throws -> Void = { _, _ in }
    ) throws -> (PacketEngine, Int32) {
        let name = descriptors.device
        let listen = configuration.ipv6Underlay ? "[\(external.localIPv6.map(\.description) ?? "::")]" : "\(external.localIP)"
        let engine: PacketEngine
        do {
            let opened = try descriptors.open(
                tunOffloads: offloads, address: external.localIP, address6: external.localIPv6,
                configuration: configuration)
            engine = opened.engine
            for note in opened.notes { logger.notice("\(note)", metadata: ["tun": "\(name)"]) }
        } catch {
            throw BackendError(backend: backend, "cannot open TUN device \(name) or bind UDP \(listen):\(configuration.peerPort): \(error)")
        }
        let index: Int32
        do {
            index = try configureTUN(engine, netlink: netlink, name: name, mtu: mtu, local: local)
            try configure(engine, index)
        } catch {
            descriptors.handBack(engine)
            throw BackendError(backend: backend, "cannot configure \(name): \(error)")
        }
        if let asked = askedQueues, engine.queueCount < asked {
            logger.warning(
                "fewer packet queues than asked (the kernel refused a multi-queue TUN or more queues)",
                metadata: ["tun": "\(name)", "asked": "\(asked)", "got": "\(engine.queueCount)"])
        }
        do { try engine.start() } catch {
            descriptors.handBack(engine)
            throw BackendError(backend: backend, "cannot start the packet engine: \(error)")
        }
        descriptors.keep(engine)
        return (engine, index)
    }

    /// Configures an engine's TUN `name` for `local`: MTU, the subnet's address /32, up, and
    /// the whole network routed through it. Returns its interface index.
    static func configureTUN(_ engine: PacketEngine, netlink: any KernelRouting, name: String, mtu: Int, local: NodeAddressing) throws
        -> Int32
    {
        // Queue room for bursts of TSO-split segments; the default 500 overflows.
        try? engine.setTransmitQueueLength(5000)
        let link = try netlink.link(named: name)
        let index = link.index
        if link.mtu != mtu { try netlink.setMTU(mtu, index: index) }
        // A device kept from an earlier run holds its addresses already (perhaps an older
        // subnet's). An IPv6-only node: no IPv4 address, and no IPv4 route.
        try KernelAddresses.ensureExactly(
            netlink, index: index, family: AF_INET,
            local.v4.map { [InterfaceAddress(interfaceIndex: index, address: $0.subnet.address, prefixLength: 32)] } ?? [])
        // ICMP net unreachable comes from the TUN's own address; without accept_local the
        // kernel would drop it as a martian.
        try? Syscall.setSysctl("net/ipv4/conf/\(name)/accept_local", "1")
        if let subnet6 = local.subnet6, let network6 = local.network6 {
            // No link-local address and no router solicitations: the kernel's own chatter on
            // the TUN would only be dropped by the engine.
            try? Syscall.setSysctl("net/ipv6/conf/\(name)/addr_gen_mode", "1")
            try? Syscall.setSysctl("net/ipv6/conf/\(name)/accept_ra", "0")
            try? Syscall.setSysctl("net/ipv6/conf/\(name)/router_solicitations", "0")
            try? Syscall.setSysctl("net/ipv6/conf/\(name)/disable_ipv6", "0")
            if !link.isUp { try netlink.setLinkUp(index: index) }
            try KernelAddresses.ensureExactly(
                netlink, index: index, family: AF_INET6,
                [
                    InterfaceAddress(interfaceIndex: index, address: .v6(subnet6.address), prefixLength: 128, flags: InterfaceAddress.noDAD)
                ])
            try netlink.replaceRoute6(networkRoute6(network6, index: index))
        }
        if !link.isUp { try netlink.setLinkUp(index: index) }
        if let v4 = local.v4 { try netlink.replaceRoute(networkRoute(v4.network, index: index)) }
        return index
    }

    static func networkRoute6(_ network: IPv6Network, index: Int32) -> Route6 {
        Route6(destination: network, outputInterface: index)
    }

    /// The device side of a reconcile, for a backend on a device of its own (udp's TUN,
    /// wireguard's): the reason it must be rebuilt (gone, or `damage`), or nil once it is up
    /// again and the network's route is back.
    static func repairDevice(
        _ netlink: any KernelRouting, name: String, index: Int32, network: IPv4Network?, network6: IPv6Network? = nil,
        damage: String?, backend: String, logger: Logger
    ) throws -> String? {
        let link = try? netlink.link(index: index)
        if let reason = damage ?? (link?.name == name ? nil : "device \(name) is gone") { return reason }
        if let link, !link.isUp {
            logger.warning("device was set down; setting it up again", metadata: ["device": "\(name)"])
            try netlink.setLinkUp(index: index)
            Counter(label: "twill_datapath_repairs_total", dimensions: [("what", "link_up")]).increment()
        }
        // The only other kernel state: the network routes through the device, per family.
        var failures =
            network.map { KernelRoutes.reconcile(netlink, network: $0, desired: [networkRoute($0, index: index)], logger: logger) } ?? []
        if let network6 {
            failures += KernelRoutes.reconcile6(
                netlink, network: network6, desired: [networkRoute6(network6, index: index)], logger: logger)
        }
        if !failures.isEmpty { throw BackendError(backend: backend, "reconcile: \(failures.joined(separator: "; "))") }
        return nil
    }

    /// Whether a kernel change touches a backend's own device `name` (index `index`) or the
    /// network's route.
    static func deviceNeedsReconcile(
        _ change: NetlinkChange, name: String, index: Int32, network: IPv4Network?,
        network6: IPv6Network? = nil
    ) -> Bool {
        switch change {
        case .routeRemoved(let r), .routeAdded(let r):
            return network != nil && (r.destination == network || r.outputInterface == index)
        case .route6Removed(let r), .route6Added(let r):
            return network6 != nil && (r.destination == network6 || r.outputInterface == index)
        case .linkRemoved(let l), .linkChanged(let l):
            return l.index == index || l.name == name
        case .overrun:
            return true
        default:
            return false
        }
    }

    /// Why the data path is broken now: a packet thread ended (the TUN deleted under it, say).
    public func damage() -> String? {
        let (wanted, engine) = state.withLock { ($0.local != nil, $0.engine) }
        guard wanted else { return nil }
        guard let engine else { return "the udp packet engine is not running (an earlier rebuild failed)" }
        let failed = engine.failedThreadCount
        return failed > 0 ? "\(failed) udp packet thread(s) ended" : nil
    }

    /// Peers of type udp (or of no type: flannel's udp leases carry none).
    static func isUDPPeer(_ p: PeerLease) -> Bool { p.backendType == nil || p.backendType == "udp" || p.backendType == "" }

    static func networkRoute(_ network: IPv4Network, index: Int32) -> Route {
        Route(destination: network, outputInterface: index, scope: 253 /* RT_SCOPE_LINK */)
    }

    public func peerAdded(_ peer: PeerLease) async throws {
        guard Self.isUDPPeer(peer) else {
            logger.debug(
                "ignoring a peer of another backend", metadata: ["subnet": "\(peer.subnet)", "backend": "\(peer.backendType ?? "")"])
            return
        }
        apply { $0[peer.key] = peer }
    }

    public func peerRemoved(_ peer: PeerLease) async throws {
        apply { $0[peer.key] = nil }
    }

    /// Makes the kernel match again, repairing what was broken: a TUN deleted or a packet
    /// thread ended (the engine is rebuilt with the same peers), a TUN set down (set up
    /// again), the network route gone.
    public func reconcile(peers: [PeerLease]) async throws {
        apply { current in
            current = Dictionary(peers.filter(Self.isUDPPeer).map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        }
        guard let (index, local) = state.withLock({ s in s.local.map { (s.tunIndex, $0) } }) else { return }
        let damage = damage()
        if let damage = try await Blocking.run({ [self] in
            try Self.repairDevice(
                netlink, name: tunName, index: index, network: local.v4?.network, network6: local.network6,
                damage: damage, backend: type, logger: logger)
        }) {
            logger.warning("udp data path broken; rebuilding it", metadata: ["reason": "\(damage)", "tun": "\(tunName)"])
            try await start(local: local)
            Counter(label: "twill_datapath_repairs_total", dimensions: [("what", "udp_engine")]).increment()
            logger.notice("udp data path rebuilt", metadata: ["tun": "\(tunName)"])
        }
    }

    private func apply(_ change: (inout [PeerLease.Key: PeerLease]) -> Void) {
        state.withLock { s in
            change(&s.peers)
            s.engine?.update(peers: Array(s.peers.values))
        }
    }

    public func needsReconcile(after change: NetlinkChange) -> Bool {
        guard let (index, local) = state.withLock({ s in s.local.map { (s.tunIndex, $0) } }) else { return false }
        return Self.deviceNeedsReconcile(change, name: tunName, index: index, network: local.v4?.network, network6: local.network6)
    }

    /// Stops the threads and lets go of the descriptors; the TUN (persistent), its addresses
    /// and route stay, and under systemd its queues and sockets stay open in the descriptor
    /// store, queueing packets for the next run.
    public func stop() async {
        let engine = state.withLock { s -> PacketEngine? in
            defer { s = State() }
            return s.engine
        }
        guard let engine else { return }
        engine.stop()
        logger.info("udp backend stopped; \(tunName) and its routes stay for the next start", metadata: ["tun": "\(tunName)"])
    }

    /// Stops and deletes the TUN (its addresses and route go with it).
    public func teardown() async {
        let engine = state.withLock { s -> PacketEngine? in
            defer { s = State() }
            return s.engine
        }
        descriptors.discard(engine)
        logger.info("udp backend removed", metadata: ["tun": "\(tunName)"])
    }

    public var devices: [String] { [tunName] }

    public func traffic() -> BackendTraffic {
        var t = BackendTraffic(device: tunName)
        guard let c = counters() else { return t }
        for p in c.peers {
            let traffic = BackendTraffic.Peer(
                txPackets: p.txPackets, txBytes: p.txBytes, rxPackets: p.rxPackets, rxBytes: p.rxBytes,
                drops: Dictionary(uniqueKeysWithValues: p.drops.map { ("\($0.key)", $0.value) }))
            // An IPv6-only peer (IPv4 part 0.0.0.0/0) is known by its IPv6 subnet.
            if p.ipv4Subnet == nil, let subnet6 = p.subnet6 {
                t.ipv6OnlyPeers[subnet6] = traffic
            } else {
                t.peers[p.subnet] = traffic
            }
        }
        for reason in DropReason.allCases where c[drop: reason] > 0 { t.drops["\(reason)"] = c[drop: reason] }
        return t
    }

    /// The engine's counters for the agent's metrics.
    public func counters() -> EngineCounterSnapshot? {
        state.withLock { $0.engine?.counters() }
    }

    public func publishMetrics() {
        guard let c = counters() else { return }
        func add(_ label: String, _ dims: [(String, String)], _ total: UInt64) { published.publish(label, dims, total: total) }
        for reason in DropReason.allCases {
            add("twill_udp_drops_total", [("reason", "\(reason)")], c[drop: reason])
        }
        for p in c.peers {
            let dims = [("subnet", p.label.subnet), ("public_ip", p.label.publicIP)]
            add("twill_udp_peer_tx_packets_total", dims, p.txPackets)
            add("twill_udp_peer_tx_bytes_total", dims, p.txBytes)
            add("twill_udp_peer_rx_packets_total", dims, p.rxPackets)
            add("twill_udp_peer_rx_bytes_total", dims, p.rxBytes)
        }
        add("twill_udp_icmp_unreachable_sent_total", [], c.icmpUnreachableSent)
        add("twill_udp_failed_threads_total", [], c.failedThreads)
        let newlyFailed = loggedFailedThreads.withLock { logged in
            defer { logged = max(logged, c.failedThreads) }
            return c.failedThreads > logged
        }
        if newlyFailed {
            logger.error(
                "udp packet threads ended on an error; the engine is rebuilt at the next reconcile",
                metadata: ["tun": "\(tunName)", "failed_threads": "\(c.failedThreads)"])
        }
    }
}
