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

/// Maps `Backend.Type` to a backend (flannel's backend manager): a list of ``BackendKind``s,
/// each defined in its backend's folder. ``validate(_:options:families:)`` checks a config
/// without building anything; ``make(_:external:options:families:)`` builds the backend,
/// which touches no kernel state until `prepare()`.
public enum BackendRegistry {
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

    /// The backend kinds Twill runs, each defined in its own folder.
    public static let kinds: [BackendKind] = [
        UDPBackend.kind, VXLANBackend.kind, HostGWBackend.kind, WireGuardBackend.kind, AllocBackend.kind,
    ]

    /// The backend types Twill runs.
    public static var types: [String] { kinds.map(\.type) }

    /// The kind of `type`, or nil.
    public static func kind(_ type: String) -> BackendKind? { kinds.first { $0.type == type.lowercased() } }

    /// Checks what a config asks of its backend, without building one or touching the kernel:
    /// the type, the families the network runs, and the settings (naming the setting and what
    /// is wrong with it). Returns the builder.
    @discardableResult
    public static func validate(
        _ spec: BackendSpec, options: Options = Options(), families: IPFamilies = .ipv4
    ) throws(BackendError) -> BackendKind.Builder {
        guard let kind = kind(spec.type) else {
            throw BackendError(
                backend: spec.type, "Backend.Type \"\(spec.type)\" is not known (available: \(types.joined(separator: ", ")))")
        }
        guard kind.families.contains(families) else { throw unsupported(kind, families) }
        return try kind.check(spec, options)
    }

    /// Why `kind` cannot run `families`, with the kinds that can.
    static func unsupported(_ kind: BackendKind, _ families: IPFamilies) -> BackendError {
        let able = kinds.filter { $0.families.contains(families) && $0.type != "alloc" }.map(\.type).joined(separator: ", ")
        if !families.contains(.ipv4) {
            return BackendError(
                backend: kind.type,
                """
                EnableIPv4 is false (an IPv6-only network), but Twill's \(kind.type) backend sends over IPv4; \
                use \(able), or enable IPv4
                """)
        }
        return BackendError(
            backend: kind.type,
            """
            EnableIPv6 is set, but Twill's \(kind.type) backend carries IPv4 only so far; \
            use \(able) for a dual-stack network
            """)
    }

    /// The backend for `spec` on `external`, for a network that runs `families`.
    public static func make(
        _ spec: BackendSpec, external: ExternalInterface, options: Options = Options(), families: IPFamilies = .ipv4
    ) throws -> any Backend {
        let build = try validate(spec, options: options, families: families)
        return try build(BackendKind.Context(external: external, families: families, options: options, kernel: { try Netlink() }))
    }
}
