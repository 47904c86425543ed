import CNetlink
import TwillAddress

#if canImport(Glibc)
import Glibc
#endif

// Decoding of rtnetlink messages into the public value types. Each returns nil for a
// message it cannot read (too short, another family), which callers skip.

func parseLink(_ msg: UnsafePointer<nlmsghdr>) -> Link? {
    guard let ifi = familyHeader(msg, as: ifinfomsg.self) else { return nil }
    let attrs = AttributeTable(message: msg, headerSize: MemoryLayout<ifinfomsg>.size)
    var kind: String?
    var vxlan: VXLANAttributes?
    if let info = attrs.nested(Int(IFLA_LINKINFO)) {
        kind = info.string(Int(IFLA_INFO_KIND))
        if kind == "vxlan", let data = info.nested(Int(IFLA_INFO_DATA)) {
            let link = data.u32(Int(IFLA_VXLAN_LINK)).map { Int32(bitPattern: $0) }
            vxlan = VXLANAttributes(
                vni: data.u32(Int(IFLA_VXLAN_ID)) ?? 0,
                local: data.ipv4(Int(IFLA_VXLAN_LOCAL)),
                local6: data.ip(Int(IFLA_VXLAN_LOCAL6))?.v6,
                underlayIndex: link == 0 ? nil : link,
                port: data.u16(Int(IFLA_VXLAN_PORT)).map { UInt16(bigEndian: $0) } ?? 0,
                learning: (data.u8(Int(IFLA_VXLAN_LEARNING)) ?? 0) != 0,
                gbp: data.has(Int(IFLA_VXLAN_GBP)))
        }
    }
    let master = attrs.u32(Int(IFLA_MASTER)).map { Int32(bitPattern: $0) }
    return Link(
        index: ifi.ifi_index,
        name: attrs.string(Int(IFLA_IFNAME)) ?? "",
        kind: kind,
        mtu: Int(attrs.u32(Int(IFLA_MTU)) ?? 0),
        mac: attrs.mac(Int(IFLA_ADDRESS)),
        flags: InterfaceFlags(rawValue: ifi.ifi_flags),
        masterIndex: master == 0 ? nil : master,
        vxlan: vxlan)
}

func parseAddress(_ msg: UnsafePointer<nlmsghdr>) -> InterfaceAddress? {
    guard let ifa = familyHeader(msg, as: ifaddrmsg.self) else { return nil }
    let attrs = AttributeTable(message: msg, headerSize: MemoryLayout<ifaddrmsg>.size)
    // For IPv4, IFA_LOCAL is the address itself (IFA_ADDRESS is the peer on point-to-point links).
    guard let address = attrs.ip(Int(IFA_LOCAL)) ?? attrs.ip(Int(IFA_ADDRESS)) else { return nil }
    return InterfaceAddress(
        interfaceIndex: Int32(bitPattern: ifa.ifa_index), address: address,
        prefixLength: Int(ifa.ifa_prefixlen), scope: ifa.ifa_scope, label: attrs.string(Int(IFA_LABEL)),
        flags: attrs.u32(Int(IFA_FLAGS)) ?? UInt32(ifa.ifa_flags))
}

func parseRoute(_ msg: UnsafePointer<nlmsghdr>) -> Route? {
    guard let rtm = familyHeader(msg, as: rtmsg.self), Int32(rtm.rtm_family) == AF_INET else { return nil }
    let attrs = AttributeTable(message: msg, headerSize: MemoryLayout<rtmsg>.size)
    let dst = attrs.ipv4(Int(RTA_DST.rawValue)) ?? .any
    guard let network = try? IPv4Network(containing: dst, prefixLength: Int(rtm.rtm_dst_len)) else { return nil }
    return Route(
        destination: network,
        gateway: attrs.ipv4(Int(RTA_GATEWAY.rawValue)),
        outputInterface: attrs.u32(Int(RTA_OIF.rawValue)).map { Int32(bitPattern: $0) },
        onLink: rtm.rtm_flags & UInt32(RTNH_F_ONLINK) != 0,
        scope: rtm.rtm_scope,
        table: attrs.u32(Int(RTA_TABLE.rawValue)) ?? UInt32(rtm.rtm_table),
        routeProtocol: rtm.rtm_protocol,
        type: rtm.rtm_type,
        metric: attrs.u32(Int(RTA_PRIORITY.rawValue)),
        preferredSource: attrs.ipv4(Int(RTA_PREFSRC.rawValue)))
}

func parseRoute6(_ msg: UnsafePointer<nlmsghdr>) -> Route6? {
    guard let rtm = familyHeader(msg, as: rtmsg.self), Int32(rtm.rtm_family) == AF_INET6 else { return nil }
    let attrs = AttributeTable(message: msg, headerSize: MemoryLayout<rtmsg>.size)
    let dst = attrs.ip(Int(RTA_DST.rawValue))?.v6 ?? .any
    guard let network = try? IPv6Network(containing: dst, prefixLength: Int(rtm.rtm_dst_len)) else { return nil }
    return Route6(
        destination: network,
        gateway: attrs.ip(Int(RTA_GATEWAY.rawValue))?.v6,
        outputInterface: attrs.u32(Int(RTA_OIF.rawValue)).map { Int32(bitPattern: $0) },
        onLink: rtm.rtm_flags & UInt32(RTNH_F_ONLINK) != 0,
        table: attrs.u32(Int(RTA_TABLE.rawValue)) ?? UInt32(rtm.rtm_table),
        routeProtocol: rtm.rtm_protocol,
        type: rtm.rtm_type,
        metric: attrs.u32(Int(RTA_PRIORITY.rawValue)))
}

func parseNeighbour(_ msg: UnsafePointer<nlmsghdr>) -> Neighbour? {
    guard let nd = familyHeader(msg, as: ndmsg.self) else { return nil }
    let family = Int32(nd.ndm_family)
    guard family == AF_INET || family == AF_INET6 else { return nil }
    let attrs = AttributeTable(message: msg, headerSize: MemoryLayout<ndmsg>.size)
    guard let ip = attrs.ip(Int(NDA_DST)) else { return nil }
    return Neighbour(
        interfaceIndex: nd.ndm_ifindex, address: ip, mac: attrs.mac(Int(NDA_LLADDR)),
        state: nd.ndm_state, flags: nd.ndm_flags)
}

func parseFDB(_ msg: UnsafePointer<nlmsghdr>) -> FDBEntry? {
    guard let nd = familyHeader(msg, as: ndmsg.self), Int32(nd.ndm_family) == AF_BRIDGE else { return nil }
    let attrs = AttributeTable(message: msg, headerSize: MemoryLayout<ndmsg>.size)
    guard let mac = attrs.mac(Int(NDA_LLADDR)) else { return nil }
    return FDBEntry(
        interfaceIndex: nd.ndm_ifindex, mac: mac, destination: attrs.ip(Int(NDA_DST)),
        state: nd.ndm_state, flags: nd.ndm_flags, vni: attrs.u32(Int(NDA_VNI)))
}
