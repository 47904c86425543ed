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

/// flannel's wireguard backend, on one of two engines: the kernel's WireGuard (a device of kind
/// "wireguard" configured over generic netlink) where the kernel has it, and otherwise (or when
/// asked) Twill's own WireGuard on the udp packet engine (a TUN `flannel-wg`, sealed in place
/// by the packet threads, handshakes on a control thread), so it also runs on kernels without
/// the WireGuard module, where flannel's backend cannot.
///
/// flannel's formats throughout: the private key in flannel's key file, the lease
/// `{"PublicKey": ..., "Port": ...}`, the device's MTU (and FLANNEL_MTU) 80 below the
/// underlay's, the subnet's address /32 on the device and the whole network routed through
/// it; a peer is `PublicIP:Port` with the peer's subnet as its allowed IPs.
public final class WireGuardBackend: Backend, DatapathMetricsSource {
    /// Which engine carries the traffic (`--wireguard-engine`).
    public enum Engine: String, Sendable, CaseIterable {
        /// The kernel's where it has WireGuard, else Twill's own.
        case auto
        /// The kernel's; an error where the kernel has no WireGuard.
        case kernel
        /// Twill's own, whatever the kernel has.
        case userspace
    }

    public let type = "wireguard"
    public let engineChoice: Engine
    public static let deviceName = "flannel-wg"
    /// The IPv4 overhead flannel reserves: IPv6 40 + UDP 8 + WireGuard 32.
    public static let overhead = 80
    public let listenPort: UInt16
    public let keyFile: String
    let persistentKeepalive: Duration?
    let presharedKey: Secret?
    let outerMTU: Int?
    let offloads: Bool
    let queues: Int?
    let timers: WireGuardTimers
    let netlink: any KernelRouting
    let external: ExternalInterface
    let logger: Logger
    /// The userspace engine's TUN queues and sockets across rebuilds and restarts.
    let descriptors: EngineDescriptors

    struct State {
        var local: NodeAddressing?
        /// The wireguard peers with usable BackendData, by subnet.
        var peers: [IPv4Network: (lease: PeerLease, config: WireGuardPeerConfig)] = [:]
        var engine: PacketEngine?
        var tunIndex: Int32 = 0
        var control: WireGuardControl?
        /// Set when the kernel engine runs.
        var kernel: KernelWireGuardDevice?
    }
    private let state = Mutex(State())
    private let published = CounterPublisher()

    public init(
        netlink: any KernelRouting, external: ExternalInterface, listenPort: UInt16 = 51820, keyFile: String = WireGuardKeyFile.defaultPath,
        presharedKey: Secret? = nil, persistentKeepalive: Duration? = nil, mtu: Int? = nil, offloads: Bool = true,
        queues: Int? = nil, timers: WireGuardTimers = WireGuardTimers(), engine: Engine = .auto,
        keeper: any DescriptorKeeper = NoDescriptorKeeper(), logger: Logger = Logger(label: "twill.backend.wireguard")
    ) {
        self.descriptors = EngineDescriptors(device: Self.deviceName, keeper: keeper, netlink: netlink)
        self.engineChoice = engine
        self.netlink = netlink
        self.external = external
        self.listenPort = listenPort
        self.keyFile = keyFile
        self.presharedKey = presharedKey
        self.persistentKeepalive = persistentKeepalive
        self.outerMTU = mtu
        self.offloads = offloads
        self.queues = queues
        self.timers = timers
        var l = logger
        l[metadataKey: "device"] = "\(Self.deviceName)"
        self.logger = l
    }

    /// flannel's rule: the underlay MTU (`Backend.MTU`, else the interface's) less 80.
    public var mtu: Int { (outerMTU ?? external.mtu) - Self.overhead }

