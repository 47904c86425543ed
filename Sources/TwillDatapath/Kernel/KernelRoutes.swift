import Logging
import TwillAddress
import TwillNetlink

#if canImport(Glibc)
import Glibc
#endif

/// A device's addresses made exactly what a backend wants (the kernel's own link-local IPv6
/// address aside): a device kept from an earlier run may hold an older subnet's.
enum KernelAddresses {
    /// Adds what is missing from `wanted` and deletes every other address of `family` on
    /// device `index`; true when something changed.
    @discardableResult
    static func ensureExactly(_ netlink: any KernelRouting, index: Int32, family: Int32, _ wanted: [InterfaceAddress]) throws -> Bool {
        var missing = wanted
        var changed = false
        for a in try netlink.addresses(interfaceIndex: index, family: family) {
            if let v6 = a.address.v6, v6.isLinkLocal { continue }
            if let i = missing.firstIndex(where: { $0.address == a.address && $0.prefixLength == a.prefixLength }) {
                missing.remove(at: i)
            } else {
                try netlink.deleteAddress(a)
                changed = true
            }
        }
        for a in missing {
            try netlink.addAddress(a)
            changed = true
        }
        return changed
    }
}

enum KernelRoutes {
    /// The IPv4 prefixes directly attached to interface `index` (from its addresses).
    static func onLinkNetworks(_ netlink: any KernelRouting, interfaceIndex index: Int32) throws -> [IPv4Network] {
        try netlink.addresses(interfaceIndex: index, family: AF_INET).compactMap(\.ipv4Network)
    }

    /// The IPv4 addresses of interface `index`.
    static func ownAddresses(_ netlink: any KernelRouting, interfaceIndex index: Int32) throws -> [IPv4Address] {
        try netlink.addresses(interfaceIndex: index, family: AF_INET).compactMap { $0.address.v4 }
    }

    /// Whether two routes send traffic the same way (what reconcile compares).
    static func same(_ a: Route, _ b: Route) -> Bool {
        a.destination == b.destination && a.gateway == b.gateway && a.outputInterface == b.outputInterface
            && a.onLink == b.onLink && a.table == b.table
    }

    /// Makes the Twill-owned routes (protocol ``twillRouteProtocol``) of the main table that
    /// lie inside `network` exactly `desired`: deletes the others, adds the missing ones,
    /// replaces those that differ. Routes of any other protocol are never touched, and
    /// nothing is written when the kernel already matches (so reconciling on the monitor's
    /// events cannot feed itself). Returns one message per failure; never throws.
    static func reconcile(_ netlink: any KernelRouting, network: IPv4Network, desired: [Route], logger: Logger) -> [String] {
        let existing: [Route]
        do {
            existing = try netlink.routes(table: mainRoutingTable).filter {
                $0.isTwillOwned && network.contains($0.destination) && $0.type == 1
            }
        } catch {
            return ["listing routes: \(error)"]
        }
        return reconcile(
            existing: existing, desired: desired, destination: \.destination, same: same,
            delete: netlink.deleteRoute, replace: netlink.replaceRoute, logger: logger)
    }

    /// The diff both families share: of `existing` (Twill's routes in the network), those
    /// `desired` and already `same` stay, the others go; missing and differing desired ones
    /// are put in place. One message per failure.
    private static func reconcile<R: CustomStringConvertible, D: Hashable>(
        existing: [R], desired: [R], destination: (R) -> D, same: (R, R) -> Bool,
        delete: (R) throws -> Void, replace: (R) throws -> Void, logger: Logger
    ) -> [String] {
        var failures: [String] = []
        var wanted: [D: R] = [:]
        for r in desired { wanted[destination(r)] = r }
        var satisfied: Set<D> = []
        for r in existing {
            let d = destination(r)
            if let w = wanted[d], !satisfied.contains(d) {
                if same(r, w) { satisfied.insert(d) }
                continue // a differing one is replaced below
            }
            do {
                try delete(r)
                logger.info("removed a stale Twill route", metadata: ["route": "\(r)"])
            } catch let e as NetlinkError where e.isNotFound {
            } catch {
                failures.append("\(error)")
            }
        }
        for r in desired where !satisfied.contains(destination(r)) {
            do {
                try replace(r)
                logger.info("restored a missing Twill route", metadata: ["route": "\(r)"])
            } catch {
                failures.append("\(error)")
            }
        }
        return failures
    }

