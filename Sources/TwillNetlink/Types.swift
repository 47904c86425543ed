import TwillAddress

/// Twill's own route protocol number (`rtm_protocol`), carried by every route Twill installs.
///
/// The kernel does not interpret protocol numbers above `RTPROT_STATIC` (4); they exist so
/// that routing daemons can tell their routes from everyone else's. Twill deletes and
/// reconciles only routes with this number, so it never touches routes that an operator,
/// DHCP, a routing daemon or the kernel put there. 84 is ASCII `T`; it is not among
/// iproute2's reserved numbers (`/etc/iproute2/rt_protos`: 0-4, 8-18, 42, 99, 186-192) nor
/// used by the common CNI plugins. `ip route show proto 84` lists Twill's routes; adding
/// `84 twill` to `/etc/iproute2/rt_protos.d/twill.conf` makes `ip` print the name.
public let twillRouteProtocol: UInt8 = 84

/// The main routing table (RT_TABLE_MAIN).
public let mainRoutingTable: UInt32 = 254

/// A 48-bit Ethernet (MAC) address, printed as `aa:bb:cc:dd:ee:ff`.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public let bytes: [UInt8]

    /// Six bytes; nil for any other count.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 6 else { return nil }
        self.bytes = Array(bytes)
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (either case; `-` also accepted as separator).
    public init?(_ description: String) {
        let parts = description.split(separator: ":", omittingEmptySubsequences: false)
        let groups = parts.count == 6 ? parts : description.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.count == 6 else { return nil }
        var out: [UInt8] = []
        for g in groups {
            guard g.count == 2, let b = UInt8(g, radix: 16) else { return nil }
            out.append(b)
        }
        bytes = out
    }

    public var description: String {
        bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }
}

/// Interface flags (IFF_*), as in `ifi_flags`.
public struct InterfaceFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let up = InterfaceFlags(rawValue: 0x1)
    public static let broadcast = InterfaceFlags(rawValue: 0x2)
    public static let loopback = InterfaceFlags(rawValue: 0x8)
    public static let pointToPoint = InterfaceFlags(rawValue: 0x10)
    public static let running = InterfaceFlags(rawValue: 0x40)
    public static let noARP = InterfaceFlags(rawValue: 0x80)
    public static let multicast = InterfaceFlags(rawValue: 0x1000)
    public static let lowerUp = InterfaceFlags(rawValue: 0x10000)
}

/// The vxlan-specific attributes of a vxlan link.
public struct VXLANAttributes: Hashable, Sendable {
    public var vni: UInt32
    /// Local (source) address of the tunnel; nil when unset.
    public var local: IPv4Address?
    /// Local IPv6 source address (IFLA_VXLAN_LOCAL6) of a tunnel over IPv6; nil when unset.
    public var local6: IPv6Address?
    /// Index of the underlay device; nil when unset.
    public var underlayIndex: Int32?
    /// Destination UDP port (host order).
    public var port: UInt16
    public var learning: Bool
    /// Group Based Policy extension (IFLA_VXLAN_GBP).
    public var gbp: Bool

    public init(
        vni: UInt32, local: IPv4Address?, local6: IPv6Address? = nil, underlayIndex: Int32?, port: UInt16, learning: Bool, gbp: Bool = false
    ) {
        self.vni = vni
        self.local = local
        self.local6 = local6
        self.underlayIndex = underlayIndex
        self.port = port
        self.learning = learning
        self.gbp = gbp
    }
}

/// A network interface (link).
public struct Link: Hashable, Sendable, CustomStringConvertible {
    public var index: Int32
    public var name: String
    /// `IFLA_INFO_KIND`: "vxlan", "bridge", "dummy", "veth"...; nil for plain devices.
    public var kind: String?
    public var mtu: Int
    public var mac: MACAddress?
    public var flags: InterfaceFlags
    /// Index of the master device (a bridge, say), if any.
    public var masterIndex: Int32?
    /// Present for vxlan links.
    public var vxlan: VXLANAttributes?

