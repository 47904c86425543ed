import TwillAddress
import TwillNetlink

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A data path for the overlay: how packets for other nodes' subnets reach them.
///
/// The agent drives every backend the same way, in flannel's order:
/// 1. `prepare()` before the lease exists: create what the lease must advertise (the vxlan
///    device's MAC, say) and report the MTU;
/// 2. `start(local:)` once this node holds its subnet;
/// 3. `peerAdded` / `peerRemoved` as other nodes' leases come and go, and `reconcile(peers:)`
///    with the full current set at start, after a watch resync and whenever the kernel state
///    may have drifted: it must make the kernel match exactly, touching only what Twill owns;
/// 4. `stop()` on shutdown: let go of what the process holds (threads, descriptors) and leave
///    the kernel state (devices, routes, neighbours, FDB entries) in place, as flanneld does,
///    so that the node goes on forwarding while no agent runs and the next start adopts it;
///    or `teardown()` when the data path must go (`--release-on-exit`, another backend):
///    remove what the backend created.
///
/// Adopting means a start on kernel state an earlier run left changes only what differs
/// from what this run wants: a device whose settings match is kept (same index, no flap),
/// routes and entries are diffed.
///
/// Concurrency: the agent calls these methods one at a time (its `PeerStore` holds a lock
/// around every call), so a backend never sees a reconcile interleaved with a change. The
/// methods are `async` and must not hold a cooperative thread while the kernel answers:
/// netlink round trips, ioctls and subprocesses run through ``Blocking/run(_:)``.
/// ``needsReconcile(after:)``, ``damage()`` and ``traffic()`` are cheap and never block.
public protocol Backend: AnyObject, Sendable {
    /// The BackendType this backend writes into leases ("udp", "vxlan", "host-gw", "alloc").
    var type: String { get }
    func prepare() async throws -> BackendAdvert
    func start(local: NodeAddressing) async throws
    /// `start(local:)` with the peers known at that moment, so that the data path forwards to
    /// them from its first packet (a restarted packet engine reads what queued meanwhile).
    func start(local: NodeAddressing, peers: [PeerLease]) async throws
    func peerAdded(_ peer: PeerLease) async throws
    func peerRemoved(_ peer: PeerLease) async throws
    func reconcile(peers: [PeerLease]) async throws
    func stop() async
    /// Stops like `stop()` and removes every device, route and entry the backend made.
    func teardown() async
    /// The devices this backend runs on (`twill0`, `flannel.1`...): devices of Twill's that
    /// another backend left are removed when this one starts.
    var devices: [String] { get }
    /// Whether a kernel change (from a netlink monitor) may have disturbed this backend's
    /// state, so that the agent should call `reconcile(peers:)`.
    func needsReconcile(after change: NetlinkChange) -> Bool
    /// Why the data path is broken right now (a packet thread ended, say), or nil. Cheap: the
    /// agent asks every second and calls `reconcile(peers:)` to repair when it is not nil.
    func damage() -> String?
    /// What the backend can tell about its traffic, for the node status.
    func traffic() -> BackendTraffic
}

/// A backend's device and, where it counts them (the udp engine does), packets and drops.
public struct BackendTraffic: Sendable, Equatable {
    /// Per peer subnet: packets and bytes each way.
    public struct Peer: Sendable, Equatable {
        public var txPackets: UInt64, txBytes: UInt64, rxPackets: UInt64, rxBytes: UInt64
        /// What the peer sent that was dropped, by reason.
        public var drops: [String: UInt64]
        /// Unix time of the last completed handshake (wireguard), nil if none yet or no such thing.
        public var lastHandshake: Int64?
        /// Where the backend sends to this peer (wireguard: `ip:port`), if it differs from its lease's PublicIP.
        public var endpoint: String?
        public init(
            txPackets: UInt64, txBytes: UInt64, rxPackets: UInt64, rxBytes: UInt64, drops: [String: UInt64] = [:],
            lastHandshake: Int64? = nil, endpoint: String? = nil
        ) {
            self.txPackets = txPackets
            self.txBytes = txBytes
            self.rxPackets = rxPackets
            self.rxBytes = rxBytes
            self.drops = drops
            self.lastHandshake = lastHandshake
            self.endpoint = endpoint
        }
    }
    /// The device the backend runs (`twill0`, `flannel.1`), if it has one.
    public var device: String?
    public var peers: [IPv4Network: Peer]
    /// IPv6-only peers (no IPv4 subnet), by IPv6 subnet.
    public var ipv6OnlyPeers: [IPv6Network: Peer] = [:]
    /// Dropped packets by reason (only reasons that happened).
    public var drops: [String: UInt64]

    public init(device: String? = nil, peers: [IPv4Network: Peer] = [:], drops: [String: UInt64] = [:]) {
        self.device = device
        self.peers = peers
        self.drops = drops
    }

    /// What the backend counted for `peer`.
    public func traffic(of peer: PeerLease) -> Peer? {
        if peer.ipv4Subnet == nil, let subnet6 = peer.subnet6 { return ipv6OnlyPeers[subnet6] }
        return peers[peer.subnet]
    }
}

extension Backend {
    public func start(local: NodeAddressing, peers: [PeerLease]) async throws {
        try await start(local: local)
        // A peer the backend cannot route yet is the agent's reconcile loop's to report and retry.
        try? await reconcile(peers: peers)
    }
    public var devices: [String] { [] }
    /// Backends without kernel state never need a kernel-triggered reconcile.
    public func needsReconcile(after change: NetlinkChange) -> Bool { false }
    /// Backends whose data path is the kernel's own report damage through netlink events.
    public func damage() -> String? { nil }
    /// The kernel counts no per-peer traffic for its own data path.
    public func traffic() -> BackendTraffic { BackendTraffic() }
}