    /// Loads libcrypto and the key (generating the key file when missing), starts the control
    /// thread and advertises the public key and port.
    public func prepare() async throws -> BackendAdvert {
        do { try WireGuardCrypto.load() } catch {
            throw BackendError(backend: type, "\(error) (Debian: apt-get install libssl3)")
        }
        let (key, created) = try WireGuardKeyFile.loadOrCreate(keyFile)
        let identity = WireGuardIdentity(privateKey: key)
        // The kernel engine where asked for or (auto) where the kernel has WireGuard.
        var kernelWireGuard: WireGuardNetlink?
        if engineChoice != .userspace {
            do { kernelWireGuard = try WireGuardNetlink() } catch {
                if engineChoice == .kernel {
                    throw BackendError(
                        backend: type,
                        "the kernel has no WireGuard (\(error); try `modprobe wireguard`); "
                            + "--wireguard-engine=userspace (or auto) runs Twill's own engine instead")
                }
                logger.info("the kernel has no WireGuard: Twill's own engine carries the traffic", metadata: ["reason": "\(error)"])
            }
        }
        let engine: String
        if let kernelWireGuard {
            let device = KernelWireGuardDevice(
                netlink: netlink, wireGuard: kernelWireGuard, name: Self.deviceName, privateKey: key,
                presharedKey: presharedKey, listenPort: listenPort, logger: logger)
            state.withLock { $0.kernel = device }
            engine = "kernel"
        } else {
            let control = try state.withLock { s throws -> WireGuardControl in
                if let c = s.control { return c }
                let c = try WireGuardControl(identity: identity, presharedKey: presharedKey, timers: timers, logger: logger)
                s.control = c
                return c
            }
            try control.start()
            engine = "userspace"
            resumeSessions(control)
        }
        logger.info(
            "wireguard identity ready",
            metadata: [
                "public_key": "\(Data(identity.publicKey).base64EncodedString())", "key_file": "\(keyFile)", "generated": "\(created)",
                "listen_port": "\(listenPort)", "engine": "\(engine)",
            ])
        return BackendAdvert(
            mtu: mtu, backendType: type, backendData: WireGuardLeaseData(publicKey: identity.publicKey, port: listenPort).json)
    }

    /// The engine running: "kernel" or "userspace" (nil before ``prepare()``).
    public var runningEngine: String? {
        state.withLock { s in s.kernel != nil ? "kernel" : (s.control != nil ? "userspace" : nil) }
    }

    public func start(local: NodeAddressing, peers: [PeerLease]) async throws {
        let configs = peers.compactMap { p in peerConfig(p).map { (p, $0) } }
        apply { current in current = Dictionary(configs.map { ($0.0.subnet, $0) }, uniquingKeysWith: { a, _ in a }) }
        try await start(local: local)
    }

    /// Opens the TUN and the listening sockets, configures the device and starts the packet
    /// threads; called again (a new subnet, a repair) it replaces the engine and keeps the
    /// peers and their sessions.
    public func start(local: NodeAddressing) async throws {
        if let kernel = state.withLock({ $0.kernel }) {
            let peers = state.withLock { s in
                s.local = local
                return s.peers.values.map(\.config)
            }
            let index: Int32
            do { index = try kernel.up(local: local, mtu: mtu, peers: peers) } catch {
                throw BackendError(backend: type, "cannot set up the kernel wireguard device \(Self.deviceName): \(error)")
            }
            state.withLock { $0.tunIndex = index }
            logger.info("wireguard backend up (kernel engine)", metadata: ["mtu": "\(mtu)", "listen": "\(external.localIP):\(listenPort)"])
            return
        }
        let (old, control) = state.withLock { s -> (PacketEngine?, WireGuardControl?) in
            defer {
                s.engine = nil
                s.local = local
            }
            return (s.engine, s.control)
        }
        guard let control else { throw BackendError(backend: type, "start before prepare") }
        // A kernel WireGuard device an earlier run (the kernel engine) left holds the name.
        if let kernelDevice = try? netlink.linkIfPresent(named: Self.deviceName), kernelDevice.kind == "wireguard" {
            try? netlink.deleteLink(index: kernelDevice.index)
            logger.notice("removed the kernel wireguard device an earlier run left; Twill's engine runs now")
        }
        control.attach(nil)
        if let old { descriptors.handBack(old) }
        var configuration = EngineConfiguration(
            localSubnet: local.ipv4Subnet, peerPort: listenPort, checkSources: true,
            udpOffloads: offloads, queues: queues)
        configuration.wireGuard = control.engineOptions(mtu: mtu)
        let (engine, index) = try UDPBackend.startEngine(
            descriptors, configuration: configuration, offloads: offloads, external: external, netlink: netlink, mtu: mtu, local: local,
            askedQueues: queues, backend: type, logger: logger
        ) { engine, _ in
            // The wireguard backend carries IPv4 only (for now): the kernel's router solicitations and
            // MLD reports would only be dropped (and counted) by the engine.
            try? Syscall.setSysctl("net/ipv6/conf/\(Self.deviceName)/disable_ipv6", "1")
            // Routes and keys before the first packet: what queued in a kept TUN or socket is
            // sealed or opened, not refused.
            engine.update(peers: self.state.withLock { $0.peers.values.map(\.lease) })
            control.attach(engine)
        }
        let superseded = state.withLock { s -> Bool in
            guard s.local == local, s.engine == nil else { return true }
            engine.update(peers: s.peers.values.map(\.lease))
            s.engine = engine
            s.tunIndex = index
            return false
        }
        if superseded {
            engine.stop()
            return
        }
        control.attach(engine)
        logger.info(
            "wireguard backend up",
            metadata: [
                "mtu": "\(mtu)", "listen": "\(external.localIP):\(listenPort)",
                "queues": "\(engine.queueCount)", "tun_offloads": "\(engine.hasTUNOffloads)",
            ])
    }