    public init(
        index: Int32, name: String, kind: String? = nil, mtu: Int, mac: MACAddress? = nil, flags: InterfaceFlags = [],
        masterIndex: Int32? = nil, vxlan: VXLANAttributes? = nil
    ) {
        self.index = index
        self.name = name
        self.kind = kind
        self.mtu = mtu
        self.mac = mac
        self.flags = flags
        self.masterIndex = masterIndex
        self.vxlan = vxlan
    }

    public var isUp: Bool { flags.contains(.up) }

    public var description: String {
        "link \"\(name)\" (index \(index)\(kind.map { ", \($0)" } ?? ""), mtu \(mtu)\(isUp ? ", up" : ""))"
    }
}

/// What a new vxlan device should look like.
public struct VXLANLinkSpec: Sendable, Hashable {
    public var name: String
    public var vni: UInt32
    public var local: IPv4Address?
    /// The local IPv6 address, for a device that tunnels over IPv6 (then `local` is nil).
    public var local6: IPv6Address?
    public var underlayIndex: Int32?
    /// Destination UDP port; 8472 is the Linux (and flannel) default, 4789 the IANA one.
    public var port: UInt16
    public var learning: Bool
    /// Group Based Policy extension (flannel's `Backend.GBP`).
    public var gbp: Bool
    public var mtu: Int?
    /// A MAC to give the device (to keep the VtepMAC across re-creation); nil for a random one.
    public var mac: MACAddress?

    public init(
        name: String, vni: UInt32, local: IPv4Address?, local6: IPv6Address? = nil, underlayIndex: Int32?,
        port: UInt16 = 8472, learning: Bool = false, gbp: Bool = false, mtu: Int? = nil, mac: MACAddress? = nil
    ) {
        self.gbp = gbp
        self.name = name
        self.vni = vni
        self.local = local
        self.local6 = local6
        self.underlayIndex = underlayIndex
        self.port = port
        self.learning = learning
        self.mtu = mtu
        self.mac = mac
    }
}

/// An address on an interface (IPv4 or IPv6).
public struct InterfaceAddress: Hashable, Sendable, CustomStringConvertible {
    public var interfaceIndex: Int32
    public var address: IPAddress
    public var prefixLength: Int
    /// `RT_SCOPE_*`: 0 universe, 253 link, 254 host.
    public var scope: UInt8
    /// `IFA_LABEL` (IPv4 only), e.g. "eth0".
    public var label: String?
    /// `IFA_F_*` bits: set when adding (``noDAD``), as the kernel reports them when listed
    /// (``temporary``, ``deprecated``, ``permanent``...).
    public var flags: UInt32 = 0

    public static let temporary: UInt32 = 0x01
    public static let dadFailed: UInt32 = 0x08
    public static let deprecated: UInt32 = 0x20
    public static let tentative: UInt32 = 0x40
    public static let permanent: UInt32 = 0x80

    /// IFA_F_NODAD: an IPv6 address usable at once, without duplicate address detection (for
    /// an address that is unique by construction, such as a leased subnet's).
    public static let noDAD: UInt32 = 0x02

    public init(interfaceIndex: Int32, address: IPAddress, prefixLength: Int, scope: UInt8 = 0, label: String? = nil, flags: UInt32 = 0) {
        self.interfaceIndex = interfaceIndex
        self.address = address
        self.prefixLength = prefixLength
        self.scope = scope
        self.label = label
        self.flags = flags
    }

    public init(interfaceIndex: Int32, address: IPv4Address, prefixLength: Int) {
        self.init(interfaceIndex: interfaceIndex, address: .v4(address), prefixLength: prefixLength)
    }

