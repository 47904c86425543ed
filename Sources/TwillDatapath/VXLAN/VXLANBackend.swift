#if canImport(FoundationEssentials)
import FoundationEssentials
#else
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#endif
import Logging
import Synchronization
import TwillAddress
import TwillNetlink
#if canImport(Glibc)
import Glibc
#endif

/// flannel's vxlan BackendData: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}` (exact field names).
public struct VXLANLeaseData: Codable, Sendable, Equatable {
    public var VNI: Int?
    public var VtepMAC: String

    public init(vni: Int, vtepMAC: MACAddress) {
        VNI = vni
        VtepMAC = vtepMAC.description
    }

    /// The JSON flannel writes, fields in flannel's order.
    public var json: Data {
        Data("{\"VNI\":\(VNI ?? 1),\"VtepMAC\":\"\(VtepMAC)\"}".utf8)
    }
}

/// flannel-compatible vxlan backend.
///
/// Device `flannel.<VNI>` on the external interface (local = its address, learning off, UDP
/// port 8472 by default), MTU = interface MTU - 50, address = this node's subnet network
/// address /32. Per peer lease of type vxlan: a permanent neighbour (peer subnet network
/// address -> peer VtepMAC) and a permanent FDB entry (VtepMAC -> peer PublicIP, NTF_SELF)
/// on the device, and the route `peer.subnet via <peer subnet network address> dev
/// flannel.<VNI> onlink`. With DirectRouting, peers on the same L2 segment get a plain
/// route via their PublicIP on the external interface instead.
///
/// Ownership: routes carry ``twillRouteProtocol``; on the device, which is Twill's, every
/// permanent neighbour and FDB entry is Twill's. ``reconcile(peers:)`` recreates a deleted
/// device (with the same MAC, so the published VtepMAC stays true) and makes routes,
/// neighbours and FDB entries match the leases exactly.
public final class VXLANBackend: Backend {
    public let type = "vxlan"
    public let vni: UInt32
    public let port: UInt16
    public let directRouting: Bool
    public let gbp: Bool
    public let learning: Bool
    /// `Backend.MTU`: the underlay MTU the encapsulated packets may use.
    public let outerMTU: Int?
    /// `flannel.<VNI>`.
    public let deviceName: String
    private let netlink: Netlink
    private let external: ExternalInterface
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var local: LocalLease?
        var vtepMAC: MACAddress?
        var deviceIndex: Int32?
        /// Peers this backend programmed, by subnet, with the MAC it used.
        var peers: [IPv4Network: Programmed] = [:]
    }

    private struct Programmed: Equatable {
        var publicIP: IPv4Address
        var mac: MACAddress?  // nil when routed directly
    }

    /// - Parameters:
    ///   - vni: VXLAN network identifier (flannel's `Backend.VNI`, default 1).
    ///   - port: UDP port (flannel's `Backend.Port`, default 8472, the kernel's default).
    ///   - directRouting: flannel's `Backend.DirectRouting`.
    ///   - gbp: flannel's `Backend.GBP` (the Group Based Policy extension on the device).
    ///   - learning: flannel's `Backend.Learning` (the kernel learns remote MACs too; the
    ///     permanent entries are programmed either way, as flannel does).
    ///   - mtu: flannel's `Backend.MTU`, the outer (underlay) MTU; the device gets 50 less.
    ///     nil: the external interface's.
    public init(netlink: Netlink, external: ExternalInterface, vni: UInt32 = 1, port: UInt16 = 8472,
                directRouting: Bool = false, gbp: Bool = false, learning: Bool = false, mtu: Int? = nil,
                logger: Logger = Logger(label: "twill.backend.vxlan")) {
        self.netlink = netlink
        self.external = external
        self.vni = vni
        self.port = port
        self.directRouting = directRouting
        self.gbp = gbp
        self.learning = learning
        self.outerMTU = mtu
        self.deviceName = "flannel.\(vni)"
        var l = logger
        l[metadataKey: "backend"] = "vxlan"
        l[metadataKey: "device"] = "flannel.\(vni)"
        self.logger = l
    }

    /// The overlay MTU: the external interface's less 50 (20 IPv4 + 8 UDP + 8 VXLAN + 14 Ethernet).
    public var mtu: Int { (outerMTU ?? external.mtu) - 50 }

    var currentNetwork: IPv4Network? { state.withLock { $0.local?.network } }
    var currentDeviceIndex: Int32? { state.withLock { $0.deviceIndex } }
    var externalIndex: Int32 { external.index }

    public func traffic() -> BackendTraffic { BackendTraffic(device: deviceName) }

    public func prepare() async throws -> BackendAdvert {
        let link = try state.withLock { st in try ensureDevice(&st) }
        guard let mac = link.mac else { throw BackendError(backend: type, "device \(deviceName) has no MAC address") }
        let data = VXLANLeaseData(vni: Int(vni), vtepMAC: mac).json
        logger.info("vxlan device ready", metadata: ["mac": "\(mac)", "mtu": "\(mtu)", "local": "\(external.localIP)"])
        return BackendAdvert(mtu: mtu, backendType: type, backendData: data)
    }

    public func start(local: LocalLease) async throws {
        try state.withLock { st in
            st.local = local
            _ = try ensureDevice(&st)
            try ensureAddress(&st)
        }
        logger.info("vxlan backend started", metadata: ["subnet": "\(local.subnet)", "network": "\(local.network)"])
    }

    // MARK: Device

    private func compatible(_ link: Link) -> Bool {
        guard link.kind == "vxlan", let v = link.vxlan else { return false }
        return v.vni == vni && v.port == port && v.local == external.localIP
            && v.underlayIndex == external.index && v.learning == learning && v.gbp == gbp
    }

    /// The device, created (or re-created when incompatible or gone), up, with the right MTU.
    private func ensureDevice(_ st: inout State) throws -> Link {
        var link = try netlink.linkIfPresent(named: deviceName)
        if let existing = link, !compatible(existing) {
            logger.warning("replacing an incompatible device", metadata: ["found": "\(existing)", "vxlan": "\(String(describing: existing.vxlan))"])
            try netlink.deleteLink(index: existing.index)
            link = nil
        }
        if link == nil {
            link = try netlink.createVXLAN(VXLANLinkSpec(
                name: deviceName, vni: vni, local: external.localIP, underlayIndex: external.index,
                port: port, learning: learning, gbp: gbp, mtu: mtu, mac: st.vtepMAC))
            logger.info("created vxlan device", metadata: ["mac": "\(link?.mac.map(\.description) ?? "?")"])
        }
        guard var dev = link else { throw BackendError(backend: type, "device \(deviceName) could not be created") }
        if dev.mtu != mtu { try netlink.setMTU(mtu, index: dev.index) }
        if !dev.isUp { try netlink.setLinkUp(index: dev.index) }
        dev = try netlink.link(index: dev.index)
        st.deviceIndex = dev.index
        if st.vtepMAC == nil { st.vtepMAC = dev.mac }
        return dev
    }

    /// The device holds exactly the subnet's network address /32 (as flannel's does).
    private func ensureAddress(_ st: inout State) throws {
        guard let local = st.local, let index = st.deviceIndex else { return }
        let want = local.subnet.address
        var present = false
        for a in try netlink.addresses(interfaceIndex: index, family: AF_INET) {
            if a.address == .v4(want) && a.prefixLength == 32 {
                present = true
            } else {
                try netlink.deleteAddress(a)
                logger.info("removed a foreign address from the device", metadata: ["address": "\(a.address)/\(a.prefixLength)"])
            }
        }
        if !present {
            try netlink.addAddress(InterfaceAddress(interfaceIndex: index, address: want, prefixLength: 32))
        }
    }

    // MARK: Peers

    /// What a peer needs, or nil (with the reason logged) when it is not ours to route.
    private func plan(_ peer: PeerLease, _ st: State, onLink: [IPv4Network]) -> Programmed? {
        guard peer.backendType == type else {
            logger.debug("ignoring lease of another backend type", metadata: ["peer": "\(peer.subnet)", "type": "\(peer.backendType ?? "none")"])
            return nil
        }
        if let local = st.local {
            if peer.subnet == local.subnet { return nil }
            guard local.network.contains(peer.subnet) else {
                logger.warning("ignoring lease outside the network", metadata: ["peer": "\(peer.subnet)", "network": "\(local.network)"])
                return nil
            }
        }
        if directRouting, onLink.contains(where: { $0.contains(peer.publicIP) }) {
            return Programmed(publicIP: peer.publicIP, mac: nil)
        }
        guard let raw = peer.backendData else {
            logger.error("skipping vxlan lease without BackendData", metadata: ["peer": "\(peer.subnet)", "publicIP": "\(peer.publicIP)"])
            return nil
        }
        let decoded: VXLANLeaseData
        do {
            decoded = try JSONDecoder().decode(VXLANLeaseData.self, from: raw)
        } catch {
            logger.error("skipping vxlan lease with malformed BackendData", metadata: [
                "peer": "\(peer.subnet)", "publicIP": "\(peer.publicIP)",
                "backendData": "\(String(decoding: raw, as: UTF8.self))", "error": "\(error)"])
            return nil
        }
        guard let mac = MACAddress(decoded.VtepMAC) else {
            logger.error("skipping vxlan lease with a bad VtepMAC", metadata: [
                "peer": "\(peer.subnet)", "publicIP": "\(peer.publicIP)", "VtepMAC": "\(decoded.VtepMAC)"])
            return nil
        }
        if let v = decoded.VNI, v != Int(vni) {
            logger.warning("peer advertises another VNI", metadata: ["peer": "\(peer.subnet)", "VNI": "\(v)", "ours": "\(vni)"])
        }
        return Programmed(publicIP: peer.publicIP, mac: mac)
    }

    private func desiredRoute(_ subnet: IPv4Network, _ p: Programmed, device: Int32) -> Route {
        if p.mac == nil {
            return Route(destination: subnet, gateway: p.publicIP, outputInterface: external.index)
        }
        return Route(destination: subnet, gateway: subnet.address, outputInterface: device, onLink: true)
    }

    private func onLinkNetworks() -> [IPv4Network] {
        guard directRouting else { return [] }
        return (try? KernelRoutes.onLinkNetworks(netlink, interfaceIndex: external.index)) ?? []
    }

    public func peerAdded(_ peer: PeerLease) async throws {
        let onLink = onLinkNetworks()
        try state.withLock { st in
            guard let p = plan(peer, st, onLink: onLink) else { return }
            guard let dev = st.deviceIndex else { throw BackendError(backend: type, "peer \(peer.subnet) added before prepare()") }
            if let old = st.peers[peer.subnet], old != p { try remove(peer.subnet, old, device: dev) }
            if let mac = p.mac {
                try netlink.replaceNeighbour(Neighbour(interfaceIndex: dev, address: .v4(peer.subnet.address), mac: mac))
                try netlink.replaceFDBEntry(FDBEntry(interfaceIndex: dev, mac: mac, destination: p.publicIP))
            }
            try netlink.replaceRoute(desiredRoute(peer.subnet, p, device: dev))
            st.peers[peer.subnet] = p
            logger.info("peer added", metadata: ["peer": "\(peer.subnet)", "publicIP": "\(p.publicIP)",
                                                 "vtepMAC": "\(p.mac.map(\.description) ?? "direct")"])
        }
    }

    public func peerRemoved(_ peer: PeerLease) async throws {
        let onLink = onLinkNetworks()
        try state.withLock { st in
            if let local = st.local, peer.subnet == local.subnet { return }
            let known = st.peers.removeValue(forKey: peer.subnet)
            guard let p = known ?? (peer.backendType == type ? plan(peer, st, onLink: onLink) : nil) else { return }
            guard let dev = st.deviceIndex else { return }
            try remove(peer.subnet, p, device: dev)
            logger.info("peer removed", metadata: ["peer": "\(peer.subnet)"])
        }
    }

    /// Deletes a peer's route, neighbour and FDB entry (each may already be gone).
    private func remove(_ subnet: IPv4Network, _ p: Programmed, device: Int32) throws {
        try KernelRoutes.deleteOwned(netlink, destination: subnet)
        guard let mac = p.mac else { return }
        do {
            try netlink.deleteNeighbour(Neighbour(interfaceIndex: device, address: .v4(subnet.address), mac: nil))
        } catch let e as NetlinkError where e.isNotFound {}
        do {
            try netlink.deleteFDBEntry(FDBEntry(interfaceIndex: device, mac: mac, destination: p.publicIP))
        } catch let e as NetlinkError where e.isNotFound {}
    }

    public func reconcile(peers: [PeerLease]) async throws {
        let onLink = onLinkNetworks()
        try state.withLock { st in
            guard let local = st.local else { throw BackendError(backend: type, "reconcile before start(local:)") }
            _ = try ensureDevice(&st)
            try ensureAddress(&st)
            guard let dev = st.deviceIndex else { return }
            var wanted: [IPv4Network: Programmed] = [:]
            for peer in peers { if let p = plan(peer, st, onLink: onLink) { wanted[peer.subnet] = p } }
            st.peers = wanted
            var failures: [String] = []

            // Neighbours: exactly one permanent entry per vxlan peer on the device.
            var wantNeigh: [IPv4Address: MACAddress] = [:]
            var wantFDB: [MACAddress: IPv4Address] = [:]
            for (subnet, p) in wanted { if let mac = p.mac { wantNeigh[subnet.address] = mac; wantFDB[mac] = p.publicIP } }
            do {
                var have: Set<IPv4Address> = []
                for n in try netlink.neighbours(interfaceIndex: dev) where n.isPermanent {
                    guard let ip = n.address.v4, let mac = wantNeigh[ip], n.mac == mac else {
                        if let ip = n.address.v4, wantNeigh[ip] != nil { continue }  // wrong MAC: replaced below
                        try netlink.deleteNeighbour(n)
                        logger.info("removed a stale neighbour", metadata: ["neighbour": "\(n)"])
                        continue
                    }
                    have.insert(ip)
                }
                for (ip, mac) in wantNeigh where !have.contains(ip) {
                    try netlink.replaceNeighbour(Neighbour(interfaceIndex: dev, address: .v4(ip), mac: mac))
                    logger.info("restored a neighbour", metadata: ["ip": "\(ip)", "mac": "\(mac)"])
                }
            } catch {
                failures.append("\(error)")
            }
            // FDB: exactly one permanent NTF_SELF entry per vxlan peer MAC.
            do {
                var have: Set<MACAddress> = []
                for e in try netlink.fdbEntries(interfaceIndex: dev) where e.isPermanent {
                    if let dst = wantFDB[e.mac], e.destination == dst, !have.contains(e.mac) {
                        have.insert(e.mac)
                        continue
                    }
                    try netlink.deleteFDBEntry(e)
                    logger.info("removed a stale fdb entry", metadata: ["fdb": "\(e)"])
                }
                for (mac, dst) in wantFDB where !have.contains(mac) {
                    try netlink.replaceFDBEntry(FDBEntry(interfaceIndex: dev, mac: mac, destination: dst))
                    logger.info("restored an fdb entry", metadata: ["mac": "\(mac)", "dst": "\(dst)"])
                }
            } catch {
                failures.append("\(error)")
            }
            let routes = wanted.map { desiredRoute($0.key, $0.value, device: dev) }
            failures += KernelRoutes.reconcile(netlink, network: local.network, desired: routes, logger: logger)
            if !failures.isEmpty {
                for f in failures { logger.error("reconcile failure", metadata: ["error": "\(f)"]) }
                throw BackendError(backend: type, "reconcile left \(failures.count) problem(s): \(failures.joined(separator: "; "))")
            }
        }
    }

    public func stop() async {
        state.withLock { st in
            for subnet in st.peers.keys {
                try? KernelRoutes.deleteOwned(netlink, destination: subnet)
            }
            st.peers = [:]
            if let dev = st.deviceIndex {
                do {
                    try netlink.deleteLink(index: dev)
                } catch let e as NetlinkError where e.isNotFound {
                } catch {
                    logger.warning("could not delete the vxlan device on stop", metadata: ["error": "\(error)"])
                }
            }
            st.deviceIndex = nil
        }
    }
}
