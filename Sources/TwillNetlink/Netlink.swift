import CNetlink
import Logging
import Synchronization
import TwillAddress
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// A typed, synchronous rtnetlink API: links, addresses, routes, neighbours, FDB entries and
/// a change monitor, in one network namespace.
///
/// Each instance owns one libmnl socket, used under a mutex, so an instance can be shared
/// between tasks and threads. Calls take well under a millisecond. Every request asks for
/// an acknowledgement and checks it; every failure is a ``NetlinkError`` naming the object.
public final class Netlink: Sendable {
    /// The namespace this instance acts in (nil: the namespace of the thread that created it).
    public let namespacePath: String?
    private let socket: Mutex<NetlinkSocket>
    let logger: Logger

    /// Opens a socket in the network namespace at `namespacePath` (e.g. `/run/netns/NAME`),
    /// or in the caller's namespace when nil. The socket stays bound to that namespace, so
    /// all later calls act there, from any thread.
    public init(namespacePath: String? = nil, logger: Logger = Logger(label: "twill.netlink")) throws {
        self.namespacePath = namespacePath
        self.logger = logger
        let s = try Self.openSocket(namespacePath: namespacePath, groups: 0)
        socket = Mutex(s)
    }

    static func openSocket(namespacePath: String?, groups: UInt32) throws -> NetlinkSocket {
        let open: @Sendable () throws -> NetlinkSocket = {
            do throws(RawFailure) {
                return try NetlinkSocket(groups: groups)
            } catch {
                throw NetlinkError(
                    object: "netlink socket\(namespacePath.map { " in \($0)" } ?? "")",
                    errno: error.errno, kernelMessage: error.kernelMessage)
            }
        }
        if let path = namespacePath {
            do {
                return try NetworkNamespace.run(inNamespace: path, open)
            } catch let e as SystemError {
                throw NetlinkError(object: "network namespace \(path)", errno: e.errno.rawValue)
            }
        }
        return try open()
    }

    /// Runs one request under the lock; failures become ``NetlinkError`` about `object`
    /// (evaluated only then, with the socket to resolve device names).
    @discardableResult
    private func perform<T>(
        _ object: (NetlinkSocket) -> String,
        _ body: (NetlinkSocket) throws(RawFailure) -> T
    ) throws -> T {
        let result: Result<T, NetlinkError> = socket.withLock { s in
            do throws(RawFailure) {
                return .success(try body(s))
            } catch {
                return .failure(NetlinkError(object: object(s), errno: error.errno, kernelMessage: error.kernelMessage))
            }
        }
        return try result.get()
    }

    /// A dump, retried (at most 5 times) when the kernel says it was interrupted by a change.
    private func dump(
        _ object: String, type: Int, build: (inout MessageBuilder) -> Void,
        each: (UnsafePointer<nlmsghdr>) -> Void, reset: () -> Void
    ) throws {
        try perform({ _ in object }) { s throws(RawFailure) in
            for _ in 0..<5 {
                reset()
                let interrupted = try s.execute(type: type, flags: 0, dump: true, build: build, onMessage: each)
                if !interrupted { return }
            }
            throw RawFailure(errno: EAGAIN, kernelMessage: "dump kept being interrupted by changes")
        }
    }

    // MARK: Links

    /// The link named `name`; throws ENODEV when there is none.
    public func link(named name: String) throws -> Link {
        try perform({ _ in "link \"\(name)\"" }) { s throws(RawFailure) in try Self.getLink(s, name: name, index: 0) }
    }

    /// The link with index `index`; throws ENODEV when there is none.
    public func link(index: Int32) throws -> Link {
        try perform({ _ in "link index \(index)" }) { s throws(RawFailure) in try Self.getLink(s, name: nil, index: index) }
    }

    /// The link named `name`, or nil when there is none.
    public func linkIfPresent(named name: String) throws -> Link? {
        do {
            return try link(named: name)
        } catch let e as NetlinkError where e.errno == ENODEV {
            return nil
        }
    }

