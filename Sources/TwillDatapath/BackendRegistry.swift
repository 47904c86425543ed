import TwillAddress
import TwillNetlink
import TwillSystem

/// A network config's `Backend` object as the backends need it: the type and its settings
/// (keys lower-cased, as flannel matches them case-insensitively).
public struct BackendSpec: Sendable, Equatable {
    /// One setting's value, with its JSON kind kept so that a wrong kind is an error.
    public enum Setting: Sendable, Equatable {
        case number(Double)
        case bool(Bool)
        case string(String)
        /// An array, an object or null: no backend setting takes one.
        case other(kind: String)
    }

    /// `Backend.Type`, lower-cased.
    public var type: String
    public var settings: [String: Setting]

    public init(type: String, settings: [String: Setting] = [:]) {
        self.type = type.lowercased()
        self.settings = Dictionary(settings.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
    }

    /// `Backend.<key>` as a whole number within `range`; nil when absent.
    public func int(_ key: String, in range: ClosedRange<Int>) throws(BackendError) -> Int? {
        guard let value = settings[key.lowercased()] else { return nil }
        guard case .number(let n) = value, n.rounded() == n, abs(n) < 1e15 else {
            throw BackendError(backend: type, "Backend.\(key) must be a whole number, not \(Self.describe(value))")
        }
        let i = Int(n)
        guard range.contains(i) else {
            throw BackendError(backend: type, "Backend.\(key) \(i) is outside \(range.lowerBound)..\(range.upperBound)")
        }
        return i
    }

    /// `Backend.<key>` as true or false; nil when absent.
    public func bool(_ key: String) throws(BackendError) -> Bool? {
        guard let value = settings[key.lowercased()] else { return nil }
        guard case .bool(let b) = value else {
            throw BackendError(backend: type, "Backend.\(key) must be true or false, not \(Self.describe(value))")
        }
        return b
    }

    /// `Backend.<key>` as a string; nil when absent.
    public func string(_ key: String) throws(BackendError) -> String? {
        guard let value = settings[key.lowercased()] else { return nil }
        guard case .string(let s) = value else {
            throw BackendError(backend: type, "Backend.\(key) must be a string, not \(Self.describe(value))")
        }
        return s
    }

    static func describe(_ v: Setting) -> String {
        switch v {
        case .number(let n): "the number \(n)"
        case .bool(let b): "\(b)"
        case .string(let s): "the string \"\(s)\""
        case .other(let kind): kind
        }
    }
}

/// Maps `Backend.Type` to a backend, checking the backend's settings first (flannel's backend
/// manager). Building a backend touches no kernel state (that is `prepare()`), so
/// ``make(_:external:options:)`` also checks a config before it is applied.
public enum BackendRegistry {
    /// The backend types Twill runs.
    public static let types = ["udp", "vxlan", "host-gw", "wireguard", "alloc"]

    /// Whether `link` is a device Twill's backends make: `tunName` (the udp backend's TUN),
    /// `flannel-wg` (wireguard, the kernel's or a TUN), `flannel.<VNI>` and
    /// `flannel-v6.<VNI>` (vxlan). Devices of other names or kinds are never Twill's.
    public static func isTwillDevice(_ link: Link, tunName: String) -> Bool {
        let kind = link.kind ?? ""
        if link.name == tunName { return kind == "tun" }
        if link.name == WireGuardBackend.deviceName { return kind == "tun" || kind == "wireguard" }
        for prefix in ["flannel.", "flannel-v6."] where link.name.hasPrefix(prefix) {
            return kind == "vxlan" && UInt32(link.name.dropFirst(prefix.count)) != nil
        }
        return false
    }

    /// What the agent's own flags set for the backends.
    public struct Options: Sendable, Equatable {
        /// udp: the TUN device's name (`--tun-name`).
        public var tunName: String
        /// udp: accept datagrams from any sender (`--udp-accept-any-source`).
        public var acceptAnySource: Bool
        /// udp: packet queues (`--udp-queues`; nil for the default).
        public var udpQueues: Int?
        /// udp: TUN and UDP offloads (`--udp-offloads`).
        public var udpOffloads: Bool

        /// wireguard: the private key file (`WIREGUARD_KEY_FILE`, flannel's `/run/flannel/wgkey`).
        public var wireGuardKeyFile: String
        /// wireguard: the protocol's timers (tests shorten them).
        public var wireGuardTimers: WireGuardTimers
        /// wireguard: the kernel's engine, Twill's own, or whichever the kernel allows (`--wireguard-engine`).
        public var wireGuardEngine: WireGuardBackend.Engine
        /// udp and wireguard (userspace): where the packet engine's TUN queues and sockets are
        /// kept across a restart (systemd's descriptor store under systemd).
        public var descriptorKeeper: any DescriptorKeeper = NoDescriptorKeeper()

        public static func == (a: Options, b: Options) -> Bool {
            (a.tunName, a.acceptAnySource, a.udpQueues, a.udpOffloads, a.wireGuardKeyFile, a.wireGuardEngine)
                == (b.tunName, b.acceptAnySource, b.udpQueues, b.udpOffloads, b.wireGuardKeyFile, b.wireGuardEngine)
                && a.wireGuardTimers == b.wireGuardTimers
        }

        public init(
            tunName: String = "twill0", acceptAnySource: Bool = false, udpQueues: Int? = nil, udpOffloads: Bool = true,
            wireGuardKeyFile: String = WireGuardKeyFile.defaultPath, wireGuardTimers: WireGuardTimers = WireGuardTimers(),
            wireGuardEngine: WireGuardBackend.Engine = .auto
        ) {
            self.wireGuardEngine = wireGuardEngine
            self.tunName = tunName
            self.acceptAnySource = acceptAnySource
            self.udpQueues = udpQueues
            self.udpOffloads = udpOffloads
            self.wireGuardKeyFile = wireGuardKeyFile
            self.wireGuardTimers = wireGuardTimers
        }
    }

