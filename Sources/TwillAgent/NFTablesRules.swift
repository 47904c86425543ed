import Dispatch
import Logging
import Synchronization
import TwillAddress
import TwillSystem

/// flannel's nftables mode (`"EnableNFTables": true` in the network config): the same
/// forward and masquerade rules as ``IPTablesRules``, in flannel's table `ip flannel-ipv4`
/// with its chains `forward` and `postrtg`, through Debian's `nft` tool.
///
/// ```
/// table ip flannel-ipv4 {
///     chain forward {   # with forwardRules
///         type filter hook forward priority filter; policy accept;
///         ip saddr <network> accept
///         ip daddr <network> accept
///     }
///     chain postrtg {   # with masquerade
///         type nat hook postrouting priority srcnat; policy accept;
///         meta mark & 0x00004000 == 0x00004000 return
///         ip saddr <subnet> ip daddr <network> return
///         ip saddr <network> ip daddr <subnet> return
///         ip saddr != <network> ip daddr <subnet> return
///         ip saddr <network> ip daddr != 224.0.0.0/4 masquerade fully-random
///         ip saddr != <network> ip daddr <network> masquerade fully-random
///     }
/// }
/// ```
///
/// A dual-stack network gets the same chains for its IPv6 network and subnet in flannel's
/// `ip6 flannel-ipv6` (`ip6 saddr`..., multicast `ff00::/8`); both tables are replaced in one
/// transaction.
///
/// Two rules deliberately differ from flannel v0.28's nftables code and follow its iptables
/// rules instead, so that both modes treat packets alike: the kube-proxy mark is matched as a
/// bit (`& 0x4000 == 0x4000`, iptables' `--mark 0x4000/0x4000`; flannel compares the whole
/// mark), and the fourth rule exempts traffic from outside the *network* to this subnet
/// (flannel's nft rule says outside the *subnet*, which also exempts the host's own traffic
/// to remote pods and leaves the last rule dead).
///
/// Twill owns the table: each pass that finds it different from what it installed replaces
/// it whole in one `nft -f` transaction (so packets never see half a rule set), and
/// teardown deletes it.
public struct NFTablesRules: Sendable {
    public let network: IPv4Network
    public let subnet: IPv4Network
    public let forwardRules: Bool
    public let masquerade: Bool
    public let fullyRandom: Bool
    /// The IPv6 overlay and this node's IPv6 subnet, for a dual-stack network.
    public let network6: IPv6Network?
    public let subnet6: IPv6Network?
    /// False for an IPv6-only network: the `ip` table holds no rules.
    public let ipv4: Bool
    let logger: Logger
    let commandPrefix: [String]
    private let shared = Shared()

    /// flannel's table names.
    static let table = "flannel-ipv4"
    static let ipv6Table = "flannel-ipv6"

    /// Describes the rules; nothing is installed until ``ensure()``.
    ///
    /// - Parameter commandPrefix: prepended to every `nft` command line; tests pass
    ///   `["/usr/sbin/ip", "netns", "exec", NAME]`.
    /// - Parameter overlay: the network and this node's subnet, per family: the `ip` table
    ///   holds rules only with an IPv4 part, the `ip6` table exists only with an IPv6 part.
    public init(
        overlay: Overlay, forwardRules: Bool, masquerade: Bool = true, fullyRandom: Bool = true,
        logger: Logger = Logger(label: "twill.nftables"), commandPrefix: [String] = []
    ) {
        self.ipv4 = overlay.v4 != nil
        self.network = overlay.v4?.network ?? .all
        self.subnet = overlay.v4?.subnet ?? .all
        self.network6 = overlay.v6?.network
        self.subnet6 = overlay.v6?.subnet
        self.forwardRules = forwardRules
        self.masquerade = masquerade
        self.fullyRandom = fullyRandom
        self.logger = logger
        self.commandPrefix = commandPrefix
    }

