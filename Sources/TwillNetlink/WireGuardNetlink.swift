import CNetlink
import Synchronization
import TwillAddress
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// One peer of a kernel WireGuard device, as it is set.
public struct WireGuardKernelPeer: Sendable, Equatable {
    public var publicKey: [UInt8]
    public var endpoint: IPv4Address
    public var port: UInt16
    public var allowedIPs: [IPv4Network]
    /// Seconds; 0 for none.
    public var persistentKeepalive: UInt16

    public init(publicKey: [UInt8], endpoint: IPv4Address, port: UInt16, allowedIPs: [IPv4Network], persistentKeepalive: UInt16 = 0) {
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.port = port
        self.allowedIPs = allowedIPs
        self.persistentKeepalive = persistentKeepalive
    }
}

/// One peer of a kernel WireGuard device, as the kernel reports it.
public struct WireGuardKernelPeerStatus: Sendable, Equatable {
    public var publicKey: [UInt8]
    public var endpoint: String?
    /// Unix seconds of the last handshake; nil for none.
    public var lastHandshake: Int64?
    public var rxBytes: UInt64
    public var txBytes: UInt64
}

/// The kernel's WireGuard over generic netlink (family "wireguard", version 1): configures a
/// device of kind "wireguard" (made with ``Netlink/createLink(name:kind:mtu:)``) and reads
/// its peers. Present only where the kernel has the module: ``init(namespacePath:)`` throws
/// a ``NetlinkError`` with ENOENT otherwise.
public final class WireGuardNetlink: Sendable {
    // include/uapi/linux/wireguard.h
    static let version: UInt8 = 1
    static let commandGetDevice: UInt8 = 0
    static let commandSetDevice: UInt8 = 1
    enum Device {
        static let ifname = 2, privateKey = 3, flags = 5, listenPort = 6, peers = 8
        static let replacePeers: UInt32 = 1
    }
    enum Peer {
        static let publicKey = 1, presharedKey = 2, flags = 3, endpoint = 4, keepalive = 5, lastHandshake = 6, rxBytes = 7, txBytes = 8,
            allowedIPs = 9
        static let removeMe: UInt32 = 1, replaceAllowedIPs: UInt32 = 2
    }
    enum AllowedIP { static let family = 1, address = 2, cidr = 3 }

    private let socket: Mutex<NetlinkSocket>
    /// The family's id, resolved at init.
    public let familyID: UInt16

    /// Opens a generic netlink socket (in the namespace at `namespacePath`, or the caller's)
    /// and resolves the "wireguard" family.
    public init(namespacePath: String? = nil) throws {
        let open: @Sendable () throws -> (NetlinkSocket, UInt16) = {
            do throws(RawFailure) {
                let s = try NetlinkSocket(groups: 0, family: NETLINK_GENERIC)
                return (s, try Self.resolveFamily(s, name: "wireguard"))
            } catch {
                throw NetlinkError(object: "generic netlink family \"wireguard\"", errno: error.errno, kernelMessage: error.kernelMessage)
            }
        }
        let (s, id) =
            try namespacePath.map { path in
                do { return try NetworkNamespace.run(inNamespace: path, open) } catch let e as SystemError {
                    throw NetlinkError(object: "network namespace \(path)", errno: e.errno.rawValue)
                }
            } ?? open()
        socket = Mutex(s)
        familyID = id
    }

    /// Whether the kernel (of the caller's namespace) has WireGuard.
    public static var isAvailable: Bool { (try? WireGuardNetlink()) != nil }

    static func resolveFamily(_ s: NetlinkSocket, name: String) throws(RawFailure) -> UInt16 {
        var id: UInt16?
        try s.execute(
            type: Int(GENL_ID_CTRL), flags: 0,
            build: { b in
                b.header(genlmsghdr(cmd: UInt8(CTRL_CMD_GETFAMILY), version: 1, reserved: 0))
                b.putString(Int(CTRL_ATTR_FAMILY_NAME), name)
            },
            onMessage: { msg in
                id = AttributeTable(message: msg, headerSize: MemoryLayout<genlmsghdr>.size).u16(Int(CTRL_ATTR_FAMILY_ID))
            })
        guard let id else { throw RawFailure(errno: ENOENT, kernelMessage: "no family id in the answer") }
        return id
    }

    /// Sets the device's private key and listen port; with `replacePeers`, every peer goes.
    public func setDevice(_ name: String, privateKey: UnsafeRawBufferPointer, listenPort: UInt16, replacePeers: Bool) throws {
        try perform("wireguard device \"\(name)\"") { s throws(RawFailure) in
            defer { s.wipeSendBuffer() }
            try s.execute(
                type: Int(familyID), flags: 0,
                build: { b in
                    Self.buildSetDevice(&b, name: name, privateKey: privateKey, listenPort: listenPort, replacePeers: replacePeers)
                })
        }
    }

    /// Adds or updates one peer (its allowed IPs replaced by these).
    public func setPeer(_ name: String, _ peer: WireGuardKernelPeer, presharedKey: UnsafeRawBufferPointer?) throws {
        try perform("wireguard device \"\(name)\" peer \(peer.endpoint):\(peer.port)") { s throws(RawFailure) in
            defer { s.wipeSendBuffer() }
            try s.execute(
                type: Int(familyID), flags: 0, build: { b in Self.buildSetPeer(&b, name: name, peer, presharedKey: presharedKey) })
        }
    }