    /// All links.
    public func links() throws -> [Link] {
        var out: [Link] = []
        try dump(
            "link dump", type: Int(RTM_GETLINK),
            build: { b in
                var ifi = ifinfomsg()
                ifi.ifi_family = UInt8(AF_UNSPEC)
                b.header(ifi)
                b.putU32(Int(IFLA_EXT_MASK), UInt32(RTEXT_FILTER_SKIP_STATS))
            }, each: { m in if let l = parseLink(m) { out.append(l) } }, reset: { out = [] })
        return out
    }

    private static func getLink(_ s: NetlinkSocket, name: String?, index: Int32) throws(RawFailure) -> Link {
        var found: Link?
        try s.execute(
            type: Int(RTM_GETLINK), flags: 0,
            build: { b in
                var ifi = ifinfomsg()
                ifi.ifi_family = UInt8(AF_UNSPEC)
                ifi.ifi_index = index
                b.header(ifi)
                if let name { b.putString(Int(IFLA_IFNAME), name) }
                b.putU32(Int(IFLA_EXT_MASK), UInt32(RTEXT_FILTER_SKIP_STATS))
            }, onMessage: { m in if Int(m.pointee.nlmsg_type) == Int(RTM_NEWLINK) { found = parseLink(m) } })
        guard let found else { throw RawFailure(errno: ENODEV) }
        return found
    }

    /// `dev NAME` for messages, resolved through the socket; `dev #N` if that fails.
    private static func deviceName(_ s: NetlinkSocket, _ index: Int32?) -> String {
        guard let index else { return "" }
        if let l = try? getLink(s, name: nil, index: index) { return " dev \(l.name)" }
        return " dev #\(index)"
    }

    private func changeLink(
        _ object: String, index: Int32, flags: UInt32, change: UInt32,
        attributes: (inout MessageBuilder) -> Void = { _ in }
    ) throws {
        try perform({ _ in object }) { s throws(RawFailure) in
            try s.execute(
                type: Int(RTM_NEWLINK), flags: 0,
                build: { b in
                    var ifi = ifinfomsg()
                    ifi.ifi_family = UInt8(AF_UNSPEC)
                    ifi.ifi_index = index
                    ifi.ifi_flags = flags
                    ifi.ifi_change = change
                    b.header(ifi)
                    attributes(&b)
                })
        }
    }

    public func setLinkUp(index: Int32) throws {
        try changeLink(
            "setting link index \(index) up", index: index, flags: InterfaceFlags.up.rawValue, change: InterfaceFlags.up.rawValue)
    }

    public func setLinkDown(index: Int32) throws {
        try changeLink("setting link index \(index) down", index: index, flags: 0, change: InterfaceFlags.up.rawValue)
    }

    public func setMTU(_ mtu: Int, index: Int32) throws {
        try changeLink("setting MTU \(mtu) on link index \(index)", index: index, flags: 0, change: 0) { b in
            b.putU32(Int(IFLA_MTU), UInt32(truncatingIfNeeded: mtu))
        }
    }

    /// Creates a link of a kind that needs no parameters ("dummy", "bridge") and returns it.
    @discardableResult
    public func createLink(name: String, kind: String, mtu: Int? = nil) throws -> Link {
        try perform({ _ in "creating \(kind) link \"\(name)\"" }) { s throws(RawFailure) in
            try s.execute(
                type: Int(RTM_NEWLINK), flags: NLM_F_CREATE | NLM_F_EXCL,
                build: { b in
                    var ifi = ifinfomsg()
                    ifi.ifi_family = UInt8(AF_UNSPEC)
                    b.header(ifi)
                    b.putString(Int(IFLA_IFNAME), name)
                    if let mtu { b.putU32(Int(IFLA_MTU), UInt32(mtu)) }
                    b.nested(Int(IFLA_LINKINFO)) { b in b.putString(Int(IFLA_INFO_KIND), kind) }
                })
            return try Self.getLink(s, name: name, index: 0)
        }
    }