    /// The IPv6 addresses of interface `index`.
    static func ownAddresses6(_ netlink: any KernelRouting, interfaceIndex index: Int32) throws -> [IPv6Address] {
        try netlink.addresses(interfaceIndex: index, family: AF_INET6).compactMap { $0.address.v6 }
    }

    /// The global IPv6 prefixes on the link of interface `index`: those of its addresses, and
    /// those of gateway-less routes through it that are not Twill's (an RA's on-link prefix,
    /// where the address itself is a DHCPv6 /128).
    static func onLinkNetworks6(_ netlink: any KernelRouting, interfaceIndex index: Int32) throws -> [IPv6Network] {
        let fromAddresses = try netlink.addresses(interfaceIndex: index, family: AF_INET6).compactMap { a in
            a.address.v6.flatMap { $0.isLinkLocal ? nil : try? IPv6Network(containing: $0, prefixLength: a.prefixLength) }
        }
        let fromRoutes = try netlink.routes6().filter {
            $0.outputInterface == index && $0.gateway == nil && !$0.isTwillOwned && $0.type == 1
                && $0.destination.prefixLength > 0 && !$0.destination.address.isLinkLocal && !$0.destination.address.isMulticast
        }.map(\.destination)
        return fromAddresses + fromRoutes
    }

    /// The IPv6 version of ``reconcile(_:network:desired:logger:)``: Twill's IPv6 routes inside
    /// `network` become exactly `desired`; nothing else is touched.
    static func reconcile6(_ netlink: any KernelRouting, network: IPv6Network, desired: [Route6], logger: Logger) -> [String] {
        let existing: [Route6]
        do {
            existing = try netlink.routes6(table: mainRoutingTable).filter {
                $0.isTwillOwned && network.contains($0.destination) && $0.type == 1
            }
        } catch {
            return ["listing IPv6 routes: \(error)"]
        }
        return reconcile(
            existing: existing, desired: desired, destination: \.destination,
            same: {
                $0.destination == $1.destination && $0.gateway == $1.gateway && $0.outputInterface == $1.outputInterface
                    && $0.onLink == $1.onLink
            }, delete: netlink.deleteRoute6, replace: netlink.replaceRoute6, logger: logger)
    }

    /// Deletes the Twill IPv6 route to `destination`; absent is fine.
    static func deleteOwned6(_ netlink: any KernelRouting, destination: IPv6Network) throws {
        do {
            try netlink.deleteRoute6(Route6(destination: destination))
        } catch let e as NetlinkError where e.isNotFound {
        }
    }

    /// Deletes the Twill route to `destination` (any gateway, any device); absent is fine.
    static func deleteOwned(_ netlink: any KernelRouting, destination: IPv4Network) throws {
        do {
            try netlink.deleteRoute(Route(destination: destination))
        } catch let e as NetlinkError where e.isNotFound {
        }
    }
}

extension KernelRoutes {
    /// - Parameter devices: the backend's own devices (the vxlan devices), besides the external one.
    static func affects(_ change: NetlinkChange, network: IPv4Network?, network6: IPv6Network?, externalIndex: Int32, devices: Set<Int32>)
        -> Bool
    {
        func inNetwork(_ r: Route) -> Bool {
            guard r.table == mainRoutingTable else { return false }
            // Not started yet: any route may matter. IPv6-only: no IPv4 route does.
            guard let network else { return network6 == nil }
            return network.contains(r.destination) || r.destination.contains(network)
        }
        func inNetwork6(_ r: Route6) -> Bool {
            guard r.table == mainRoutingTable, let network6 else { return false }
            return network6.contains(r.destination) || r.destination.contains(network6)
        }
        let ours = devices.union([externalIndex])
        switch change {
        case .overrun: return true
        case .routeAdded(let r), .routeRemoved(let r): return inNetwork(r)
        case .route6Added(let r), .route6Removed(let r): return inNetwork6(r)
        case .linkChanged(let l), .linkRemoved(let l): return ours.contains(l.index)
        case .addressAdded(let a), .addressRemoved(let a):
            // IPv6 link-local addresses come and go with links (and DAD), and SLAAC refreshes
            // global ones with every router advertisement: followed only where IPv6 is routed.
            if let v6 = a.address.v6, v6.isLinkLocal || network6 == nil { return false }
            return ours.contains(a.interfaceIndex)
        case .neighbourAdded(let n), .neighbourRemoved(let n): return devices.contains(n.interfaceIndex)
        case .fdbAdded(let f), .fdbRemoved(let f): return devices.contains(f.interfaceIndex)
        }
    }
}
