import Logging
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
/// Dual stack (flannel's): a second device `flannel-v6.<VNI>` tunnels over the IPv6 underlay
/// (local = the interface's IPv6 address), holds the IPv6 subnet's network address /128 and
/// publishes its MAC in BackendV6Data; IPv6 peers get the same neighbour, FDB entry (to their
/// PublicIPv6) and onlink route on it. Its MTU is the underlay's less 70 (a 40-byte IPv6
/// header), and so is FLANNEL_MTU, so that a pod's packets fit either tunnel (flannel takes
/// 50 for both, which an IPv6 underlay at full MTU cannot carry).
///
/// Ownership: routes carry ``twillRouteProtocol``; on the devices, which are Twill's, every
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
    /// The families the network runs: `flannel.<VNI>` for IPv4, `flannel-v6.<VNI>` for IPv6.
    public let families: IPFamilies
    public var ipv4: Bool { families.contains(.ipv4) }
    public var ipv6: Bool { families.contains(.ipv6) }
    /// `Backend.MTU`: the underlay MTU the encapsulated packets may use.
    public let outerMTU: Int?
    /// `flannel.<VNI>`.
    public let deviceName: String
    /// `flannel-v6.<VNI>`.
    public let deviceName6: String
    private let netlink: any KernelRouting
    private let external: ExternalInterface
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var local: NodeAddressing?
        var v4 = Device()
        var v6 = Device()
        /// Peers this backend programmed, by subnet, with the MAC it used.
        var peers: [IPv4Network: Programmed] = [:]
        var peers6: [IPv6Network: Programmed] = [:]
    }

    private struct Device {
        var vtepMAC: MACAddress?
        var index: Int32?
    }

    private struct Programmed: Equatable {
        var publicIP: IPAddress
        var mac: MACAddress? // nil when routed directly
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
    ///   - families: the families the network runs (`EnableIPv4`, `EnableIPv6`).
    public init(
        netlink: any KernelRouting, external: ExternalInterface, vni: UInt32 = 1, port: UInt16 = 8472,
        directRouting: Bool = false, gbp: Bool = false, learning: Bool = false, mtu: Int? = nil,
        families: IPFamilies = .ipv4, logger: Logger = Logger(label: "twill.backend.vxlan")
    ) {
        self.families = families
        self.netlink = netlink
        self.external = external
        self.vni = vni
        self.port = port
        self.directRouting = directRouting
        self.gbp = gbp
        self.learning = learning
        self.outerMTU = mtu
        self.deviceName = "flannel.\(vni)"
        self.deviceName6 = "flannel-v6.\(vni)"
        var l = logger
        l[metadataKey: "backend"] = "vxlan"
        l[metadataKey: "device"] = "flannel.\(vni)"
        self.logger = l
    }

    /// The IPv4 device's MTU: the external interface's less 50 (20 IPv4 + 8 UDP + 8 VXLAN + 14 Ethernet).
    public var deviceMTU: Int { (outerMTU ?? external.mtu) - 50 }
    /// The IPv6 device's MTU: 20 more for the IPv6 header.
    public var deviceMTU6: Int { (outerMTU ?? external.mtu) - 70 }
    /// The overlay MTU (FLANNEL_MTU): what fits every tunnel the node uses.
    public var mtu: Int { ipv6 || !ipv4 ? deviceMTU6 : deviceMTU }

    var currentNetwork: IPv4Network? { ipv4 ? state.withLock { $0.local?.v4?.network } : nil }
    var currentNetwork6: IPv6Network? { state.withLock { $0.local?.network6 } }
    var currentDeviceIndices: Set<Int32> { state.withLock { Set([$0.v4.index, $0.v6.index].compactMap { $0 }) } }
    var externalIndex: Int32 { external.index }

    public func traffic() -> BackendTraffic {
        BackendTraffic(device: [ipv4 ? deviceName : nil, ipv6 ? deviceName6 : nil].compactMap { $0 }.joined(separator: ","))
    }

    // The Backend methods: each runs its netlink work off the cooperative pool (the
    // protocol's rule), in the synchronous functions below.
    public func prepare() async throws -> BackendAdvert { try await Blocking.run { [self] in try prepareNow() } }
    public func start(local: NodeAddressing) async throws { try await Blocking.run { [self] in try startNow(local: local) } }
    public func peerAdded(_ peer: PeerLease) async throws { try await Blocking.run { [self] in try addNow(peer) } }
    public func peerRemoved(_ peer: PeerLease) async throws { try await Blocking.run { [self] in try removeNow(peer) } }
    public func reconcile(peers: [PeerLease]) async throws { try await Blocking.run { [self] in try reconcileNow(peers: peers) } }
    public func teardown() async { await Blocking.run { [self] in teardownNow() } }

    private func prepareNow() throws -> BackendAdvert {
        if ipv6, external.localIPv6 == nil {
            throw BackendError(
                backend: type,
                """
                EnableIPv6 is set but interface \(external.name) has no global IPv6 address to tunnel from; \
                give it one, or choose another interface with --iface
                """)
        }
        let (link, link6) = try state.withLock { st in (ipv4 ? try ensureDevice(&st) : nil, try ensureDevice6(&st)) }
        var data: Data?
        if let link {
            guard let mac = link.mac else { throw BackendError(backend: type, "device \(deviceName) has no MAC address") }
            data = VXLANLeaseData(vni: Int(vni), vtepMAC: mac).json
        }
        var data6: Data?
        if let link6 {
            guard let mac6 = link6.mac else { throw BackendError(backend: type, "device \(deviceName6) has no MAC address") }
            data6 = VXLANLeaseData(vni: Int(vni), vtepMAC: mac6).json
        }
        logger.info(
            "vxlan device ready",
            metadata: [
                "mac": "\(link?.mac.map(\.description) ?? "-")", "mtu": "\(mtu)", "local": "\(external.localIP)",
                "local6": "\(link6 == nil ? "-" : external.localIPv6.map(\.description) ?? "-")",
            ])
        return BackendAdvert(mtu: mtu, backendType: type, backendData: data, backendV6Data: data6)
    }

    private func startNow(local: NodeAddressing) throws {
        try state.withLock { st in
            st.local = local
            if ipv4 { _ = try ensureDevice(&st) }
            _ = try ensureDevice6(&st)
            try ensureAddresses(&st)
        }
        logger.info(
            "vxlan backend started",
            metadata: [
                "subnet": "\(local.v4.map { "\($0.subnet)" } ?? "-")", "network": "\(local.v4.map { "\($0.network)" } ?? "-")",
                "subnet6": "\(local.subnet6.map(\.description) ?? "-")",
            ])
    }

    // MARK: Devices

    private func compatible(_ link: Link, local: IPv4Address?, local6: IPv6Address?) -> Bool {
        guard link.kind == "vxlan", let v = link.vxlan else { return false }
        return v.vni == vni && v.port == port && v.local == local && v.local6 == local6
            && v.underlayIndex == external.index && v.learning == learning && v.gbp == gbp
    }

    private func ensureDevice(_ st: inout State) throws -> Link {
        try ensure(name: deviceName, local: external.localIP, local6: nil, mtu: deviceMTU, &st.v4)
    }

    /// The IPv6 device, when the network is dual stack and the interface has an IPv6 address.
    /// Without IPv6 (now), one left from an earlier run goes; so does the IPv4 device on an
    /// IPv6-only network.
    private func ensureDevice6(_ st: inout State) throws -> Link? {
        for (name, unwanted) in [(deviceName6, !ipv6), (deviceName, !ipv4)] where unwanted {
            if let stale = try netlink.linkIfPresent(named: name), stale.kind == "vxlan" {
                try netlink.deleteLink(index: stale.index)
                logger.info("removed a vxlan device this network config does not use", metadata: ["name": "\(name)"])
            }
        }
        guard ipv6, let local6 = external.localIPv6 else { return nil }
        let link = try ensure(name: deviceName6, local: nil, local6: local6, mtu: deviceMTU6, &st.v6)
        // As flannel: router advertisements on the overlay are never wanted.
        try? Syscall.setSysctl("net/ipv6/conf/\(deviceName6)/accept_ra", "0")
        return link
    }

    /// A device, created (or re-created when incompatible or gone), up, with the right MTU.
    private func ensure(name: String, local: IPv4Address?, local6: IPv6Address?, mtu: Int, _ device: inout Device) throws -> Link {
        var link = try netlink.linkIfPresent(named: name)
        if let existing = link, !compatible(existing, local: local, local6: local6) {
            logger.warning(
                "replacing an incompatible device", metadata: ["found": "\(existing)", "vxlan": "\(String(describing: existing.vxlan))"])
            try netlink.deleteLink(index: existing.index)
            link = nil
        }
        if link == nil {
            link = try netlink.createVXLAN(
                VXLANLinkSpec(
                    name: name, vni: vni, local: local, local6: local6, underlayIndex: external.index,
                    port: port, learning: learning, gbp: gbp, mtu: mtu, mac: device.vtepMAC))
            logger.info("created vxlan device", metadata: ["name": "\(name)", "mac": "\(link?.mac.map(\.description) ?? "?")"])
        }
        guard var dev = link else { throw BackendError(backend: type, "device \(name) could not be created") }
        if dev.mtu != mtu { try netlink.setMTU(mtu, index: dev.index) }
        if !dev.isUp { try netlink.setLinkUp(index: dev.index) }
        dev = try netlink.link(index: dev.index)
        device.index = dev.index
        if device.vtepMAC == nil { device.vtepMAC = dev.mac }
        return dev
    }

    /// Each device holds exactly its subnet's network address (/32, /128), as flannel's do.
    private func ensureAddresses(_ st: inout State) throws {
        guard let local = st.local else { return }
        if let index = st.v4.index, let v4 = local.v4 {
            try ensureAddress(.v4(v4.subnet.address), prefixLength: 32, family: AF_INET, on: index)
        }
        if let index = st.v6.index, let subnet6 = local.subnet6 {
            try ensureAddress(.v6(subnet6.address), prefixLength: 128, family: AF_INET6, on: index)
        }
    }

    private func ensureAddress(_ want: IPAddress, prefixLength: Int, family: Int32, on index: Int32) throws {
        // The subnet's own address is unique by construction: no DAD, usable at once.
        let flags = want.v6 == nil ? 0 : InterfaceAddress.noDAD
        if try KernelAddresses.ensureExactly(
            netlink, index: index, family: family,
            [
                InterfaceAddress(interfaceIndex: index, address: want, prefixLength: prefixLength, flags: flags)
            ])
        {
            logger.info("device address set", metadata: ["address": "\(want)/\(prefixLength)"])
        }
    }

    // MARK: Peers

    /// What a peer needs, or nil (with the reason logged) when it is not ours to route.
    private func plan(_ peer: PeerLease, _ st: State, onLink: [IPv4Network]) -> Programmed? {
        guard peer.backendType == type else {
            logger.debug(
                "ignoring lease of another backend type", metadata: ["peer": "\(peer.subnet)", "type": "\(peer.backendType ?? "none")"])
            return nil
        }
        if let v4 = st.local?.v4 {
            if peer.subnet == v4.subnet { return nil }
            guard v4.network.contains(peer.subnet) else {
                logger.warning("ignoring lease outside the network", metadata: ["peer": "\(peer.subnet)", "network": "\(v4.network)"])
                return nil
            }
        }
        if directRouting, onLink.contains(where: { $0.contains(peer.publicIP) }) {
            return Programmed(publicIP: .v4(peer.publicIP), mac: nil)
        }
        guard let mac = vtepMAC(peer.backendData, field: "BackendData", peer: peer) else { return nil }
        return Programmed(publicIP: .v4(peer.publicIP), mac: mac)
    }

    /// The IPv6 side of a peer, or nil when there is none to route (logged when the lease is
    /// dual stack but incomplete).
    private func plan6(_ peer: PeerLease, _ st: State, onLink: [IPv6Network], quiet: Bool = false) -> Programmed? {
        guard peer.backendType == type, let local = st.local, let network6 = local.network6, st.v6.index != nil,
            let subnet6 = peer.subnet6, subnet6 != local.subnet6, network6.contains(subnet6)
        else { return nil }
        guard let via = peer.publicIPv6 else {
            logger.log(
                level: quiet ? .debug : .warning, "peer's IPv6 subnet not routed: its lease has no PublicIPv6",
                metadata: ["peer": "\(subnet6)"])
            return nil
        }
        if directRouting, onLink.contains(where: { $0.contains(via) }) {
            return Programmed(publicIP: .v6(via), mac: nil)
        }
        guard let mac = vtepMAC(peer.backendV6Data, field: "BackendV6Data", peer: peer) else { return nil }
        return Programmed(publicIP: .v6(via), mac: mac)
    }

    /// The VtepMAC a lease's BackendData (or BackendV6Data) names, or nil, logged.
    private func vtepMAC(_ raw: Data?, field: String, peer: PeerLease) -> MACAddress? {
        guard let raw else {
            logger.error("skipping vxlan lease without \(field)", metadata: ["peer": "\(peer.subnet)", "publicIP": "\(peer.publicIP)"])
            return nil
        }
        let decoded: VXLANLeaseData
        do {
            decoded = try JSONDecoder().decode(VXLANLeaseData.self, from: raw)
        } catch {
            logger.error(
                "skipping vxlan lease with malformed \(field)",
                metadata: [
                    "peer": "\(peer.subnet)", "publicIP": "\(peer.publicIP)",
                    "backendData": "\(String(decoding: raw, as: UTF8.self))", "error": "\(error)",
                ])
            return nil
        }
        guard let mac = MACAddress(decoded.VtepMAC) else {
            logger.error(
                "skipping vxlan lease with a bad VtepMAC",
                metadata: [
                    "peer": "\(peer.subnet)", "publicIP": "\(peer.publicIP)", "field": "\(field)", "VtepMAC": "\(decoded.VtepMAC)",
                ])
            return nil
        }
        if let v = decoded.VNI, v != Int(vni) {
            logger.warning("peer advertises another VNI", metadata: ["peer": "\(peer.subnet)", "VNI": "\(v)", "ours": "\(vni)"])
        }
        return mac
    }

    private func desiredRoute(_ subnet: IPv4Network, _ p: Programmed, device: Int32) -> Route {
        if p.mac == nil {
            return Route(destination: subnet, gateway: p.publicIP.v4, outputInterface: external.index)
        }
        return Route(destination: subnet, gateway: subnet.address, outputInterface: device, onLink: true)
    }

    private func desiredRoute6(_ subnet: IPv6Network, _ p: Programmed, device: Int32) -> Route6 {
        if p.mac == nil {
            return Route6(destination: subnet, gateway: p.publicIP.v6, outputInterface: external.index)
        }
        return Route6(destination: subnet, gateway: subnet.address, outputInterface: device, onLink: true)
    }

    private func onLinkNetworks() -> [IPv4Network] {
        guard directRouting else { return [] }
        return (try? KernelRoutes.onLinkNetworks(netlink, interfaceIndex: external.index)) ?? []
    }

    private func onLinkNetworks6() -> [IPv6Network] {
        guard directRouting, ipv6 else { return [] }
        return (try? KernelRoutes.onLinkNetworks6(netlink, interfaceIndex: external.index)) ?? []
    }

    private func addNow(_ peer: PeerLease) throws {
        let onLink = onLinkNetworks()
        let onLink6 = onLinkNetworks6()
        try state.withLock { st in
            if ipv4 {
                guard let p = plan(peer, st, onLink: onLink) else { return }
                guard let dev = st.v4.index else { throw BackendError(backend: type, "peer \(peer.subnet) added before prepare()") }
                if let old = st.peers[peer.subnet], old != p { try remove(peer.subnet, old, device: dev) }
                if let mac = p.mac {
                    try netlink.replaceNeighbour(Neighbour(interfaceIndex: dev, address: .v4(peer.subnet.address), mac: mac))
                    try netlink.replaceFDBEntry(FDBEntry(interfaceIndex: dev, mac: mac, destination: p.publicIP))
                }
                try netlink.replaceRoute(desiredRoute(peer.subnet, p, device: dev))
                st.peers[peer.subnet] = p
                logger.info(
                    "peer added",
                    metadata: [
                        "peer": "\(peer.subnet)", "publicIP": "\(p.publicIP)",
                        "vtepMAC": "\(p.mac.map(\.description) ?? "direct")",
                    ])
            }
            if let subnet6 = peer.subnet6, let dev6 = st.v6.index {
                let p6 = plan6(peer, st, onLink: onLink6)
                if let old = st.peers6[subnet6], old != p6 {
                    try remove6(subnet6, old, device: dev6)
                    st.peers6[subnet6] = nil
                }
                guard let p6 else { return }
                if let mac = p6.mac {
                    try netlink.replaceNeighbour(Neighbour(interfaceIndex: dev6, address: .v6(subnet6.address), mac: mac))
                    try netlink.replaceFDBEntry(FDBEntry(interfaceIndex: dev6, mac: mac, destination: p6.publicIP))
                }
                try netlink.replaceRoute6(desiredRoute6(subnet6, p6, device: dev6))
                st.peers6[subnet6] = p6
                logger.info(
                    "IPv6 peer added",
                    metadata: [
                        "peer": "\(subnet6)", "publicIP": "\(p6.publicIP)",
                        "vtepMAC": "\(p6.mac.map(\.description) ?? "direct")",
                    ])
            }
        }
    }

    private func removeNow(_ peer: PeerLease) throws {
        let onLink = onLinkNetworks()
        try state.withLock { st in
            if let subnet6 = peer.subnet6, subnet6 != st.local?.subnet6, let p6 = st.peers6.removeValue(forKey: subnet6),
                let dev6 = st.v6.index
            {
                try remove6(subnet6, p6, device: dev6)
                logger.info("IPv6 peer removed", metadata: ["peer": "\(subnet6)"])
            }
            guard ipv4 else { return }
            if let local = st.local, peer.subnet == local.ipv4Subnet { return }
            let known = st.peers.removeValue(forKey: peer.subnet)
            guard let p = known ?? (peer.backendType == type ? plan(peer, st, onLink: onLink) : nil) else { return }
            guard let dev = st.v4.index else { return }
            try remove(peer.subnet, p, device: dev)
            logger.info("peer removed", metadata: ["peer": "\(peer.subnet)"])
        }
    }

    /// Deletes a peer's route, neighbour and FDB entry (each may already be gone).
    private func remove(_ subnet: IPv4Network, _ p: Programmed, device: Int32) throws {
        try KernelRoutes.deleteOwned(netlink, destination: subnet)
        guard let mac = p.mac else { return }
        try removeEntries(.v4(subnet.address), mac: mac, publicIP: p.publicIP, device: device)
    }

    private func remove6(_ subnet: IPv6Network, _ p: Programmed, device: Int32) throws {
        try KernelRoutes.deleteOwned6(netlink, destination: subnet)
        guard let mac = p.mac else { return }
        try removeEntries(.v6(subnet.address), mac: mac, publicIP: p.publicIP, device: device)
    }

    private func removeEntries(_ gateway: IPAddress, mac: MACAddress, publicIP: IPAddress, device: Int32) throws {
        do {
            try netlink.deleteNeighbour(Neighbour(interfaceIndex: device, address: gateway, mac: nil))
        } catch let e as NetlinkError where e.isNotFound {}
        do {
            try netlink.deleteFDBEntry(FDBEntry(interfaceIndex: device, mac: mac, destination: publicIP))
        } catch let e as NetlinkError where e.isNotFound {}
    }

    private func reconcileNow(peers: [PeerLease]) throws {
        let onLink = onLinkNetworks()
        let onLink6 = onLinkNetworks6()
        try state.withLock { st in
            guard let local = st.local else { throw BackendError(backend: type, "reconcile before start(local:)") }
            if ipv4 { _ = try ensureDevice(&st) }
            _ = try ensureDevice6(&st)
            try ensureAddresses(&st)
            var wanted: [IPv4Network: Programmed] = [:]
            var wanted6: [IPv6Network: Programmed] = [:]
            for peer in peers {
                if ipv4 {
                    // Dual stack: a peer whose IPv4 side is not ours to route gets no IPv6 side either.
                    guard let p = plan(peer, st, onLink: onLink) else { continue }
                    wanted[peer.subnet] = p
                }
                if let subnet6 = peer.subnet6, let p6 = plan6(peer, st, onLink: onLink6, quiet: true) { wanted6[subnet6] = p6 }
            }
            st.peers = wanted
            st.peers6 = wanted6
            var failures: [String] = []
            func entries<K>(_ w: [K: Programmed], _ address: (K) -> IPAddress) -> ([IPAddress: MACAddress], [MACAddress: IPAddress]) {
                var neigh: [IPAddress: MACAddress] = [:]
                var fdb: [MACAddress: IPAddress] = [:]
                for (subnet, p) in w {
                    if let mac = p.mac {
                        neigh[address(subnet)] = mac
                        fdb[mac] = p.publicIP
                    }
                }
                return (neigh, fdb)
            }
            if ipv4, let dev = st.v4.index, let v4 = local.v4 {
                let (neigh, fdb) = entries(wanted) { .v4($0.address) }
                failures += reconcileEntries(device: dev, neighbours: neigh, fdb: fdb)
                let routes = wanted.map { desiredRoute($0.key, $0.value, device: dev) }
                failures += KernelRoutes.reconcile(netlink, network: v4.network, desired: routes, logger: logger)
            } else if !ipv4 {
                // IPv6-only (now): Twill's IPv4 routes of an earlier run (DirectRouting ones outlive the device).
                failures += KernelRoutes.reconcile(netlink, network: .all, desired: [], logger: logger)
            }
            if let network6 = local.network6, let dev6 = st.v6.index {
                let (neigh6, fdb6) = entries(wanted6) { .v6($0.address) }
                failures += reconcileEntries(device: dev6, neighbours: neigh6, fdb: fdb6)
                let routes6 = wanted6.map { desiredRoute6($0.key, $0.value, device: dev6) }
                failures += KernelRoutes.reconcile6(netlink, network: network6, desired: routes6, logger: logger)
            } else if !ipv6 {
                // Twill's IPv6 routes of an earlier dual-stack run (DirectRouting ones outlive the device).
                failures += KernelRoutes.reconcile6(netlink, network: .all, desired: [], logger: logger)
            }
            if !failures.isEmpty {
                for f in failures { logger.error("reconcile failure", metadata: ["error": "\(f)"]) }
                throw BackendError(backend: type, "reconcile left \(failures.count) problem(s): \(failures.joined(separator: "; "))")
            }
        }
    }

    /// Makes a device's permanent neighbours and FDB entries exactly these (one per peer).
    private func reconcileEntries(device dev: Int32, neighbours wantNeigh: [IPAddress: MACAddress], fdb wantFDB: [MACAddress: IPAddress])
        -> [String]
    {
        var failures: [String] = []
        do {
            var have: Set<IPAddress> = []
            for n in try netlink.neighbours(interfaceIndex: dev) where n.isPermanent {
                guard let mac = wantNeigh[n.address], n.mac == mac else {
                    if wantNeigh[n.address] != nil { continue } // wrong MAC: replaced below
                    try netlink.deleteNeighbour(n)
                    logger.info("removed a stale neighbour", metadata: ["neighbour": "\(n)"])
                    continue
                }
                have.insert(n.address)
            }
            for (ip, mac) in wantNeigh where !have.contains(ip) {
                try netlink.replaceNeighbour(Neighbour(interfaceIndex: dev, address: ip, mac: mac))
                logger.info("restored a neighbour", metadata: ["ip": "\(ip)", "mac": "\(mac)"])
            }
        } catch {
            failures.append("\(error)")
        }
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
        return failures
    }

    /// Leaves the devices, their neighbours and FDB entries and the routes in place: the node
    /// goes on forwarding; the next start adopts them (a device whose settings match is kept).
    public func stop() async {
        state.withLock { st in
            st.peers = [:]
            st.peers6 = [:]
        }
    }

    public var devices: [String] { [ipv4 ? deviceName : nil, ipv6 ? deviceName6 : nil].compactMap { $0 } }

    /// Removes the routes and deletes the devices (their neighbours and FDB entries go with them).
    private func teardownNow() {
        state.withLock { st in
            for subnet in st.peers.keys {
                try? KernelRoutes.deleteOwned(netlink, destination: subnet)
            }
            for subnet in st.peers6.keys {
                try? KernelRoutes.deleteOwned6(netlink, destination: subnet)
            }
            st.peers = [:]
            st.peers6 = [:]
            for dev in [st.v4.index, st.v6.index].compactMap({ $0 }) {
                do {
                    try netlink.deleteLink(index: dev)
                } catch let e as NetlinkError where e.isNotFound {
                } catch {
                    logger.warning("could not delete a vxlan device", metadata: ["error": "\(error)"])
                }
            }
            st.v4.index = nil
            st.v6.index = nil
        }
    }
}