    public func damage() -> String? {
        let (wanted, engine, kernel) = state.withLock { ($0.local != nil, $0.engine, $0.kernel) }
        guard wanted, kernel == nil else { return nil }
        guard let engine else { return "the wireguard packet engine is not running (an earlier rebuild failed)" }
        let failed = engine.failedThreadCount
        return failed > 0 ? "\(failed) wireguard packet thread(s) ended" : nil
    }

    /// The peer's WireGuard settings from its lease, or nil (logged) when it has none usable.
    func peerConfig(_ peer: PeerLease) -> WireGuardPeerConfig? {
        guard peer.backendType == type else {
            logger.debug(
                "ignoring a peer of another backend", metadata: ["subnet": "\(peer.subnet)", "backend": "\(peer.backendType ?? "udp")"])
            return nil
        }
        guard let raw = peer.backendData else {
            logger.error(
                "skipping wireguard lease without BackendData", metadata: ["peer": "\(peer.subnet)", "publicIP": "\(peer.publicIP)"])
            return nil
        }
        let data: WireGuardLeaseData
        do { data = try WireGuardLeaseData(parsing: raw) } catch {
            logger.error(
                "skipping wireguard lease with unusable BackendData",
                metadata: [
                    "peer": "\(peer.subnet)", "publicIP": "\(peer.publicIP)", "error": "\(error)",
                ])
            return nil
        }
        return WireGuardPeerConfig(
            publicKey: data.publicKey, endpoint: WireGuardEndpoint(address: peer.publicIP, port: data.port ?? listenPort),
            allowedIPs: peer.subnet, persistentKeepalive: persistentKeepalive)
    }

    public func peerAdded(_ peer: PeerLease) async throws {
        let config = peerConfig(peer)
        apply { peers in
            peers[peer.subnet] = config.map { (peer, $0) }
        }
    }

    public func peerRemoved(_ peer: PeerLease) async throws {
        apply { $0[peer.subnet] = nil }
    }

    public func reconcile(peers: [PeerLease]) async throws {
        let configs = peers.compactMap { p in peerConfig(p).map { (p, $0) } }
        apply { current in
            current = Dictionary(configs.map { ($0.0.subnet, $0) }, uniquingKeysWith: { a, _ in a })
        }
        guard let (index, local) = state.withLock({ s in s.local.map { (s.tunIndex, $0) } }) else { return }
        if let damage = try UDPBackend.repairDevice(
            netlink, name: Self.deviceName, index: index, network: local.v4?.network, damage: damage(),
            backend: type, logger: logger)
        {
            logger.warning("wireguard data path broken; rebuilding it", metadata: ["reason": "\(damage)"])
            try await start(local: local)
            Counter(label: "twill_datapath_repairs_total", dimensions: [("what", "wireguard_device")]).increment()
        }
    }

