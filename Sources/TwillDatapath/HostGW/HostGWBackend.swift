import Logging
import Synchronization
import TwillAddress
import TwillNetlink
import TwillSystem

/// flannel's host-gw backend: every peer's subnet is routed to the peer's public IP on the
/// external interface (`peer.subnet via peer.publicIP dev <iface>`), so all nodes must share
/// one L2 segment. No encapsulation: the MTU is the interface's.
///
/// With a dual-stack lease, the peer's IPv6 subnet is routed the same way, via its
/// PublicIPv6 (a peer without one gets no IPv6 route, and that is logged).
///
/// Every route carries ``twillRouteProtocol``; ``reconcile(peers:)`` removes Twill routes
/// inside the overlay network that no lease backs, re-adds missing ones and never touches
/// routes of any other protocol.
public final class HostGWBackend: Backend {
    /// `Backend.MTU`, when set.
    let configuredMTU: Int?
    /// The families the network runs: IPv4 routes only with `.ipv4` (none on an IPv6-only
    /// network), IPv6 routes only with `.ipv6` (the node then needs a public IPv6 address).
    let families: IPFamilies
    var ipv4: Bool { families.contains(.ipv4) }
    var ipv6: Bool { families.contains(.ipv6) }
    public let type = "host-gw"
    private let netlink: any KernelRouting
    private let external: ExternalInterface
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var local: NodeAddressing?
        var peers: [IPv4Network: PeerLease] = [:]
        /// The IPv6 routes programmed, by destination.
        var routes6: [IPv6Network: Route6] = [:]
    }

    /// - Parameters:
    ///   - netlink: the kernel of the namespace to program.
    ///   - external: the interface peers are reached through; its publicIP must be its own.
    /// - Parameter mtu: flannel's `Backend.MTU` for FLANNEL_MTU (nil: the external interface's).
    /// - Parameter families: the families the network runs.
    public init(
        netlink: any KernelRouting, external: ExternalInterface, mtu: Int? = nil, families: IPFamilies = .ipv4,
        logger: Logger = Logger(label: "twill.backend.host-gw")
    ) {
        self.configuredMTU = mtu
        self.families = families
        self.netlink = netlink
        self.external = external
        var l = logger
        l[metadataKey: "backend"] = "host-gw"
        l[metadataKey: "iface"] = "\(external.name)"
        self.logger = l
    }

    var currentNetwork: IPv4Network? { ipv4 ? state.withLock { $0.local?.v4?.network } : nil }
    var currentNetwork6: IPv6Network? { state.withLock { $0.local?.network6 } }
    var externalIndex: Int32 { external.index }

    // The Backend methods: each runs its netlink work off the cooperative pool (the
    // protocol's rule), in the synchronous functions below.
    public func prepare() async throws -> BackendAdvert { try await Blocking.run { [self] in try prepareNow() } }
    public func start(local: NodeAddressing) async throws { try await Blocking.run { [self] in try startNow(local: local) } }
    public func peerAdded(_ peer: PeerLease) async throws { try await Blocking.run { [self] in try addNow(peer) } }
    public func peerRemoved(_ peer: PeerLease) async throws { try await Blocking.run { [self] in try removeNow(peer) } }
    public func reconcile(peers: [PeerLease]) async throws { try await Blocking.run { [self] in try reconcileNow(peers: peers) } }
    public func teardown() async { await Blocking.run { [self] in teardownNow() } }

    private func prepareNow() throws -> BackendAdvert {
        let own = try KernelRoutes.ownAddresses(netlink, interfaceIndex: external.index)
        guard !ipv4 || own.contains(external.publicIP) else {
            throw BackendError(
                backend: type,
                """
                public IP \(external.publicIP) is not an address of interface \(external.name) \
                (it has \(own.isEmpty ? "no IPv4 address" : own.map(\.description).joined(separator: ", "))): \
                host-gw needs peers to reach this node directly, not through NAT; use vxlan or udp instead
                """)
        }
        if ipv6, external.publicIPv6 == nil {
            throw BackendError(
                backend: type,
                """
                EnableIPv6 is set but interface \(external.name) has no global IPv6 address; \
                give it one, pass --public-ipv6, or choose another interface with --iface
                """)
        }
        if ipv6, let v6 = external.publicIPv6 {
            let own6 = try KernelRoutes.ownAddresses6(netlink, interfaceIndex: external.index)
            guard own6.contains(v6) else {
                throw BackendError(
                    backend: type,
                    """
                    public IPv6 address \(v6) is not an address of interface \(external.name) \
                    (it has \(own6.isEmpty ? "no IPv6 address" : own6.map(\.description).joined(separator: ", "))): \
                    host-gw needs peers to reach this node directly
                    """)
            }
        }
        return BackendAdvert(mtu: configuredMTU ?? external.mtu, backendType: type)
    }

    private func startNow(local: NodeAddressing) throws {
        state.withLock { $0.local = local }
        logger.info(
            "host-gw backend started",
            metadata: ["subnet": "\(local.v4.map { "\($0.subnet)" } ?? "-")", "network": "\(local.v4.map { "\($0.network)" } ?? "-")"])
    }

    /// Whether this backend routes to `peer`; nil when it does, else why not.
    private func skipReason(_ peer: PeerLease, local: NodeAddressing?) -> String? {
        if peer.backendType != type { return "lease of backend type \(peer.backendType ?? "none"), not host-gw" }
        if let v4 = local?.v4 {
            if peer.subnet == v4.subnet { return "this node's own lease" }
            if !v4.network.contains(peer.subnet) { return "subnet outside the network \(v4.network)" }
        }
        return nil
    }

    private func route(for peer: PeerLease) -> Route {
        Route(destination: peer.subnet, gateway: peer.publicIP, outputInterface: external.index)
    }

    /// The IPv6 route to `peer`'s IPv6 subnet, or nil (with the reason) when there is none to make.
    private func route6(for peer: PeerLease, local: NodeAddressing?, onLink: [IPv6Network]) -> Result<Route6, BackendError>? {
        guard let local, let network6 = local.network6, let subnet6 = peer.subnet6 else { return nil }
        guard network6.contains(subnet6), subnet6 != local.subnet6 else { return nil }
        guard let via = peer.publicIPv6 else {
            return .failure(
                BackendError(backend: type, "peer \(peer.subnet) leases \(subnet6) but has no PublicIPv6: its IPv6 subnet is not routed"))
        }
        guard onLink.contains(where: { $0.contains(via) }) else {
            return .failure(
                BackendError(
                    backend: type,
                    """
                    peer \(subnet6) at \(via) is not directly reachable on \(external.name) \
                    (IPv6 on-link: \(onLink.isEmpty ? "nothing" : onLink.map(\.description).joined(separator: ", "))); \
                    host-gw needs all nodes on one L2 segment
                    """))
        }
        return .success(Route6(destination: subnet6, gateway: via, outputInterface: external.index))
    }

    private func checkOnLink(_ peer: PeerLease, _ networks: [IPv4Network]) throws {
        guard networks.contains(where: { $0.contains(peer.publicIP) }) else {
            throw BackendError(
                backend: type,
                """
                peer \(peer.subnet) at \(peer.publicIP) is not directly reachable on \(external.name) \
                (on-link: \(networks.isEmpty ? "nothing" : networks.map(\.description).joined(separator: ", "))); \
                host-gw needs all nodes on one L2 segment
                """)
        }
    }

    private func addNow(_ peer: PeerLease) throws {
        try state.withLock { st in
            if ipv4 {
                if let why = skipReason(peer, local: st.local) {
                    logger.debug("ignoring lease", metadata: ["peer": "\(peer.subnet)", "reason": "\(why)"])
                    return
                }
                try checkOnLink(peer, KernelRoutes.onLinkNetworks(netlink, interfaceIndex: external.index))
                try netlink.replaceRoute(route(for: peer))
                st.peers[peer.subnet] = peer
                logger.info("route to peer added", metadata: ["peer": "\(peer.subnet)", "via": "\(peer.publicIP)"])
            } else if peer.backendType != type {
                return
            }
            if st.local?.network6 != nil {
                switch route6(for: peer, local: st.local, onLink: try KernelRoutes.onLinkNetworks6(netlink, interfaceIndex: external.index))
                {
                case .success(let r)?:
                    try netlink.replaceRoute6(r)
                    st.routes6[r.destination] = r
                    logger.info(
                        "IPv6 route to peer added", metadata: ["peer": "\(r.destination)", "via": "\(r.gateway.map(\.description) ?? "-")"])
                case .failure(let e)?:
                    logger.warning("peer's IPv6 subnet not routed", metadata: ["peer": "\(peer.subnet)", "reason": "\(e.message)"])
                    // A route made for the lease's earlier value must not outlive it.
                    if let subnet6 = peer.subnet6, st.routes6.removeValue(forKey: subnet6) != nil {
                        try KernelRoutes.deleteOwned6(netlink, destination: subnet6)
                    }
                case nil:
                    break
                }
            }
        }
    }

    private func removeNow(_ peer: PeerLease) throws {
        try state.withLock { st in
            if ipv4 {
                if let local = st.local, peer.subnet == local.ipv4Subnet { return }
                st.peers[peer.subnet] = nil
                try KernelRoutes.deleteOwned(netlink, destination: peer.subnet)
                logger.info("route to peer removed", metadata: ["peer": "\(peer.subnet)"])
            }
            if let subnet6 = peer.subnet6, subnet6 != st.local?.subnet6, st.routes6.removeValue(forKey: subnet6) != nil {
                try KernelRoutes.deleteOwned6(netlink, destination: subnet6)
                logger.info("IPv6 route to peer removed", metadata: ["peer": "\(subnet6)"])
            }
        }
    }

    private func reconcileNow(peers: [PeerLease]) throws {
        try state.withLock { st in
            guard let local = st.local else { throw BackendError(backend: type, "reconcile before start(local:)") }
            var failures: [String] = []
            var desired: [Route] = []
            var kept: [IPv4Network: PeerLease] = [:]
            var peers6: [PeerLease] = peers.filter { $0.backendType == type }
            if ipv4, let v4 = local.v4 {
                let networks = try KernelRoutes.onLinkNetworks(netlink, interfaceIndex: external.index)
                for peer in peers where skipReason(peer, local: local) == nil {
                    do {
                        try checkOnLink(peer, networks)
                        desired.append(route(for: peer))
                        kept[peer.subnet] = peer
                    } catch {
                        failures.append("\(error)")
                    }
                }
                peers6 = Array(kept.values)
                st.peers = kept
                failures += KernelRoutes.reconcile(netlink, network: v4.network, desired: desired, logger: logger)
            } else {
                // IPv6-only (now): Twill's IPv4 routes of an earlier run go.
                failures += KernelRoutes.reconcile(netlink, network: .all, desired: [], logger: logger)
            }
            if let network6 = local.network6 {
                let onLink6 = try KernelRoutes.onLinkNetworks6(netlink, interfaceIndex: external.index)
                var desired6: [IPv6Network: Route6] = [:]
                for peer in peers6 {
                    switch route6(for: peer, local: local, onLink: onLink6) {
                    case .success(let r)?: desired6[r.destination] = r
                    // A lease without PublicIPv6 is the peer's to fix (logged when it came); a
                    // peer off this link is a broken cluster, reported.
                    case .failure(let e)? where peer.publicIPv6 != nil: failures.append(e.message)
                    case .failure?, nil: break
                    }
                }
                st.routes6 = desired6
                failures += KernelRoutes.reconcile6(netlink, network: network6, desired: Array(desired6.values), logger: logger)
            } else {
                // IPv6 off (now): Twill's IPv6 routes of an earlier dual-stack run go.
                failures += KernelRoutes.reconcile6(netlink, network: .all, desired: [], logger: logger)
            }
            if !failures.isEmpty {
                for f in failures { logger.error("reconcile failure", metadata: ["error": "\(f)"]) }
                throw BackendError(backend: type, "reconcile left \(failures.count) problem(s): \(failures.joined(separator: "; "))")
            }
        }
    }

    /// Leaves the routes in place: the node goes on forwarding; the next start adopts them.
    public func stop() async {
        state.withLock { st in
            st.peers = [:]
            st.routes6 = [:]
        }
    }

    /// Removes the routes this backend made.
    private func teardownNow() {
        state.withLock { st in
            for subnet in st.peers.keys {
                do {
                    try KernelRoutes.deleteOwned(netlink, destination: subnet)
                } catch {
                    logger.warning("could not remove route on stop", metadata: ["error": "\(error)"])
                }
            }
            st.peers = [:]
            for subnet6 in st.routes6.keys {
                do {
                    try KernelRoutes.deleteOwned6(netlink, destination: subnet6)
                } catch {
                    logger.warning("could not remove an IPv6 route on stop", metadata: ["error": "\(error)"])
                }
            }
            st.routes6 = [:]
        }
    }
}
