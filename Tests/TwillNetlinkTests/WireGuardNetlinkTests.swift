import CNetlink
import Testing
import TwillAddress
import TwillTestSupport

@testable import TwillNetlink

#if canImport(Glibc)
import Glibc
#endif

/// The kernel WireGuard requests, byte by byte against the UAPI layout, and what this
/// kernel says about the family.
@Suite(.requiresRoot) struct WireGuardNetlinkTests {
    /// Builds one generic netlink message with `build` and hands its attributes (after the
    /// 4-byte genlmsghdr) to `check`.
    static func message(_ build: (inout MessageBuilder) -> Void, _ check: (AttributeTable, genlmsghdr) -> Void) {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 8)
        defer { buffer.deallocate() }
        memset(buffer, 0, 8192)
        let nlh = mnl_nlmsg_put_header(buffer)!
        var b = MessageBuilder(nlh: nlh, capacity: 8192)
        build(&b)
        #expect(!b.overflow)
        let header = familyHeader(UnsafePointer(nlh), as: genlmsghdr.self)!
        check(AttributeTable(message: UnsafePointer(nlh), headerSize: MemoryLayout<genlmsghdr>.size), header)
    }

    @Test func setDeviceAndSetPeerFollowTheUAPI() {
        let key = [UInt8](repeating: 0x11, count: 32)
        Self.message({ b in
            key.withUnsafeBytes {
                WireGuardNetlink.buildSetDevice(&b, name: "flannel-wg", privateKey: $0, listenPort: 51820, replacePeers: true)
            }
        }) { attrs, header in
            #expect(header.cmd == 1 && header.version == 1)
            #expect(attrs.string(2) == "flannel-wg") // WGDEVICE_A_IFNAME
            #expect(attrs.bytes(3) == key) // WGDEVICE_A_PRIVATE_KEY
            #expect(attrs.u16(6) == 51820) // WGDEVICE_A_LISTEN_PORT, host order
            #expect(attrs.u32(5) == 1) // WGDEVICE_F_REPLACE_PEERS
        }
        let peerKey = [UInt8](repeating: 0x22, count: 32)
        let peer = WireGuardKernelPeer(
            publicKey: peerKey, endpoint: IPv4Address("198.51.100.2")!, port: 51820,
            allowedIPs: [IPv4Network("198.18.2.0/24")!], persistentKeepalive: 25)
        Self.message({ b in WireGuardNetlink.buildSetPeer(&b, name: "flannel-wg", peer, presharedKey: nil) }) { attrs, _ in
            let peers = attrs.nestedArray(8) // WGDEVICE_A_PEERS
            #expect(peers.count == 1)
            guard let p = peers.first else { return }
            #expect(p.bytes(1) == peerKey) // WGPEER_A_PUBLIC_KEY
            #expect(p.u32(3) == 2) // WGPEER_F_REPLACE_ALLOWEDIPS
            #expect(!p.has(2)) // no preshared key
            #expect(p.u16(5) == 25)
            // WGPEER_A_ENDPOINT: a sockaddr_in, port and address in network order.
            let endpoint = p.bytes(4) ?? []
            #expect(endpoint.count == MemoryLayout<sockaddr_in>.size)
            #expect(Array(endpoint.prefix(8)) == [UInt8(AF_INET), 0, 0xCA, 0x6C, 198, 51, 100, 2])
            let allowed = p.nestedArray(9)
            #expect(allowed.count == 1)
            #expect(allowed.first?.u16(1) == UInt16(AF_INET) && allowed.first?.bytes(2) == [198, 18, 2, 0] && allowed.first?.u8(3) == 24)
        }
    }

    @Test func aDeviceDumpIsRead() {
        let k1 = [UInt8](repeating: 1, count: 32)
        let k2 = [UInt8](repeating: 2, count: 32)
        Self.message({ b in
            b.header(genlmsghdr(cmd: 0, version: 1, reserved: 0))
            b.nested(8) { b in
                for (key, seconds) in [(k1, Int64(1_700_000_000)), (k2, Int64(0))] {
                    b.nested(0) { b in
                        b.put(1, key)
                        var sin = sockaddr_in()
                        sin.sin_family = sa_family_t(AF_INET)
                        sin.sin_port = UInt16(51820).bigEndian
                        sin.sin_addr.s_addr = IPv4Address("203.0.113.9")!.rawValue.bigEndian
                        withUnsafeBytes(of: &sin) { b.put(4, bytes: $0) }
                        var time = (seconds, Int64(5))
                        withUnsafeBytes(of: &time) { b.put(6, bytes: $0) }
                        var rx = UInt64(1234)
                        var tx = UInt64(5678)
                        withUnsafeBytes(of: &rx) { b.put(7, bytes: $0) }
                        withUnsafeBytes(of: &tx) { b.put(8, bytes: $0) }
                    }
                }
            }
        }) { attrs, _ in
            let peers = WireGuardNetlink.parsePeers(attrs)
            #expect(peers.count == 2)
            #expect(
                peers.first
                    == WireGuardKernelPeerStatus(
                        publicKey: k1, endpoint: "203.0.113.9:51820", lastHandshake: 1_700_000_000, rxBytes: 1234, txBytes: 5678))
            #expect(peers.last?.lastHandshake == nil)
        }
    }

    /// Where the kernel has no WireGuard the family is absent and that is what the error says.
    @Test(.enabled(if: !WireGuardNetlink.isAvailable, "this kernel has WireGuard: the absent-module path cannot be seen here"))
    func aKernelWithoutWireGuardSaysSo() {
        do {
            _ = try WireGuardNetlink()
            Issue.record("the family resolved")
        } catch let e as NetlinkError {
            #expect(e.errno == ENOENT && e.description.contains("\"wireguard\""), "\(e)")
        } catch {
            Issue.record("\(error)")
        }
    }
}