    /// Creates a vxlan device (flannel's kind: no learning unless asked, fixed port) and returns it.
    @discardableResult
    public func createVXLAN(_ spec: VXLANLinkSpec) throws -> Link {
        let object =
            "creating vxlan link \"\(spec.name)\" (VNI \(spec.vni), port \(spec.port)\(spec.local.map { ", local \($0)" } ?? "")\(spec.local6.map { ", local \($0)" } ?? ""))"
        return try perform({ s in object + (spec.underlayIndex == nil ? "" : " on" + Self.deviceName(s, spec.underlayIndex).dropFirst(4)) })
        { s throws(RawFailure) in
            try s.execute(
                type: Int(RTM_NEWLINK), flags: NLM_F_CREATE | NLM_F_EXCL,
                build: { b in
                    var ifi = ifinfomsg()
                    ifi.ifi_family = UInt8(AF_UNSPEC)
                    b.header(ifi)
                    b.putString(Int(IFLA_IFNAME), spec.name)
                    if let mtu = spec.mtu { b.putU32(Int(IFLA_MTU), UInt32(mtu)) }
                    if let mac = spec.mac { b.put(Int(IFLA_ADDRESS), mac.bytes) }
                    b.nested(Int(IFLA_LINKINFO)) { b in
                        b.putString(Int(IFLA_INFO_KIND), "vxlan")
                        b.nested(Int(IFLA_INFO_DATA)) { b in
                            b.putU32(Int(IFLA_VXLAN_ID), spec.vni)
                            if let local = spec.local { b.putIPv4(Int(IFLA_VXLAN_LOCAL), local) }
                            if let local6 = spec.local6 { b.putIP(Int(IFLA_VXLAN_LOCAL6), .v6(local6)) }
                            if let link = spec.underlayIndex { b.putU32(Int(IFLA_VXLAN_LINK), UInt32(bitPattern: link)) }
                            b.putBE16(Int(IFLA_VXLAN_PORT), spec.port)
                            b.putU8(Int(IFLA_VXLAN_LEARNING), spec.learning ? 1 : 0)
                            if spec.gbp { b.putFlag(Int(IFLA_VXLAN_GBP)) }
                        }
                    }
                })
            return try Self.getLink(s, name: spec.name, index: 0)
        }
    }

    /// Deletes any link.
    public func deleteLink(index: Int32) throws {
        try perform({ s in "deleting link\(Self.deviceName(s, index).dropFirst(4)) (index \(index))" }) { s throws(RawFailure) in
            try s.execute(
                type: Int(RTM_DELLINK), flags: 0,
                build: { b in
                    var ifi = ifinfomsg()
                    ifi.ifi_family = UInt8(AF_UNSPEC)
                    ifi.ifi_index = index
                    b.header(ifi)
                })
        }
    }

    // MARK: Addresses

    /// Addresses, optionally only those of one interface and one family (AF_INET, AF_INET6).
    public func addresses(interfaceIndex: Int32? = nil, family: Int32 = AF_UNSPEC) throws -> [InterfaceAddress] {
        var out: [InterfaceAddress] = []
        try dump(
            "address dump", type: Int(RTM_GETADDR),
            build: { b in
                var ifa = ifaddrmsg()
                ifa.ifa_family = UInt8(family)
                b.header(ifa)
            },
            each: { m in
                if let a = parseAddress(m), interfaceIndex == nil || a.interfaceIndex == interfaceIndex { out.append(a) }
            }, reset: { out = [] })
        return out
    }

    public func addAddress(_ address: InterfaceAddress) throws {
        try changeAddress(address, type: Int(RTM_NEWADDR), flags: NLM_F_CREATE | NLM_F_EXCL, verb: "adding")
    }

    public func deleteAddress(_ address: InterfaceAddress) throws {
        try changeAddress(address, type: Int(RTM_DELADDR), flags: 0, verb: "deleting")
    }

    private func changeAddress(_ a: InterfaceAddress, type: Int, flags: Int32, verb: String) throws {
        try perform({ s in "\(verb) address \(a.address)/\(a.prefixLength)\(Self.deviceName(s, a.interfaceIndex))" }) {
            s throws(RawFailure) in
            let isV4: Bool
            if case .v4 = a.address { isV4 = true } else { isV4 = false }
            guard a.prefixLength >= 0, a.prefixLength <= (isV4 ? 32 : 128) else {
                throw RawFailure(errno: EINVAL, kernelMessage: "prefix length \(a.prefixLength) out of range")
            }
            try s.execute(
                type: type, flags: flags,
                build: { b in
                    var ifa = ifaddrmsg()
                    ifa.ifa_family = UInt8(isV4 ? AF_INET : AF_INET6)
                    ifa.ifa_prefixlen = UInt8(a.prefixLength)
                    ifa.ifa_scope = a.scope
                    ifa.ifa_index = UInt32(bitPattern: a.interfaceIndex)
                    // Flags only matter when adding (ones read back from the kernel are not for a delete).
                    let flags = type == Int(RTM_NEWADDR) ? a.flags : 0
                    ifa.ifa_flags = UInt8(truncatingIfNeeded: flags)
                    b.header(ifa)
                    if flags != 0 { b.putU32(Int(IFA_FLAGS), flags) }
                    b.putIP(Int(IFA_LOCAL), a.address)
                    b.putIP(Int(IFA_ADDRESS), a.address)
                    if let label = a.label, isV4 { b.putString(Int(IFA_LABEL), label) }
                })
        }
    }