    /// Removes the peer with `publicKey` (nothing happens when there is none).
    public func removePeer(_ name: String, publicKey: [UInt8]) throws {
        try perform("wireguard device \"\(name)\": removing a peer") { s throws(RawFailure) in
            try s.execute(
                type: Int(familyID), flags: 0,
                build: { b in
                    b.header(genlmsghdr(cmd: Self.commandSetDevice, version: Self.version, reserved: 0))
                    b.putString(Device.ifname, name)
                    b.nested(Device.peers) { b in
                        b.nested(0) { b in
                            b.put(Peer.publicKey, publicKey)
                            b.putU32(Peer.flags, Peer.removeMe)
                        }
                    }
                })
        }
    }

    /// The device's peers with their endpoints, last handshakes and byte counts.
    public func peers(_ name: String) throws -> [WireGuardKernelPeerStatus] {
        try perform("wireguard device \"\(name)\"") { s throws(RawFailure) in
            var out: [WireGuardKernelPeerStatus] = []
            try s.execute(
                type: Int(familyID), flags: 0, dump: true,
                build: { b in
                    b.header(genlmsghdr(cmd: Self.commandGetDevice, version: Self.version, reserved: 0))
                    b.putString(Device.ifname, name)
                },
                onMessage: { msg in
                    out += Self.parsePeers(AttributeTable(message: msg, headerSize: MemoryLayout<genlmsghdr>.size))
                })
            // A peer whose allowed IPs fill a message goes on in the next: one entry per key.
            var merged: [WireGuardKernelPeerStatus] = []
            for p in out {
                if let i = merged.firstIndex(where: { $0.publicKey == p.publicKey }) {
                    merged[i].endpoint = merged[i].endpoint ?? p.endpoint
                    merged[i].lastHandshake = max(merged[i].lastHandshake ?? 0, p.lastHandshake ?? 0).nonZero
                    merged[i].rxBytes = max(merged[i].rxBytes, p.rxBytes)
                    merged[i].txBytes = max(merged[i].txBytes, p.txBytes)
                } else {
                    merged.append(p)
                }
            }
            return merged
        }
    }

    static func buildSetDevice(
        _ b: inout MessageBuilder, name: String, privateKey: UnsafeRawBufferPointer, listenPort: UInt16, replacePeers: Bool
    ) {
        b.header(genlmsghdr(cmd: commandSetDevice, version: version, reserved: 0))
        b.putString(Device.ifname, name)
        b.put(Device.privateKey, bytes: privateKey)
        b.putU16(Device.listenPort, listenPort)
        if replacePeers { b.putU32(Device.flags, Device.replacePeers) }
    }

    static func buildSetPeer(_ b: inout MessageBuilder, name: String, _ peer: WireGuardKernelPeer, presharedKey: UnsafeRawBufferPointer?) {
        b.header(genlmsghdr(cmd: commandSetDevice, version: version, reserved: 0))
        b.putString(Device.ifname, name)
        b.nested(Device.peers) { b in
            b.nested(0) { b in
                b.put(Peer.publicKey, peer.publicKey)
                b.putU32(Peer.flags, Peer.replaceAllowedIPs)
                if let presharedKey { b.put(Peer.presharedKey, bytes: presharedKey) }
                var sin = sockaddr_in()
                sin.sin_family = sa_family_t(AF_INET)
                sin.sin_port = peer.port.bigEndian
                sin.sin_addr.s_addr = peer.endpoint.rawValue.bigEndian
                withUnsafeBytes(of: &sin) { b.put(Peer.endpoint, bytes: $0) }
                b.putU16(Peer.keepalive, peer.persistentKeepalive)
                b.nested(Peer.allowedIPs) { b in
                    for network in peer.allowedIPs {
                        b.nested(0) { b in
                            b.putU16(AllowedIP.family, UInt16(AF_INET))
                            b.putIPv4(AllowedIP.address, network.address)
                            b.putU8(AllowedIP.cidr, UInt8(network.prefixLength))
                        }
                    }
                }
            }
        }
    }

    static func parsePeers(_ device: AttributeTable) -> [WireGuardKernelPeerStatus] {
        device.nestedArray(Device.peers).compactMap { p in
            guard let key = p.bytes(Peer.publicKey), key.count == 32 else { return nil }
            var endpoint: String?
            if let e = p.bytes(Peer.endpoint), e.count >= MemoryLayout<sockaddr_in>.size {
                let sin = e.withUnsafeBytes { $0.loadUnaligned(as: sockaddr_in.self) }
                if Int32(sin.sin_family) == AF_INET {
                    endpoint = "\(IPv4Address(rawValue: UInt32(bigEndian: sin.sin_addr.s_addr))):\(UInt16(bigEndian: sin.sin_port))"
                }
            }
            var handshake: Int64?
            if let t = p.bytes(Peer.lastHandshake), t.count >= 16 {
                let seconds = t.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) }
                if seconds > 0 { handshake = seconds }
            }
            return WireGuardKernelPeerStatus(
                publicKey: key, endpoint: endpoint, lastHandshake: handshake,
                rxBytes: p.u64(Peer.rxBytes) ?? 0, txBytes: p.u64(Peer.txBytes) ?? 0)
        }
    }

    @discardableResult
    private func perform<T>(_ object: String, _ body: (NetlinkSocket) throws(RawFailure) -> T) throws -> T {
        let result: Result<T, NetlinkError> = socket.withLock { s in
            do throws(RawFailure) { return .success(try body(s)) } catch {
                return .failure(NetlinkError(object: object, errno: error.errno, kernelMessage: error.kernelMessage))
            }
        }
        return try result.get()
    }
}

extension Int64 {
    fileprivate var nonZero: Int64? { self == 0 ? nil : self }
}
