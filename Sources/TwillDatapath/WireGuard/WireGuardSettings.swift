extension WireGuardBackend {
    /// flannel's wireguard backend: `ListenPort` (51820), `ListenPortV6`, `PSK`,
    /// `PersistentKeepaliveInterval`, `Mode` and `MTU`; IPv4 only so far.
    public static let kind = BackendKind(type: "wireguard", families: [.ipv4]) { spec, _ throws(BackendError) in
        let mtu = try BackendKind.mtu(spec)
        let port = UInt16(try spec.int("ListenPort", in: 1...65535) ?? 51820)
        _ = try spec.int("ListenPortV6", in: 1...65535)
        let keepalive = try spec.int("PersistentKeepaliveInterval", in: 0...65535) ?? 0
        var psk: [UInt8]?
        if let text = try spec.string("PSK"), !text.isEmpty {
            guard let bytes = WireGuardKeyFile.decodeKey(text) else {
                throw BackendError(
                    backend: "wireguard", "Backend.PSK must be base64 of 32 bytes (as `wg genpsk` prints), not \"\(text.prefix(60))\"")
            }
            psk = bytes
        }
        switch try spec.string("Mode")?.lowercased() ?? "separate" {
        case "separate", "auto", "ipv4": break
        case "ipv6":
            throw BackendError(
                backend: "wireguard",
                "Backend.Mode \"ipv6\" (WireGuard over IPv6) is not supported by Twill's wireguard backend yet; use \"separate\" or \"ipv4\""
            )
        case let other:
            throw BackendError(backend: "wireguard", "Backend.Mode \"\(other)\" is not one of separate, auto, ipv4, ipv6")
        }
        let presharedKey = psk
        return { c in
            WireGuardBackend(
                netlink: try c.kernel(), external: c.external, listenPort: port, keyFile: c.options.wireGuardKeyFile,
                presharedKey: presharedKey.map(Secret.init),
                persistentKeepalive: keepalive > 0 ? .seconds(keepalive) : nil,
                mtu: mtu, offloads: c.options.udpOffloads, queues: c.options.udpQueues, timers: c.options.wireGuardTimers,
                engine: c.options.wireGuardEngine, keeper: c.options.descriptorKeeper)
        }
    }
}