    // MARK: Routes

    /// IPv4 routes of one table (nil: all tables).
    public func routes(table: UInt32? = mainRoutingTable) throws -> [Route] {
        var out: [Route] = []
        try dump(
            "route dump", type: Int(RTM_GETROUTE),
            build: { b in
                var rtm = rtmsg()
                rtm.rtm_family = UInt8(AF_INET)
                b.header(rtm)
            },
            each: { m in
                if let r = parseRoute(m), table == nil || r.table == table { out.append(r) }
            }, reset: { out = [] })
        return out
    }

    /// The route the kernel would take to `destination` (`ip route get`): its output
    /// interface and preferred source address.
    public func routeGet(_ destination: IPv4Address) throws -> Route {
        var found: Route?
        try perform({ _ in "route lookup for \(destination)" }) { s throws(RawFailure) in
            try s.execute(
                type: Int(RTM_GETROUTE), flags: 0,
                build: { b in
                    var rtm = rtmsg()
                    rtm.rtm_family = UInt8(AF_INET)
                    rtm.rtm_dst_len = 32
                    b.header(rtm)
                    b.putIPv4(Int(RTA_DST.rawValue), destination)
                },
                onMessage: { m in
                    if let r = parseRoute(m) { found = r }
                })
        }
        guard let found else { throw NetlinkError(object: "route lookup for \(destination)", errno: ENETUNREACH) }
        return found
    }

    /// Adds a route; fails with EEXIST when one with the same key exists.
    public func addRoute(_ route: Route) throws {
        try changeRoute(route, type: Int(RTM_NEWROUTE), flags: NLM_F_CREATE | NLM_F_EXCL, verb: "adding")
    }

    /// Adds a route or replaces the one with the same destination, table and metric.
    public func replaceRoute(_ route: Route) throws {
        try changeRoute(route, type: Int(RTM_NEWROUTE), flags: NLM_F_CREATE | NLM_F_REPLACE, verb: "replacing")
    }

    /// Deletes a route. Its protocol (and gateway and device, when given) must match, so a
    /// delete of a Twill route never removes somebody else's route to the same place.
    public func deleteRoute(_ route: Route) throws {
        try changeRoute(route, type: Int(RTM_DELROUTE), flags: 0, verb: "deleting")
    }

    private func changeRoute(_ r: Route, type: Int, flags: Int32, verb: String) throws {
        try perform({ s in Self.describe(s, r, verb: verb) }) { s throws(RawFailure) in
            try s.execute(
                type: type, flags: flags,
                build: { b in
                    let deleting = type == Int(RTM_DELROUTE)
                    var rtm = rtmsg()
                    rtm.rtm_family = UInt8(AF_INET)
                    rtm.rtm_dst_len = UInt8(r.destination.prefixLength)
                    rtm.rtm_table = r.table < 256 ? UInt8(r.table) : 0
                    rtm.rtm_protocol = r.routeProtocol
                    if deleting {
                        rtm.rtm_scope = r.scope ?? RouteScope.nowhere
                        rtm.rtm_type = 0
                    } else {
                        rtm.rtm_scope = r.scope ?? (r.gateway == nil ? RouteScope.link : RouteScope.universe)
                        rtm.rtm_type = r.type
                    }
                    if r.onLink { rtm.rtm_flags = UInt32(RTNH_F_ONLINK) }
                    b.header(rtm)
                    b.putU32(Int(RTA_TABLE.rawValue), r.table)
                    if r.destination.prefixLength > 0 { b.putIPv4(Int(RTA_DST.rawValue), r.destination.address) }
                    if let g = r.gateway { b.putIPv4(Int(RTA_GATEWAY.rawValue), g) }
                    if let o = r.outputInterface { b.putU32(Int(RTA_OIF.rawValue), UInt32(bitPattern: o)) }
                    if let m = r.metric { b.putU32(Int(RTA_PRIORITY.rawValue), m) }
                    if let p = r.preferredSource { b.putIPv4(Int(RTA_PREFSRC.rawValue), p) }
                })
        }
    }

