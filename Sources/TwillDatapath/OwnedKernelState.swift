import Logging
import TwillAddress
import TwillNetlink

#if canImport(Glibc)
import Glibc
#endif

/// What of a node's kernel state is Twill's, by the rules every backend keeps: routes of
/// protocol ``twillRouteProtocol`` (84) in the main table, either family, blackhole ones
/// included; and the devices the backends make (``BackendRegistry/isTwillDevice(_:tunName:)``).
/// Nothing else (another protocol's route, another tool's device) is ever touched.
public enum OwnedKernelState {
    /// Deletes Twill's devices except those named in `keeping`; returns what went, one line
    /// each. A device deleted takes its addresses, routes, neighbours and FDB entries along.
    @discardableResult
    public static func removeDevices(_ netlink: any KernelRouting, tunName: String, keeping: [String] = [], logger: Logger) throws
        -> [String]
    {
        var removed: [String] = []
        for link in try netlink.links() where BackendRegistry.isTwillDevice(link, tunName: tunName) && !keeping.contains(link.name) {
            do {
                try netlink.deleteLink(index: link.index)
                removed.append("device \(link.name) (\(link.kind ?? "-"))")
            } catch let e as NetlinkError where e.isNotFound {
                continue
            }
        }
        for line in removed { logger.notice("removed \(line)") }
        return removed
    }

    /// Deletes every route of Twill's protocol in the main table, both families; returns what
    /// went, one line each, and the failures.
    public static func removeRoutes(_ netlink: any KernelRouting, logger: Logger) throws -> (removed: [String], failures: [String]) {
        var removed: [String] = []
        var failures: [String] = []
        func remove<R: CustomStringConvertible>(_ routes: [R], _ delete: (R) throws -> Void) {
            for route in routes {
                do {
                    try delete(route)
                    removed.append("route \(route)")
                } catch let e as NetlinkError where e.isNotFound {
                    continue
                } catch {
                    failures.append("route \(route): \(error)")
                }
            }
        }
        remove(try netlink.routes(table: mainRoutingTable).filter(\.isTwillOwned), netlink.deleteRoute)
        remove(try netlink.routes6(table: mainRoutingTable).filter(\.isTwillOwned), netlink.deleteRoute6)
        for line in removed { logger.notice("removed \(line)") }
        return (removed, failures)
    }
}
