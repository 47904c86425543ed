import Logging
import Synchronization
import TwillAddress
import TwillNetlink
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// The wireguard backend's kernel engine: a device of kind "wireguard" configured over
/// generic netlink, the kernel doing the crypto. Peers are changed one by one (a peer that
/// stays keeps its session); a device that disappears is made again with every peer.
final class KernelWireGuardDevice: Sendable {
    let name: String
    let listenPort: UInt16
    private let netlink: any KernelRouting
    private let wireGuard: WireGuardNetlink
    private let privateKey: Secret
    private let presharedKey: Secret?
    private let logger: Logger
    /// What the device was given, by public key.
    private let programmed = Mutex<[[UInt8]: WireGuardPeerConfig]>([:])

    init(
        netlink: any KernelRouting, wireGuard: WireGuardNetlink, name: String, privateKey: Secret, presharedKey: Secret?,
        listenPort: UInt16,
        logger: Logger
    ) {
        self.netlink = netlink
        self.wireGuard = wireGuard
        self.name = name
        self.privateKey = privateKey
        self.presharedKey = presharedKey
        self.listenPort = listenPort
        self.logger = logger
    }

    /// Makes the device, or adopts the one an earlier run left (its sessions go on: the same
    /// key is set again, peers are diffed, not replaced), keys it, gives it exactly the
    /// subnet's address, `mtu`, and the network's route, and programs `peers`. Returns its index.
    func up(local: NodeAddressing, mtu: Int, peers: [WireGuardPeerConfig]) throws -> Int32 {
        // The registry runs wireguard for IPv4 networks only (BackendKind.families).
        guard let v4 = local.v4 else { throw BackendError(backend: "wireguard", "the kernel engine carries IPv4 only") }
        var link = try netlink.linkIfPresent(named: name)
        if let stale = link, stale.kind != "wireguard" {
            logger.warning("replacing a device of kind \(stale.kind ?? "unknown") named \(name)")
            try netlink.deleteLink(index: stale.index)
            link = nil
        }
        let adopted = link != nil
        let device = try link ?? netlink.createLink(name: name, kind: "wireguard", mtu: mtu)
        do {
            try privateKey.withBytes { try wireGuard.setDevice(name, privateKey: $0, listenPort: listenPort, replacePeers: !adopted) }
            if device.mtu != mtu { try netlink.setMTU(mtu, index: device.index) }
            try KernelAddresses.ensureExactly(
                netlink, index: device.index, family: AF_INET,
                [
                    InterfaceAddress(interfaceIndex: device.index, address: .v4(v4.subnet.address), prefixLength: 32)
                ])
            if !device.isUp { try netlink.setLinkUp(index: device.index) }
            try netlink.replaceRoute(UDPBackend.networkRoute(v4.network, index: device.index))
        } catch {
            if !adopted { try? netlink.deleteLink(index: device.index) }
            throw error
        }
        // An adopted device's peers are unknown in detail: each is set again (which keeps its
        // session) and those no lease names are removed.
        let present = adopted ? status().map(\.publicKey) : []
        programmed.withLock { programmed in
            programmed = [:]
            for key in present {
                programmed[key] = WireGuardPeerConfig(publicKey: key, endpoint: WireGuardEndpoint(address: .any, port: 0), allowedIPs: .all)
            }
        }
        if adopted { logger.info("adopted the kernel wireguard device an earlier run left", metadata: ["peers": "\(present.count)"]) }
        try setPeers(peers)
        return device.index
    }

    /// Makes the device's peers `configs`: new and changed ones set, gone ones removed.
    func setPeers(_ configs: [WireGuardPeerConfig]) throws {
        let wanted = Dictionary(configs.map { ($0.publicKey, $0) }, uniquingKeysWith: { a, _ in a })
        let before = programmed.withLock { $0 }
        var failures: [String] = []
        var now = before
        for (key, _) in before where wanted[key] == nil {
            // One that could not be removed stays on the list, for the next call to try again.
            do {
                try wireGuard.removePeer(name, publicKey: key)
                now[key] = nil
            } catch {
                failures.append("\(error)")
            }
        }
        for (key, config) in wanted where before[key] != config {
            let peer = WireGuardKernelPeer(
                publicKey: key, endpoint: config.endpoint.address, port: config.endpoint.port,
                allowedIPs: [config.allowedIPs],
                persistentKeepalive: UInt16(clamping: config.persistentKeepalive.map { $0.components.seconds } ?? 0))
            do {
                if let presharedKey {
                    try presharedKey.withBytes { try wireGuard.setPeer(name, peer, presharedKey: $0) }
                } else {
                    try wireGuard.setPeer(name, peer, presharedKey: nil)
                }
                now[key] = config
            } catch {
                failures.append("\(error)")
            }
        }
        programmed.withLock { $0 = now }
        if !failures.isEmpty { throw BackendError(backend: "wireguard", failures.joined(separator: "; ")) }
    }

    /// The kernel's view of each peer: endpoint, last handshake, bytes.
    func status() -> [WireGuardKernelPeerStatus] { (try? wireGuard.peers(name)) ?? [] }

    /// Deletes the device (its route and peers go with it).
    func down() {
        if let link = try? netlink.link(named: name) {
            do { try netlink.deleteLink(index: link.index) } catch {
                logger.warning("cannot delete the wireguard device", metadata: ["error": "\(error)"])
            }
        }
        programmed.withLock { $0 = [:] }
    }
}
