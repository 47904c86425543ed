import TwillAddress
import TwillDatapath
import TwillNetlink

/// `--ip-blackhole-route`: a blackhole route for this node's own subnet, so that a packet to
/// an unused address in it is dropped here instead of following the default route out of the
/// node (flannel adds it for set-ups without a bridge, Canal say).
///
/// Unlike flannel's (metric 0, added before the bridge exists), it has the highest metric:
/// the bridge's connected route for the same prefix, when there is one, still wins, so
/// turning the flag on never cuts off the node's own workloads.
enum BlackholeRoute {
    /// The highest metric there is: every other route to the subnet is preferred.
    static let metric = UInt32.max
    static let blackholeType: UInt8 = 6

    static func route(for subnet: IPv4Network) -> Route {
        Route(destination: subnet, scope: RouteScope.universe, type: blackholeType, metric: metric)
    }

    /// Makes the node's blackhole route the one for `subnet` (a moved node's old one goes).
    /// Returns whether anything had to change.
    @discardableResult
    static func ensure(_ subnet: IPv4Network, netlink: any KernelRouting) throws -> Bool {
        let ours = try netlink.routes().filter(isOurs)
        var changed = false
        for r in ours where r.destination != subnet {
            try netlink.deleteRoute(route(for: r.destination))
            changed = true
        }
        if !ours.contains(where: { $0.destination == subnet }) {
            try netlink.replaceRoute(route(for: subnet))
            changed = true
        }
        return changed
    }

    /// Removes the node's blackhole routes (the agent stops, or the flag is off now).
    static func removeAll(netlink: any KernelRouting) throws {
        for r in try netlink.routes().filter(isOurs) { try netlink.deleteRoute(route(for: r.destination)) }
    }

    static func isOurs(_ r: Route) -> Bool { r.type == blackholeType && r.isTwillOwned }
}
