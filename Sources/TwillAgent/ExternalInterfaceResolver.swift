import TwillAddress
import TwillDatapath
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

/// Finds the interface that carries overlay traffic, as flanneld does: `--iface` (names or
/// addresses, first match wins), else `--iface-regex`, else the interface the kernel would
/// use to reach `--iface-can-reach`; with none of these given, the interface holding
/// `--public-ip`, else that of the default route (the IPv6 one on a node without IPv4). Its
/// first IPv4 address is the local address (for can-reach, the route's source address), 0.0.0.0
/// on an interface with IPv6 only; `--public-ip` overrides what peers see. Its first global
/// IPv6 address is the local IPv6 one, which `--public-ipv6` overrides for peers.
public enum ExternalInterfaceResolver {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    struct Candidate {
        var name: String
        var index: Int32
        var addresses: [IPv4Address]
        var mtu: Int
        /// Global IPv6 addresses (link-local ones cannot be a tunnel's end without a zone).
        var addresses6: [IPv6Address] = []
    }

    /// - Parameter publicIPv6: `--public-ipv6`; without it, the chosen interface's first global
    ///   IPv6 address, if it has one, is what peers see (as flanneld does).
    /// - Parameter allowIPv6Only: also take an interface with IPv6 addresses only (for an
    ///   IPv6-only network); its local IPv4 address is then 0.0.0.0.
    public static func resolve(
        ifaces: [String], ifaceRegex: [String], canReach: IPv4Address? = nil,
        publicIP: IPv4Address?, publicIPv6: IPv6Address? = nil, allowIPv6Only: Bool = false
    ) throws(Failure) -> ExternalInterface {
        let all = interfaces()
        var chosen: (Candidate, IPv4Address)?
        // As flanneld: each way given is tried in turn (names or addresses, then patterns,
        // then the route to the can-reach address); only when all fail is it an error.
        var misses: [String] = []
        for spec in ifaces where chosen == nil {
            if let ip = IPv4Address(spec) {
                if let c = all.first(where: { $0.addresses.contains(ip) }) {
                    chosen = (c, ip)
                } else {
                    misses.append("no interface has address \(spec)")
                }
            } else if let ip6 = IPv6Address(spec) {
                // An interface with IPv6 only is for an IPv6-only network (its local IPv4 is 0.0.0.0).
                if let c = all.first(where: { $0.addresses6.contains(ip6) }) {
                    if let ip = c.addresses.first ?? (allowIPv6Only ? .any : nil) {
                        chosen = (c, ip)
                    } else {
                        misses.append("\(c.name) (which has \(spec)) has no IPv4 address")
                    }
                } else {
                    misses.append("no interface has address \(spec)")
                }
            } else if let c = all.first(where: { $0.name == spec }) {
                if let ip = c.addresses.first ?? (allowIPv6Only && !c.addresses6.isEmpty ? .any : nil) {
                    chosen = (c, ip)
                } else {
                    misses.append("\(spec) has no IPv4 address")
                }
            } else {
                misses.append("no interface \(spec)")
            }
        }
        for pattern in ifaceRegex where chosen == nil {
            guard let re = try? Regex(pattern) else {
                throw Failure(description: "--iface-regex \(pattern) is not a valid regular expression")
            }
            for c in all where chosen == nil {
                if c.name.firstMatch(of: re) != nil, let ip = c.addresses.first ?? (allowIPv6Only && !c.addresses6.isEmpty ? .any : nil) {
                    chosen = (c, ip)
                } else if let ip = c.addresses.first(where: { "\($0)".firstMatch(of: re) != nil }) {
                    chosen = (c, ip)
                } else if allowIPv6Only || !c.addresses.isEmpty, c.addresses6.contains(where: { "\($0)".firstMatch(of: re) != nil }) {
                    chosen = (c, c.addresses.first ?? .any)
                }
            }
            if chosen == nil { misses.append("nothing matches --iface-regex \(pattern)") }
        }
        if chosen == nil, let target = canReach {
            // `ip route get <target>`: its device, and its source address as the local one.
            do {
                let route = try Netlink().routeGet(target)
                if let index = route.outputInterface, let c = all.first(where: { $0.index == index }) {
                    let source = route.preferredSource.flatMap { s in c.addresses.contains(s) ? s : nil } ?? c.addresses.first
                    if let ip = source {
                        chosen = (c, ip)
                    } else {
                        misses.append("--iface-can-reach \(target): interface \(c.name) has no IPv4 address")
                    }
                } else {
                    misses.append("--iface-can-reach \(target): the route to it leaves by an interface without an IPv4 address")
                }
            } catch {
                misses.append("--iface-can-reach \(target): the kernel has no route to it (\(error))")
            }
        }
        if chosen == nil, !(ifaces.isEmpty && ifaceRegex.isEmpty && canReach == nil) {
            throw Failure(description: "no interface matches \(misses.joined(separator: "; ")) (have: \(describe(all)))")
        }
        if chosen == nil {
            // Nothing asked for: the interface holding --public-ip (flanneld's choice), else
            // the one of the default route.
            if let ip = publicIP, let c = all.first(where: { $0.addresses.contains(ip) }) {
                chosen = (c, ip)
            } else if let index = defaultRouteInterfaceIndex(), let c = all.first(where: { $0.index == index }), let ip = c.addresses.first
            {
                chosen = (c, ip)
            } else if allowIPv6Only, let index = defaultRouteInterfaceIndex6(), let c = all.first(where: { $0.index == index }),
                !c.addresses6.isEmpty
            {
                // A node with IPv6 only: the interface of its IPv6 default route.
                chosen = (c, c.addresses.first ?? .any)
            }
        }
        guard let (c, local) = chosen else {
            throw Failure(
                description:
                    "no default route and no --iface given: cannot tell which interface carries overlay traffic (have: \(describe(all)))")
        }
        // An --iface given as an IPv6 address names the local IPv6 address too.
        let local6 = ifaces.lazy.compactMap(IPv6Address.init).first { c.addresses6.contains($0) } ?? preferredIPv6(c)
        return ExternalInterface(
            name: c.name, index: c.index, publicIP: publicIP ?? local, localIP: local, mtu: c.mtu,
            publicIPv6: publicIPv6 ?? local6, localIPv6: local6)
    }