    /// Changes the peer set, then gives the engine its routes and the control its peers. Two
    /// leases with one public key (a copied lease) are refused past the first, by subnet.
    private func apply(_ change: (inout [IPv4Network: (lease: PeerLease, config: WireGuardPeerConfig)]) -> Void) {
        state.withLock { s in
            change(&s.peers)
            var owner: [[UInt8]: IPv4Network] = [:]
            for (subnet, p) in s.peers.sorted(by: { $0.key.address < $1.key.address }) {
                if let first = owner[p.config.publicKey] {
                    logger.error(
                        "two wireguard leases name one public key; only the first is used",
                        metadata: ["peer": "\(subnet)", "first": "\(first)"])
                    s.peers[subnet] = nil
                } else {
                    owner[p.config.publicKey] = subnet
                }
            }
            s.engine?.update(peers: s.peers.values.map(\.lease))
            s.control?.setPeers(s.peers.values.map(\.config))
            if let kernel = s.kernel, s.local != nil {
                do { try kernel.setPeers(s.peers.values.map(\.config)) } catch {
                    logger.error("kernel wireguard peers not all set; the next reconcile tries again", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    public func needsReconcile(after change: NetlinkChange) -> Bool {
        guard let (index, network) = state.withLock({ s in s.local.map { (s.tunIndex, $0.v4?.network) } }) else { return false }
        return UDPBackend.deviceNeedsReconcile(change, name: Self.deviceName, index: index, network: network)
    }

    /// Stops the packet and control threads (every key wiped) and lets go of the descriptors;
    /// the device (the kernel's, or Twill's persistent TUN), its address, route and peers stay,
    /// and under systemd the TUN's queues and the sockets stay open in the descriptor store.
    public func stop() async {
        let (engine, control) = state.withLock { s -> (PacketEngine?, WireGuardControl?) in
            defer { s = State() }
            return (s.engine, s.control)
        }
        // The packet threads first: they may use the keys the control then zeroes.
        engine?.stop()
        let sessions = control?.stop(exportingSessions: descriptors.keeper.persists)
        if let sessions { keepSessions(sessions) }
        logger.info("wireguard backend stopped; \(Self.deviceName) stays for the next start")
    }

    /// The name the sessions are kept under (``WireGuardSessions``).
    static let sessionsName = "\(deviceName).sessions"

    /// Keeps the sessions for the next run, in memory only (a memory file, in systemd's
    /// descriptor store or the agent's holder): session keys never go to a disk.
    private func keepSessions(_ sessions: WireGuardSessions) {
        guard !sessions.peers.isEmpty else { return }
        do {
            let fd = try MemoryFile.create(name: "twill-wireguard-sessions", bytes: sessions.encoded)
            descriptors.keeper.keep(fd, name: Self.sessionsName)
            Glibc.close(fd)
            logger.info("kept the wireguard sessions for the next start", metadata: ["peers": "\(sessions.peers.count)"])
        } catch {
            logger.warning("cannot keep the wireguard sessions; the next start makes new ones", metadata: ["error": "\(error)"])
        }
    }

    /// Takes the sessions the previous run kept, once (the file is emptied before it is
    /// used): peers then need no handshake.
    private func resumeSessions(_ control: WireGuardControl) {
        guard let fd = descriptors.keeper.take(Self.sessionsName) else { return }
        descriptors.keeper.forget(Self.sessionsName)
        guard let bytes = MemoryFile.consume(fd), let sessions = WireGuardSessions(decoding: bytes) else {
            logger.warning("the kept wireguard sessions are unreadable or used already; new ones are made")
            return
        }
        let taken = control.resume(sessions)
        logger.info("resuming the previous run's wireguard sessions", metadata: ["peers": "\(taken)"])
    }

    /// Stops and deletes the device (its address, route and peers go with it); no session is kept.
    public func teardown() async {
        let (engine, control, kernel) = state.withLock { s -> (PacketEngine?, WireGuardControl?, KernelWireGuardDevice?) in
            defer { s = State() }
            return (s.engine, s.control, s.kernel)
        }
        kernel?.down()
        engine?.stop()
        control?.stop()
        descriptors.discard(nil)
        logger.info("wireguard backend removed")
    }

    public var devices: [String] { [Self.deviceName] }

    /// Per peer: packets and bytes each way, drops, last handshake and endpoint.
    public func traffic() -> BackendTraffic {
        var t = BackendTraffic(device: Self.deviceName)
        if let (kernel, subnets) = state.withLock({ s in
            s.kernel.map { k in (k, Dictionary(s.peers.map { ($0.value.config.publicKey, $0.key) }, uniquingKeysWith: { a, _ in a })) }
        }) {
            for p in kernel.status() {
                guard let subnet = subnets[p.publicKey] else { continue }
                // The kernel counts bytes, not packets.
                t.peers[subnet] = .init(
                    txPackets: 0, txBytes: p.txBytes, rxPackets: 0, rxBytes: p.rxBytes, lastHandshake: p.lastHandshake, endpoint: p.endpoint
                )
            }
            return t
        }
        let (engine, control) = state.withLock { ($0.engine, $0.control) }
        guard let c = engine?.counters() else { return t }
        let status = Dictionary((control?.status() ?? []).map { ($0.allowedIPs, $0) }, uniquingKeysWith: { a, _ in a })
        for p in c.peers {
            let s = status[p.subnet]
            t.peers[p.subnet] = .init(
                txPackets: p.txPackets, txBytes: p.txBytes, rxPackets: p.rxPackets, rxBytes: p.rxBytes,
                drops: Dictionary(uniqueKeysWithValues: p.drops.map { ("\($0.key)", $0.value) }),
                lastHandshake: s?.lastHandshakeUnix, endpoint: s.map { "\($0.endpoint)" })
        }
        for reason in DropReason.allCases where c[drop: reason] > 0 { t.drops["\(reason)"] = c[drop: reason] }
        for (reason, n) in control?.drops() ?? [:] { t.drops["handshake_\(reason)"] = n }
        return t
    }

    public func publishMetrics() {
        let (engine, control, kernel) = state.withLock { ($0.engine, $0.control, $0.kernel) }
        func add(_ label: String, _ dims: [(String, String)], _ total: UInt64) { published.publish(label, dims, total: total) }
        if kernel != nil {
            for (subnet, p) in traffic().peers {
                let dims = [("subnet", "\(subnet)"), ("endpoint", p.endpoint ?? "")]
                add("twill_wireguard_peer_tx_bytes_total", dims, p.txBytes)
                add("twill_wireguard_peer_rx_bytes_total", dims, p.rxBytes)
                Gauge(label: "twill_wireguard_peer_last_handshake_seconds", dimensions: dims).record(Double(p.lastHandshake ?? 0))
            }
            return
        }
        guard let c = engine?.counters() else { return }
        for reason in DropReason.allCases { add("twill_wireguard_drops_total", [("reason", "\(reason)")], c[drop: reason]) }
        for (reason, n) in control?.drops() ?? [:] { add("twill_wireguard_handshake_drops_total", [("reason", reason)], n) }
        let status = Dictionary((control?.status() ?? []).map { ($0.allowedIPs, $0) }, uniquingKeysWith: { a, _ in a })
        for p in c.peers {
            let s = status[p.subnet]
            let dims = [("subnet", "\(p.subnet)"), ("public_ip", "\(p.publicIP)"), ("endpoint", s.map { "\($0.endpoint)" } ?? "")]
            add("twill_wireguard_peer_tx_bytes_total", dims, p.txBytes)
            add("twill_wireguard_peer_rx_bytes_total", dims, p.rxBytes)
            add("twill_wireguard_peer_tx_packets_total", dims, p.txPackets)
            add("twill_wireguard_peer_rx_packets_total", dims, p.rxPackets)
            Gauge(label: "twill_wireguard_peer_last_handshake_seconds", dimensions: dims).record(Double(s?.lastHandshakeUnix ?? 0))
        }
    }
}