    private static func describe(_ s: NetlinkSocket, _ r: Route, verb: String) -> String {
        var text = "\(verb) route \(r.destination)"
        if let g = r.gateway { text += " via \(g)" }
        text += deviceName(s, r.outputInterface)
        if r.onLink { text += " onlink" }
        if r.table != mainRoutingTable { text += " table \(r.table)" }
        return text
    }

    // MARK: IPv6 routes

    /// IPv6 routes of one table (nil: all tables).
    public func routes6(table: UInt32? = mainRoutingTable) throws -> [Route6] {
        var out: [Route6] = []
        try dump(
            "IPv6 route dump", type: Int(RTM_GETROUTE),
            build: { b in
                var rtm = rtmsg()
                rtm.rtm_family = UInt8(AF_INET6)
                b.header(rtm)
            },
            each: { m in
                if let r = parseRoute6(m), table == nil || r.table == table { out.append(r) }
            }, reset: { out = [] })
        return out
    }

    /// Adds an IPv6 route or replaces the one with the same destination, table and metric.
    public func replaceRoute6(_ route: Route6) throws {
        try changeRoute6(route, type: Int(RTM_NEWROUTE), flags: NLM_F_CREATE | NLM_F_REPLACE, verb: "replacing")
    }

    /// Deletes an IPv6 route; as ``deleteRoute(_:)``, its protocol must match.
    public func deleteRoute6(_ route: Route6) throws {
        try changeRoute6(route, type: Int(RTM_DELROUTE), flags: 0, verb: "deleting")
    }

    private func changeRoute6(_ r: Route6, type: Int, flags: Int32, verb: String) throws {
        try perform({ s in
            "\(verb) route \(r.destination)\(r.gateway.map { " via \($0)" } ?? "")\(Self.deviceName(s, r.outputInterface))\(r.onLink ? " onlink" : "")"
        }) { s throws(RawFailure) in
            try s.execute(
                type: type, flags: flags,
                build: { b in
                    var rtm = rtmsg()
                    rtm.rtm_family = UInt8(AF_INET6)
                    rtm.rtm_dst_len = UInt8(r.destination.prefixLength)
                    rtm.rtm_table = r.table < 256 ? UInt8(r.table) : 0
                    rtm.rtm_protocol = r.routeProtocol
                    // IPv6 routes are all of universe scope; a delete matches any type.
                    rtm.rtm_scope = type == Int(RTM_DELROUTE) ? RouteScope.nowhere : RouteScope.universe
                    rtm.rtm_type = type == Int(RTM_DELROUTE) ? 0 : r.type
                    if r.onLink { rtm.rtm_flags = UInt32(RTNH_F_ONLINK) }
                    b.header(rtm)
                    b.putU32(Int(RTA_TABLE.rawValue), r.table)
                    if r.destination.prefixLength > 0 { b.putIP(Int(RTA_DST.rawValue), .v6(r.destination.address)) }
                    if let g = r.gateway { b.putIP(Int(RTA_GATEWAY.rawValue), .v6(g)) }
                    if let o = r.outputInterface { b.putU32(Int(RTA_OIF.rawValue), UInt32(bitPattern: o)) }
                    if let m = r.metric { b.putU32(Int(RTA_PRIORITY.rawValue), m) }
                })
        }
    }

    // MARK: Neighbours

    /// IPv4 and IPv6 neighbour entries, optionally of one interface.
    public func neighbours(interfaceIndex: Int32? = nil) throws -> [Neighbour] {
        var out: [Neighbour] = []
        try dump(
            "neighbour dump", type: Int(RTM_GETNEIGH),
            build: { b in
                var nd = ndmsg()
                nd.ndm_family = UInt8(AF_UNSPEC)
                b.header(nd)
            },
            each: { m in
                if let n = parseNeighbour(m), interfaceIndex == nil || n.interfaceIndex == interfaceIndex { out.append(n) }
            }, reset: { out = [] })
        return out
    }