    /// The `nft -f` input that replaces the tables: declaring each first makes its delete
    /// valid when it does not exist yet; all steps are one transaction. Without IPv6 the
    /// `ip6` table is only deleted (one left from a dual-stack config, or flanneld's).
    func script(fullyRandom: Bool) -> String {
        // An IPv6-only network keeps an empty `ip` table: it marks the node as in nftables mode.
        var lines = Self.tableScript(
            family: "ip", name: Self.table, network: "\(network)", subnet: "\(subnet)", multicast: "224.0.0.0/4",
            forwardRules: forwardRules && ipv4, masquerade: masquerade && ipv4, fullyRandom: fullyRandom)
        if let network6, let subnet6 {
            lines += Self.tableScript(
                family: "ip6", name: Self.ipv6Table, network: "\(network6)", subnet: "\(subnet6)", multicast: "ff00::/8",
                forwardRules: forwardRules, masquerade: masquerade, fullyRandom: fullyRandom)
        } else {
            lines += ["add table ip6 \(Self.ipv6Table)", "delete table ip6 \(Self.ipv6Table)"]
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One family's table (`ip` or `ip6`; the match keywords are the family's name).
    static func tableScript(
        family f: String, name: String, network n: String, subnet s: String, multicast: String,
        forwardRules: Bool, masquerade: Bool, fullyRandom: Bool
    ) -> [String] {
        let masq = fullyRandom ? "masquerade fully-random" : "masquerade"
        var lines = [
            "add table \(f) \(name)", "delete table \(f) \(name)", "table \(f) \(name) {",
            "\tcomment \"rules for \(name)\"",
        ]
        if forwardRules {
            lines += [
                "\tchain forward {", "\t\tcomment \"chain to accept flannel traffic\"",
                "\t\ttype filter hook forward priority filter; policy accept;",
                // Overlay traffic is forwarded even where the FORWARD policy is DROP.
                "\t\t\(f) saddr \(n) accept", "\t\t\(f) daddr \(n) accept", "\t}",
            ]
        }
        if masquerade {
            lines += [
                "\tchain postrtg {", "\t\tcomment \"chain to manage traffic masquerading by flannel\"",
                "\t\ttype nat hook postrouting priority srcnat; policy accept;",
                // kube-proxy masquerades what it marked itself.
                "\t\tmeta mark & 0x00004000 == 0x00004000 return",
                // Pod to pod keeps the pod's address, here or on another node.
                "\t\t\(f) saddr \(s) \(f) daddr \(n) return", "\t\t\(f) saddr \(n) \(f) daddr \(s) return",
                // Outside traffic reaching a local pod keeps its source.
                "\t\t\(f) saddr != \(n) \(f) daddr \(s) return",
                // Pods reaching beyond the overlay leave with the node's address.
                "\t\t\(f) saddr \(n) \(f) daddr != \(multicast) \(masq)",
                // The host reaching remote pods takes an address they can answer.
                "\t\t\(f) saddr != \(n) \(f) daddr \(n) \(masq)", "\t}",
            ]
        }
        lines.append("}")
        return lines
    }

    /// Makes the table hold exactly these rules; true when it had to be installed or replaced.
    ///
    /// - Throws: ``IPTablesError`` naming the `nft` command and its stderr.
    @discardableResult
    public func ensure() throws(IPTablesError) -> Bool {
        try shared.worker.locked { () throws(IPTablesError) -> Bool in try ensureLocked() }
    }

    private func ensureLocked() throws(IPTablesError) -> Bool {
        let before = try listTable()
        if let before, before == shared.installed.withLock({ $0 }) { return false }
        var random = fullyRandom
        do {
            try nft(["-f", "-"], input: script(fullyRandom: random))
        } catch  where random {
            // Kernels before 5.x lack fully-random for nftables masquerade (flannel checks too).
            logger.warning(
                "nftables masquerade fully-random is not supported here; masquerading without it", metadata: ["error": "\(error)"])
            random = false
            try nft(["-f", "-"], input: script(fullyRandom: false))
        }
        let after = try listTable()
        // nft prints the table in its own canonical form: remember that form, so that the
        // next pass can tell whether anybody changed the table since.
        let ours = shared.installed.withLock { installed -> String? in
            defer { installed = after }
            return installed
        }
        let metadata: Logger.Metadata = [
            "table": "ip \(Self.table)", "network": "\(network)", "subnet": "\(subnet)",
            "network6": "\(network6.map { "\($0)" } ?? "-")", "subnet6": "\(subnet6.map { "\($0)" } ?? "-")",
            "forward": "\(forwardRules)", "masquerade": "\(masquerade)", "fully_random": "\(random)",
        ]
        if before == nil {
            logger.info("installed nftables rules", metadata: metadata)
        } else if ours != nil {
            logger.notice("repaired nftables rules (the table was changed by someone else)", metadata: metadata)
        } else {
            // flanneld's, or this node's for another subnet before a restart.
            logger.info("replaced the nftables rules found at start-up", metadata: metadata)
        }
        return true
    }

    /// The tables as `nft list table` prints them; nil when the `ip` one is missing.
    func listTable() throws(IPTablesError) -> String? {
        func list(_ family: String, _ name: String) throws(IPTablesError) -> String? {
            let tables = try nft(["list", "tables", family])
            guard tables.split(separator: "\n").contains(where: { $0.trimmingWhitespace() == "table \(family) \(name)" }) else {
                return nil
            }
            return try nft(["list", "table", family, name])
        }
        guard let v4 = try list("ip", Self.table) else { return nil }
        return v4 + (try list("ip6", Self.ipv6Table) ?? "")
    }

    /// Deletes flannel's tables (`flannel-ipv4`, and the `flannel-ipv6` flanneld creates
    /// alongside); never throws. Nothing happens where `nft` is not installed.
    public func teardown() {
        shared.worker.locked {
            Self.deleteTables(logger: logger, commandPrefix: commandPrefix)
            shared.installed.withLock { $0 = nil }
        }
    }

    /// Removes flannel's nftables tables: the node runs in iptables mode now.
    static func removeLeftovers(logger: Logger, commandPrefix: [String] = []) {
        deleteTables(logger: logger, commandPrefix: commandPrefix)
    }

    private static func deleteTables(logger: Logger, commandPrefix: [String]) {
        guard let binary = try? IPTables.locate("nft", prefix: commandPrefix) else { return }
        for (family, name) in [("ip", table), ("ip6", ipv6Table)] {
            do {
                let tables = try run(binary, ["list", "tables", family], prefix: commandPrefix, input: nil)
                guard tables.split(separator: "\n").contains(where: { $0.trimmingWhitespace() == "table \(family) \(name)" }) else {
                    continue
                }
                try run(binary, ["delete", "table", family, name], prefix: commandPrefix, input: nil)
                logger.info("removed nftables rules", metadata: ["table": "\(family) \(name)"])
            } catch {
                logger.error("cannot remove nftables rules", metadata: ["table": "\(family) \(name)", "error": "\(error)"])
            }
        }
    }

    @discardableResult
    private func nft(_ arguments: [String], input: String? = nil) throws(IPTablesError) -> String {
        try Self.run(try IPTables.locate("nft", prefix: commandPrefix, package: "nftables"), arguments, prefix: commandPrefix, input: input)
    }

    @discardableResult
    private static func run(_ binary: String, _ arguments: [String], prefix: [String], input: String?) throws(IPTablesError) -> String {
        try IPTables.execute(prefix + [binary] + arguments, input: input)
    }

    private func ensureOffPool(unless cancelled: CancelFlag) async -> RulesPass {
        await shared.worker.pass(unless: cancelled) { try ensureLocked() }
    }

    /// State shared by the copies of one value.
    private final class Shared: Sendable {
        let worker = RulesWorker(label: "twill.nftables")
        /// The table as nft listed it right after this value installed it.
        let installed = Mutex<String?>(nil)
    }
}

extension NFTablesRules: TrafficRules {
    var mode: String { "nftables" }

    func sameRules(as other: any TrafficRules) -> Bool {
        guard let o = other as? NFTablesRules else { return false }
        return (o.network, o.subnet, o.forwardRules, o.masquerade, o.fullyRandom) == (
            network, subnet, forwardRules, masquerade, fullyRandom
        )
            && (o.network6, o.subnet6, o.ipv4) == (network6, subnet6, ipv4)
    }

    @discardableResult
    func ensureOffPool() async throws -> Bool {
        switch await ensureOffPool(unless: CancelFlag()) {
        case .success(let changed): return changed
        case .failure(let message): throw IPMasqueradeError(message)
        case .skipped: return false
        }
    }

    /// Calls ``ensure()`` every `resync` until cancelled (see ``RulesResync``).
    func run(resync: Duration, firstPassNow: Bool, onPass: (@Sendable (String?) -> Void)?) async {
        await RulesResync.run(what: "nftables rules", period: resync, firstPassNow: firstPassNow, logger: logger, onPass: onPass) {
            cancelled in
            await ensureOffPool(unless: cancelled)
        }
    }
}