    /// The IPv4 network this address sits in (nil for IPv6 or a bad prefix length).
    public var ipv4Network: IPv4Network? {
        guard case .v4(let a) = address else { return nil }
        return try? IPv4Network(containing: a, prefixLength: prefixLength)
    }

    public var description: String { "address \(address)/\(prefixLength) on dev index \(interfaceIndex)" }
}

/// Route scopes (`RT_SCOPE_*`).
public enum RouteScope {
    public static let universe: UInt8 = 0
    public static let site: UInt8 = 200
    public static let link: UInt8 = 253
    public static let host: UInt8 = 254
    public static let nowhere: UInt8 = 255
}

/// An IPv4 route.
public struct Route: Hashable, Sendable, CustomStringConvertible {
    public var destination: IPv4Network
    public var gateway: IPv4Address?
    public var outputInterface: Int32?
    /// RTNH_F_ONLINK: the gateway is on the link even though no address says so.
    public var onLink: Bool
    /// `RT_SCOPE_*`; nil chooses: universe with a gateway, link without.
    public var scope: UInt8?
    public var table: UInt32
    /// `rtm_protocol`; defaults to ``twillRouteProtocol``.
    public var routeProtocol: UInt8
    /// `RTN_*`: 1 unicast (default), 2 local, 3 broadcast, 6 blackhole, 7 unreachable...
    public var type: UInt8
    public var metric: UInt32?
    public var preferredSource: IPv4Address?

    public init(
        destination: IPv4Network, gateway: IPv4Address? = nil, outputInterface: Int32? = nil,
        onLink: Bool = false, scope: UInt8? = nil, table: UInt32 = mainRoutingTable,
        routeProtocol: UInt8 = twillRouteProtocol, type: UInt8 = 1, metric: UInt32? = nil,
        preferredSource: IPv4Address? = nil
    ) {
        self.destination = destination
        self.gateway = gateway
        self.outputInterface = outputInterface
        self.onLink = onLink
        self.scope = scope
        self.table = table
        self.routeProtocol = routeProtocol
        self.type = type
        self.metric = metric
        self.preferredSource = preferredSource
    }

    /// Whether Twill installed this route (its protocol is ``twillRouteProtocol``).
    public var isTwillOwned: Bool { routeProtocol == twillRouteProtocol }

    public var description: String {
        var s = "route \(destination)"
        if let g = gateway { s += " via \(g)" }
        if let o = outputInterface { s += " dev index \(o)" }
        if onLink { s += " onlink" }
        if table != mainRoutingTable { s += " table \(table)" }
        s += " proto \(routeProtocol)"
        return s
    }
}

/// An IPv6 route: what ``Route`` is for IPv4 (the kernel keeps the two families in separate
/// tables, so they are separate values too).
public struct Route6: Hashable, Sendable, CustomStringConvertible {
    public var destination: IPv6Network
    public var gateway: IPv6Address?
    public var outputInterface: Int32?
    /// RTNH_F_ONLINK: the gateway is on the link even though no address says so.
    public var onLink: Bool
    public var table: UInt32
    /// `rtm_protocol`; defaults to ``twillRouteProtocol``.
    public var routeProtocol: UInt8
    /// `RTN_*`: 1 unicast (default), 6 blackhole...
    public var type: UInt8
    public var metric: UInt32?

    public init(
        destination: IPv6Network, gateway: IPv6Address? = nil, outputInterface: Int32? = nil, onLink: Bool = false,
        table: UInt32 = mainRoutingTable, routeProtocol: UInt8 = twillRouteProtocol, type: UInt8 = 1, metric: UInt32? = nil
    ) {
        self.destination = destination
        self.gateway = gateway
        self.outputInterface = outputInterface
        self.onLink = onLink
        self.table = table
        self.routeProtocol = routeProtocol
        self.type = type
        self.metric = metric
    }

    /// Whether Twill installed this route (its protocol is ``twillRouteProtocol``).
    public var isTwillOwned: Bool { routeProtocol == twillRouteProtocol }