    public func addNeighbour(_ n: Neighbour) throws {
        try changeNeighbour(n, type: Int(RTM_NEWNEIGH), flags: NLM_F_CREATE | NLM_F_EXCL, verb: "adding")
    }

    public func replaceNeighbour(_ n: Neighbour) throws {
        try changeNeighbour(n, type: Int(RTM_NEWNEIGH), flags: NLM_F_CREATE | NLM_F_REPLACE, verb: "replacing")
    }

    public func deleteNeighbour(_ n: Neighbour) throws {
        try changeNeighbour(n, type: Int(RTM_DELNEIGH), flags: 0, verb: "deleting")
    }

    private func changeNeighbour(_ n: Neighbour, type: Int, flags: Int32, verb: String) throws {
        try perform({ s in "\(verb) neighbour \(n.address)\(n.mac.map { " lladdr \($0)" } ?? "")\(Self.deviceName(s, n.interfaceIndex))" })
        { s throws(RawFailure) in
            try s.execute(
                type: type, flags: flags,
                build: { b in
                    var nd = ndmsg()
                    if case .v4 = n.address { nd.ndm_family = UInt8(AF_INET) } else { nd.ndm_family = UInt8(AF_INET6) }
                    nd.ndm_ifindex = n.interfaceIndex
                    nd.ndm_state = n.state
                    nd.ndm_flags = n.flags
                    b.header(nd)
                    b.putIP(Int(NDA_DST), n.address)
                    if let mac = n.mac, type != Int(RTM_DELNEIGH) { b.put(Int(NDA_LLADDR), mac.bytes) }
                })
        }
    }

    // MARK: FDB

    /// Bridge forwarding-database entries (family AF_BRIDGE), optionally of one device.
    public func fdbEntries(interfaceIndex: Int32? = nil) throws -> [FDBEntry] {
        var out: [FDBEntry] = []
        try dump(
            "fdb dump", type: Int(RTM_GETNEIGH),
            build: { b in
                var nd = ndmsg()
                nd.ndm_family = UInt8(AF_BRIDGE)
                b.header(nd)
            },
            each: { m in
                if let e = parseFDB(m), interfaceIndex == nil || e.interfaceIndex == interfaceIndex { out.append(e) }
            }, reset: { out = [] })
        return out
    }

    public func addFDBEntry(_ e: FDBEntry) throws {
        try changeFDB(e, type: Int(RTM_NEWNEIGH), flags: NLM_F_CREATE | NLM_F_EXCL, verb: "adding")
    }

    /// Adds an entry or replaces the one for the same MAC (and destination, on vxlan).
    public func replaceFDBEntry(_ e: FDBEntry) throws {
        try changeFDB(e, type: Int(RTM_NEWNEIGH), flags: NLM_F_CREATE | NLM_F_REPLACE, verb: "replacing")
    }

    public func deleteFDBEntry(_ e: FDBEntry) throws {
        try changeFDB(e, type: Int(RTM_DELNEIGH), flags: 0, verb: "deleting")
    }

    private func changeFDB(_ e: FDBEntry, type: Int, flags: Int32, verb: String) throws {
        try perform({ s in "\(verb) fdb entry \(e.mac)\(e.destination.map { " dst \($0)" } ?? "")\(Self.deviceName(s, e.interfaceIndex))" })
        { s throws(RawFailure) in
            try s.execute(
                type: type, flags: flags,
                build: { b in
                    var nd = ndmsg()
                    nd.ndm_family = UInt8(AF_BRIDGE)
                    nd.ndm_ifindex = e.interfaceIndex
                    nd.ndm_state = e.state
                    nd.ndm_flags = e.flags
                    b.header(nd)
                    b.put(Int(NDA_LLADDR), e.mac.bytes)
                    if let d = e.destination { b.putIP(Int(NDA_DST), d) }
                    if let v = e.vni { b.putU32(Int(NDA_VNI), v) }
                })
        }
    }
}