/// A backend whose data path counts packets (the udp engine): it turns its counters into
/// metrics when asked, just before a scrape.
public protocol DatapathMetricsSource: Sendable {
    func publishMetrics()
}

/// What a backend publishes about this node before the lease is taken.
public struct BackendAdvert: Sendable, Equatable {
    /// MTU for the overlay (FLANNEL_MTU).
    public var mtu: Int
    /// BackendType for the lease; nil to leave it out (flannel's udp backend writes none).
    public var backendType: String?
    /// BackendData for the lease: a JSON object, or nil.
    public var backendData: Data?
    /// BackendV6Data (flannel's vxlan: the IPv6 device's VtepMAC), or nil.
    public var backendV6Data: Data?

    public init(mtu: Int, backendType: String?, backendData: Data? = nil, backendV6Data: Data? = nil) {
        self.mtu = mtu
        self.backendType = backendType
        self.backendData = backendData
        self.backendV6Data = backendV6Data
    }
}

/// The interface that carries overlay traffic between nodes.
public struct ExternalInterface: Sendable, Equatable {
    public var name: String
    public var index: Int32
    /// The address peers send to (normally the interface's own; differs behind NAT).
    public var publicIP: IPv4Address
    /// The interface's own address, used as the local end of tunnels.
    public var localIP: IPv4Address
    public var mtu: Int
    /// The IPv6 address peers send to (`--public-ipv6`, else ``localIPv6``), nil when the
    /// node has none.
    public var publicIPv6: IPv6Address?
    /// The interface's own global IPv6 address, the local end of IPv6 tunnels.
    public var localIPv6: IPv6Address?

    public init(
        name: String, index: Int32, publicIP: IPv4Address, localIP: IPv4Address, mtu: Int,
        publicIPv6: IPv6Address? = nil, localIPv6: IPv6Address? = nil
    ) {
        self.name = name
        self.index = index
        self.publicIP = publicIP
        self.localIP = localIP
        self.mtu = mtu
        self.publicIPv6 = publicIPv6
        self.localIPv6 = localIPv6
    }
}

/// This node's addressing as the data path needs it: per family, the overlay network
/// (FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK) and this node's subnet in it. A family the node
/// does not run has no part: an IPv6-only node has no `v4`, a single-stack one no `v6`.
public typealias NodeAddressing = Overlay

extension Overlay {
    /// The IPv4 subnet, if the node runs IPv4.
    public var ipv4Subnet: IPv4Network? { v4?.subnet }
    /// The IPv6 overlay, if the node runs IPv6.
    public var network6: IPv6Network? { v6?.network }
    /// This node's IPv6 subnet, if it runs IPv6.
    public var subnet6: IPv6Network? { v6?.subnet }
}

/// Another node's lease as the data path needs it.
public struct PeerLease: Sendable, Hashable {
    public var subnet: IPv4Network
    public var publicIP: IPv4Address
    /// nil when the lease has none (flannel's udp backend writes none).
    public var backendType: String?
    /// The lease's BackendData JSON object, raw; each backend decodes what it needs.
    public var backendData: Data?
    /// The peer's IPv6 subnet and address, and its BackendV6Data, from a dual-stack lease.
    public var subnet6: IPv6Network?
    public var publicIPv6: IPv6Address?
    public var backendV6Data: Data?

    /// What tells one peer's lease from another's: its subnets (an IPv6-only lease's IPv4
    /// part is 0.0.0.0/0 for all of them).
    public struct Key: Hashable, Sendable {
        public var subnet: IPv4Network
        public var subnet6: IPv6Network?
    }

    public var key: Key { Key(subnet: subnet, subnet6: subnet6) }
    /// The IPv4 subnet; nil for an IPv6-only peer (whose `subnet` is flannel's `0.0.0.0/0`
    /// placeholder from its key). Read this, not the placeholder.
    public var ipv4Subnet: IPv4Network? { subnet.prefixLength == 0 ? nil : subnet }

    public init(
        subnet: IPv4Network, publicIP: IPv4Address, backendType: String?, backendData: Data?,
        subnet6: IPv6Network? = nil, publicIPv6: IPv6Address? = nil, backendV6Data: Data? = nil
    ) {
        self.subnet = subnet
        self.publicIP = publicIP
        self.backendType = backendType
        self.backendData = backendData
        self.subnet6 = subnet6
        self.publicIPv6 = publicIPv6
        self.backendV6Data = backendV6Data
    }
}

/// Why a backend could not do its job, said so an operator can act.
public struct BackendError: Error, Sendable, CustomStringConvertible {
    public var backend: String
    public var message: String
    public init(backend: String, _ message: String) {
        self.backend = backend
        self.message = message
    }
    public var description: String { "\(backend) backend: \(message)" }
}

/// The lease-only backend: no data path at all (for control-plane tests and for nodes whose
/// routing is done by something else).
public final class AllocBackend: Backend {
    public let type = "alloc"
    private let mtu: Int
    public init(mtu: Int = 1500) { self.mtu = mtu }
    public func prepare() async throws -> BackendAdvert { BackendAdvert(mtu: mtu, backendType: "alloc") }
    public func start(local: NodeAddressing) async throws {}
    public func peerAdded(_ peer: PeerLease) async throws {}
    public func peerRemoved(_ peer: PeerLease) async throws {}
    public func reconcile(peers: [PeerLease]) async throws {}
    public func stop() async {}
    public func teardown() async {}
}