    public var description: String {
        var s = "route \(destination)"
        if let g = gateway { s += " via \(g)" }
        if let o = outputInterface { s += " dev index \(o)" }
        if onLink { s += " onlink" }
        if table != mainRoutingTable { s += " table \(table)" }
        s += " proto \(routeProtocol)"
        return s
    }
}

/// Neighbour states (`NUD_*`).
public enum NeighbourState {
    public static let incomplete: UInt16 = 0x01
    public static let reachable: UInt16 = 0x02
    public static let stale: UInt16 = 0x04
    public static let delay: UInt16 = 0x08
    public static let probe: UInt16 = 0x10
    public static let failed: UInt16 = 0x20
    public static let noARP: UInt16 = 0x40
    public static let permanent: UInt16 = 0x80
}

/// A neighbour (ARP/NDP) entry: IP -> MAC on an interface.
public struct Neighbour: Hashable, Sendable, CustomStringConvertible {
    public var interfaceIndex: Int32
    public var address: IPAddress
    public var mac: MACAddress?
    /// `NUD_*` bits; see ``NeighbourState``.
    public var state: UInt16
    /// `NTF_*` bits.
    public var flags: UInt8

    public init(
        interfaceIndex: Int32, address: IPAddress, mac: MACAddress?,
        state: UInt16 = NeighbourState.permanent, flags: UInt8 = 0
    ) {
        self.interfaceIndex = interfaceIndex
        self.address = address
        self.mac = mac
        self.state = state
        self.flags = flags
    }

    public var isPermanent: Bool { state & NeighbourState.permanent != 0 }

    public var description: String {
        "neighbour \(address)\(mac.map { " lladdr \($0)" } ?? "") on dev index \(interfaceIndex)"
    }
}

/// A bridge forwarding-database entry (`bridge fdb`): MAC -> remote IP, on a vxlan device
/// with NTF_SELF.
public struct FDBEntry: Hashable, Sendable, CustomStringConvertible {
    public var interfaceIndex: Int32
    public var mac: MACAddress
    /// The remote tunnel endpoint (NDA_DST), for vxlan: IPv4, or IPv6 for a tunnel over IPv6.
    public var destination: IPAddress?
    public var state: UInt16
    /// `NTF_*` bits; NTF_SELF (0x02) means the entry is the device's own (vxlan), not its master's.
    public var flags: UInt8
    public var vni: UInt32?

    public static let ntfSelf: UInt8 = 0x02
    public static let ntfMaster: UInt8 = 0x04

    public init(
        interfaceIndex: Int32, mac: MACAddress, destination: IPAddress?,
        state: UInt16 = NeighbourState.permanent, flags: UInt8 = FDBEntry.ntfSelf, vni: UInt32? = nil
    ) {
        self.interfaceIndex = interfaceIndex
        self.mac = mac
        self.destination = destination
        self.state = state
        self.flags = flags
        self.vni = vni
    }

    public var isPermanent: Bool { state & NeighbourState.permanent != 0 }

    public var description: String {
        "fdb \(mac)\(destination.map { " dst \($0)" } ?? "") on dev index \(interfaceIndex)"
    }
}

/// A change the kernel announced on the monitor socket.
public enum NetlinkChange: Sendable, Hashable {
    /// A link appeared or changed (RTM_NEWLINK).
    case linkChanged(Link)
    case linkRemoved(Link)
    case addressAdded(InterfaceAddress)
    case addressRemoved(InterfaceAddress)
    case routeAdded(Route)
    case routeRemoved(Route)
    case route6Added(Route6)
    case route6Removed(Route6)
    case neighbourAdded(Neighbour)
    case neighbourRemoved(Neighbour)
    case fdbAdded(FDBEntry)
    case fdbRemoved(FDBEntry)
    /// The kernel dropped notifications (ENOBUFS): state may have changed unseen; reconcile.
    case overrun
}
