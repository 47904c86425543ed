import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Which tier of the suite runs, from `TWILL_TEST_TIER` (set by the Makefile's `unit`,
/// `integration` and `e2e` targets; unset means everything, as `swift test` alone).
///
/// - `unit`: no root, no etcd, no network, not even loopback. It must pass inside
///   `unshare -n`: logic behind a small protocol, on in-memory fakes.
/// - `integration`: a real etcd on loopback ports and the real kernel (namespaces, TUN,
///   routes, iptables), as root.
/// - `e2e`: whole agents, CNI plugins, Docker, systemd: the `EndToEndTests` target.
public enum TestTier: String, Sendable {
    case unit
    case integration
    case e2e
    case all

    /// The tier this process runs.
    public static let current: TestTier = {
        guard let raw = ProcessInfo.processInfo.environment["TWILL_TEST_TIER"], !raw.isEmpty else { return .all }
        return TestTier(rawValue: raw) ?? .all
    }()

    /// Whether tests that need real resources (root, etcd, sockets) run.
    public var runsRealResources: Bool { self != .unit }
}

extension Trait where Self == ConditionTrait {
    /// The test needs root and the real kernel: network namespaces, TUN, routes, netlink,
    /// iptables/nftables. Skipped in the unit tier and when not root.
    public static var requiresRoot: Self {
        .enabled(
            if: TestTier.current.runsRealResources && geteuid() == 0,
            "needs root and the real kernel (make integration or make e2e, as root)")
    }

    /// The test starts a real etcd on loopback ports. Skipped in the unit tier.
    public static var requiresEtcd: Self {
        .enabled(if: TestTier.current.runsRealResources, "needs a real etcd (make integration)")
    }

}
