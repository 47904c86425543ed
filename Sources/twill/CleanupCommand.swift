import ArgumentParser
import Logging
import TwillAgent
import TwillSystem

/// `twill cleanup`: removes everything Twill owns on this node (``NodeCleanup``).
struct CleanupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract: "Remove Twill's devices, routes (protocol 84) and iptables/nftables rules from this node.",
        discussion: """
            A stopped agent leaves its data path in place, as flanneld does, so that a restart costs nothing; run this \
            when uninstalling. Only what is Twill's goes: its devices (the --tun-name TUN, flannel-wg, flannel.<VNI>, \
            flannel-v6.<VNI>), routes of protocol 84, the FLANNEL-POSTRTG and FLANNEL-FWD chains and the flannel-ipv4/\
            flannel-ipv6 nftables tables. The lease in etcd, subnet.env and the WireGuard key stay.
            """)

    @Option(name: .customLong("tun-name"), help: "The udp backend's TUN device (default twill0, or FLANNELD_TUN_NAME).")
    var tunName: String?
    @Flag(help: "Clean up even though an agent runs in this network namespace (it would set everything up again).")
    var force = false
    @OptionGroup var logging: LoggingOptions

    static let environmentFlags: [EnvironmentFlag] = LoggingOptions.environmentFlags + [.value("tun-name")]

    func run() throws {
        try logging.bootstrap()
        if !force, let pid = NodeCleanup.runningAgent() {
            throw CLIError("an agent runs in this network namespace (pid \(pid)); stop it first (systemctl stop twill), or pass --force")
        }
        let report = NodeCleanup.run(tunName: tunName ?? "twill0", logger: Logger(label: "twill.cleanup"))
        for line in report.removed { StandardIO.write("removed \(line)\n") }
        for line in report.failures { StandardIO.write("could not remove \(line)\n", to: 2) }
        StandardIO.write(
            "cleanup: \(report.removed.count) device(s) and route(s) removed, \(report.failures.count) failure(s); rules removed as logged\n"
        )
        if !report.failures.isEmpty { throw ExitCode(1) }
    }
}
