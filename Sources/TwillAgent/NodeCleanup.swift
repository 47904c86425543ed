import Logging
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

/// `twill cleanup`: removes from this node (its network namespace) everything Twill owns, as
/// an operator uninstalling it wants. A stopped agent leaves its data path in place (so that a
/// restart is no outage); this is how it goes for good.
///
/// Ownership is the agent's own rules: Twill's devices (``BackendRegistry/isTwillDevice(_:tunName:)``),
/// routes of protocol 84 (blackhole route included), flannel's iptables chains
/// `FLANNEL-POSTRTG` and `FLANNEL-FWD` with their jumps (both families), and the nftables
/// tables `ip flannel-ipv4` and `ip6 flannel-ipv6`. Nothing else is touched: not another
/// tool's route, chain or device, not the lease in etcd, not subnet.env or the WireGuard key.
public enum NodeCleanup {
    /// What a cleanup did.
    public struct Report: Sendable {
        /// One line per device or route removed.
        public var removed: [String] = []
        /// One line per thing that could not be removed.
        public var failures: [String] = []
    }

    /// Removes Twill's state; `tunName` is the udp backend's TUN (`--tun-name`).
    public static func run(tunName: String, logger: Logger) -> Report {
        var report = Report()
        // A holder of a stopped agent's TUN queues and sockets lets them go (the TUN is no
        // longer kept alive by them).
        EngineDescriptors.discardUntaken(HeldDescriptorStore())
        // Rules first: no masquerade for an overlay that is going away.
        IPTablesRules.removeLeftovers(logger: logger)
        NFTablesRules.removeLeftovers(logger: logger)
        do {
            let netlink = try Netlink()
            // Devices before routes: a device's routes go with it.
            report.removed += try OwnedKernelState.removeDevices(netlink, tunName: tunName, logger: logger)
            let routes = try OwnedKernelState.removeRoutes(netlink, logger: logger)
            report.removed += routes.removed
            report.failures += routes.failures
        } catch {
            report.failures.append("\(error)")
        }
        return report
    }

    /// The process ID of a Twill (or flanneld) agent running in this network namespace, other
    /// than this process; nil when there is none.
    public static func runningAgent() -> Int32? {
        let ownNamespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        let me = getpid()
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for entry in entries {
            guard let pid = Int32(entry), pid != me,
                let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
            else { continue }
            let argv = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let program = argv.first?.split(separator: "/").last.map(String.init) else { continue }
            let isAgent = (program == "twill" && argv.dropFirst().first == "agent") || program == "flanneld"
            guard isAgent, (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")) == ownNamespace else {
                continue
            }
            return pid
        }
        return nil
    }
}