    /// The settings a backend of `spec.type` would run with, checked; throws naming the
    /// setting and what is wrong with it.
    public static func validate(_ spec: BackendSpec, options: Options = Options(), ipv6: Bool = false) throws(BackendError) {
        _ = try settings(spec, options: options, ipv6: ipv6)
    }

    /// The backends that carry IPv6 (a dual-stack network's `EnableIPv6`).
    public static let dualStackTypes = ["udp", "vxlan", "host-gw", "alloc"]
    /// The backends that run on a node without IPv4 (`EnableIPv4: false`); udp then sends
    /// over IPv6 (Twill's own: flannel's udp has no IPv6).
    public static let ipv6OnlyTypes = ["udp", "vxlan", "host-gw", "alloc"]

    enum Checked {
        case udp(port: UInt16, mtu: Int?)
        case vxlan(vni: UInt32, port: UInt16, directRouting: Bool, gbp: Bool, learning: Bool, mtu: Int?)
        case hostGW(mtu: Int?)
        case wireGuard(WireGuardSettings)
        case alloc(mtu: Int?)
    }

    /// A wireguard backend's checked settings (flannel's names and defaults).
    struct WireGuardSettings {
        var listenPort: UInt16
        var presharedKey: [UInt8]?
        var persistentKeepalive: Int
        var mtu: Int?
    }

    static func settings(_ spec: BackendSpec, options: Options, ipv6: Bool = false) throws(BackendError) -> Checked {
        if ipv6, !dualStackTypes.contains(spec.type), types.contains(spec.type) {
            throw BackendError(
                backend: spec.type,
                """
                EnableIPv6 is set, but Twill's \(spec.type) backend carries IPv4 only so far; \
                use \(dualStackTypes.filter { $0 != "alloc" }.joined(separator: " or ")) for a dual-stack network
                """)
        }
        // flannel's Backend.MTU: the underlay MTU to size the device from, for every backend.
        // 576 is the smallest IPv4 path MTU a host must accept.
        let mtu = try spec.int("MTU", in: 576...65535)
        switch spec.type {
        case "udp":
            let port = try spec.int("Port", in: 1...65535) ?? 8285
            guard !options.tunName.isEmpty, options.tunName.utf8.count < 16 else {
                throw BackendError(backend: "udp", "--tun-name \(options.tunName) must be 1 to 15 characters")
            }
            return .udp(port: UInt16(port), mtu: mtu)
        case "vxlan":
            let vni = try spec.int("VNI", in: 1...16_777_215) ?? 1
            let port = try spec.int("Port", in: 1...65535) ?? 8472
            return .vxlan(
                vni: UInt32(vni), port: UInt16(port), directRouting: try spec.bool("DirectRouting") ?? false,
                gbp: try spec.bool("GBP") ?? false, learning: try spec.bool("Learning") ?? false, mtu: mtu)
        case "host-gw":
            return .hostGW(mtu: mtu)
        case "wireguard":
            let port = try spec.int("ListenPort", in: 1...65535) ?? 51820
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
            return .wireGuard(WireGuardSettings(listenPort: UInt16(port), presharedKey: psk, persistentKeepalive: keepalive, mtu: mtu))
        case "alloc":
            return .alloc(mtu: mtu)
        default:
            throw BackendError(
                backend: spec.type, "Backend.Type \"\(spec.type)\" is not known (available: \(types.joined(separator: ", ")))")
        }
    }

    /// The backend for `spec` on `external`; `ipv6` for a network with IPv6, `ipv4` false for
    /// an IPv6-only one.
    public static func make(
        _ spec: BackendSpec, external: ExternalInterface, options: Options = Options(), ipv6: Bool = false,
        ipv4: Bool = true
    ) throws -> any Backend {
        switch try settings(spec, options: options, ipv6: ipv6) {
        case .udp(let port, let mtu):
            return UDPBackend(
                netlink: try Netlink(), external: external, tunName: options.tunName, port: port,
                checkSources: !options.acceptAnySource, offloads: options.udpOffloads, queues: options.udpQueues, mtu: mtu,
                ipv4: ipv4, keeper: options.descriptorKeeper)
        case .vxlan(let vni, let port, let directRouting, let gbp, let learning, let mtu):
            return VXLANBackend(
                netlink: try Netlink(), external: external, vni: vni, port: port, directRouting: directRouting,
                gbp: gbp, learning: learning, mtu: mtu, ipv6: ipv6, ipv4: ipv4)
        case .hostGW(let mtu):
            return HostGWBackend(netlink: try Netlink(), external: external, mtu: mtu, ipv6: ipv6, ipv4: ipv4)
        case .wireGuard(let w):
            return WireGuardBackend(
                netlink: try Netlink(), external: external, listenPort: w.listenPort, keyFile: options.wireGuardKeyFile,
                presharedKey: w.presharedKey.map(Secret.init),
                persistentKeepalive: w.persistentKeepalive > 0 ? .seconds(w.persistentKeepalive) : nil,
                mtu: w.mtu, offloads: options.udpOffloads, queues: options.udpQueues, timers: options.wireGuardTimers,
                engine: options.wireGuardEngine, keeper: options.descriptorKeeper)
        case .alloc(let mtu):
            return AllocBackend(mtu: mtu ?? external.mtu)
        }
    }
}