    static func describe(_ all: [Candidate]) -> String {
        all.map { "\($0.name) \(($0.addresses.map { "\($0)" } + $0.addresses6.map { "\($0)" }).joined(separator: ","))" }.joined(
            separator: "; ")
    }

    /// Interfaces that are up, with their IPv4 and global IPv6 addresses.
    static func interfaces() -> [Candidate] {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return [] }
        defer { freeifaddrs(head) }
        var byName: [String: Candidate] = [:]
        var order: [String] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let p = cursor {
            defer { cursor = p.pointee.ifa_next }
            let flags = Int32(p.pointee.ifa_flags)
            guard flags & Int32(IFF_UP) != 0, let sa = p.pointee.ifa_addr,
                sa.pointee.sa_family == sa_family_t(AF_INET) || sa.pointee.sa_family == sa_family_t(AF_INET6)
            else { continue }
            let name = String(cString: p.pointee.ifa_name)
            if byName[name] == nil {
                order.append(name)
                byName[name] = Candidate(name: name, index: Int32(if_nametoindex(name)), addresses: [], mtu: mtu(of: name))
            }
            if sa.pointee.sa_family == sa_family_t(AF_INET) {
                let addr = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    IPv4Address(rawValue: UInt32(bigEndian: $0.pointee.sin_addr.s_addr))
                }
                byName[name]?.addresses.append(addr)
            } else {
                let bytes = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    withUnsafeBytes(of: p.pointee.sin6_addr) { Array($0) }
                }
                if let addr = try? IPv6Address(bytes: bytes), !addr.isLinkLocal, !addr.isLoopback, addr.ipv4Mapped == nil {
                    byName[name]?.addresses6.append(addr)
                }
            }
        }
        return order.compactMap { byName[$0] }
    }

    static func mtu(of name: String) -> Int {
        let text = (try? String(contentsOfFile: "/sys/class/net/\(name)/mtu", encoding: .utf8)) ?? ""
        return Int(text.trimmingWhitespace()) ?? 1500
    }

    /// The interface's IPv6 address for tunnels and peers, as flanneld orders them: a global one
    /// that is not deprecated, temporary (a privacy address) or failed, permanent ones first.
    static func preferredIPv6(_ c: Candidate) -> IPv6Address? {
        guard let listed = try? Netlink().addresses(interfaceIndex: c.index, family: AF_INET6) else { return c.addresses6.first }
        let bad = InterfaceAddress.temporary | InterfaceAddress.deprecated | InterfaceAddress.dadFailed
        let usable = listed.filter { a in
            guard let v6 = a.address.v6 else { return false }
            return !v6.isLinkLocal && !v6.isLoopback && a.flags & bad == 0
        }
        // Permanent before dynamic, and one still in DAD (tentative: not yet bindable) last.
        let rank = { (a: InterfaceAddress) -> Int in
            (a.flags & InterfaceAddress.tentative != 0 ? 2 : 0) + (a.flags & InterfaceAddress.permanent != 0 ? 0 : 1)
        }
        let ordered = usable.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
        return ordered.first?.address.v6 ?? c.addresses6.first
    }

    /// The interface index of the IPv6 default route (lowest metric).
    static func defaultRouteInterfaceIndex6() -> Int32? {
        guard let routes = try? Netlink().routes6() else { return nil }
        return routes.filter { $0.destination.prefixLength == 0 && $0.type == 1 && $0.outputInterface != nil }
            .min { ($0.metric ?? 0) < ($1.metric ?? 0) }?.outputInterface
    }

    /// The interface index of the IPv4 default route (lowest metric), read with netlink.
    static func defaultRouteInterfaceIndex() -> Int32? {
        guard let routes = try? Netlink().routes() else { return nil }
        return routes.filter { $0.destination.prefixLength == 0 && $0.type == 1 && $0.outputInterface != nil }
            .min { ($0.metric ?? 0) < ($1.metric ?? 0) }?.outputInterface
    }
}
