import Logging
import Synchronization
import TwillAddress
import TwillNetlink

/// flannel's host-gw backend: every peer's subnet is routed to the peer's public IP on the
/// external interface (`peer.subnet via peer.publicIP dev <iface>`), so all nodes must share
/// one L2 segment. No encapsulation: the MTU is the interface's.
///
/// Every route carries ``twillRouteProtocol``; ``reconcile(peers:)`` removes Twill routes
/// inside the overlay network that no lease backs, re-adds missing ones and never touches
/// routes of any other protocol.
public final class HostGWBackend: Backend {
    /// `Backend.MTU`, when set.
    let configuredMTU: Int?
    public let type = "host-gw"
    private let netlink: Netlink
    private let external: ExternalInterface
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var local: LocalLease?
        var peers: [IPv4Network: PeerLease] = [:]
    }

    /// - Parameters:
    ///   - netlink: the kernel of the namespace to program.
    ///   - external: the interface peers are reached through; its publicIP must be its own.
    /// - Parameter mtu: flannel's `Backend.MTU` for FLANNEL_MTU (nil: the external interface's).
    public init(netlink: Netlink, external: ExternalInterface, mtu: Int? = nil, logger: Logger = Logger(label: "twill.backend.host-gw")) {
        self.configuredMTU = mtu
        self.netlink = netlink
        self.external = external
        var l = logger
        l[metadataKey: "backend"] = "host-gw"
        l[metadataKey: "iface"] = "\(external.name)"
        self.logger = l
    }

    var currentNetwork: IPv4Network? { state.withLock { $0.local?.network } }
    var externalIndex: Int32 { external.index }

    public func prepare() async throws -> BackendAdvert {
        let own = try KernelRoutes.ownAddresses(netlink, interfaceIndex: external.index)
        guard own.contains(external.publicIP) else {
            throw BackendError(backend: type, """
                public IP \(external.publicIP) is not an address of interface \(external.name) \
                (it has \(own.isEmpty ? "no IPv4 address" : own.map(\.description).joined(separator: ", "))): \
                host-gw needs peers to reach this node directly, not through NAT; use vxlan or udp instead
                """)
        }
        return BackendAdvert(mtu: configuredMTU ?? external.mtu, backendType: type)
    }

    public func start(local: LocalLease) async throws {
        state.withLock { $0.local = local }
        logger.info("host-gw backend started", metadata: ["subnet": "\(local.subnet)", "network": "\(local.network)"])
    }

    /// Whether this backend routes to `peer`; nil when it does, else why not.
    private func skipReason(_ peer: PeerLease, local: LocalLease?) -> String? {
        if peer.backendType != type { return "lease of backend type \(peer.backendType ?? "none"), not host-gw" }
        if let local {
            if peer.subnet == local.subnet { return "this node's own lease" }
            if !local.network.contains(peer.subnet) { return "subnet outside the network \(local.network)" }
        }
        return nil
    }

    private func route(for peer: PeerLease) -> Route {
        Route(destination: peer.subnet, gateway: peer.publicIP, outputInterface: external.index)
    }

    private func checkOnLink(_ peer: PeerLease, _ networks: [IPv4Network]) throws {
        guard networks.contains(where: { $0.contains(peer.publicIP) }) else {
            throw BackendError(backend: type, """
                peer \(peer.subnet) at \(peer.publicIP) is not directly reachable on \(external.name) \
                (on-link: \(networks.isEmpty ? "nothing" : networks.map(\.description).joined(separator: ", "))); \
                host-gw needs all nodes on one L2 segment
                """)
        }
    }

    public func peerAdded(_ peer: PeerLease) async throws {
        try state.withLock { st in
            if let why = skipReason(peer, local: st.local) {
                logger.debug("ignoring lease", metadata: ["peer": "\(peer.subnet)", "reason": "\(why)"])
                return
            }
            try checkOnLink(peer, KernelRoutes.onLinkNetworks(netlink, interfaceIndex: external.index))
            try netlink.replaceRoute(route(for: peer))
            st.peers[peer.subnet] = peer
            logger.info("route to peer added", metadata: ["peer": "\(peer.subnet)", "via": "\(peer.publicIP)"])
        }
    }

    public func peerRemoved(_ peer: PeerLease) async throws {
        try state.withLock { st in
            if let local = st.local, peer.subnet == local.subnet { return }
            st.peers[peer.subnet] = nil
            try KernelRoutes.deleteOwned(netlink, destination: peer.subnet)
            logger.info("route to peer removed", metadata: ["peer": "\(peer.subnet)"])
        }
    }

    public func reconcile(peers: [PeerLease]) async throws {
        try state.withLock { st in
            guard let local = st.local else { throw BackendError(backend: type, "reconcile before start(local:)") }
            var failures: [String] = []
            var desired: [Route] = []
            var kept: [IPv4Network: PeerLease] = [:]
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
            st.peers = kept
            failures += KernelRoutes.reconcile(netlink, network: local.network, desired: desired, logger: logger)
            if !failures.isEmpty {
                for f in failures { logger.error("reconcile failure", metadata: ["error": "\(f)"]) }
                throw BackendError(backend: type, "reconcile left \(failures.count) problem(s): \(failures.joined(separator: "; "))")
            }
        }
    }

    public func stop() async {
        state.withLock { st in
            for subnet in st.peers.keys {
                do {
                    try KernelRoutes.deleteOwned(netlink, destination: subnet)
                } catch {
                    logger.warning("could not remove route on stop", metadata: ["error": "\(error)"])
                }
            }
            st.peers = [:]
        }
    }
}
