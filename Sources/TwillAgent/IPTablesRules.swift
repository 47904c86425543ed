import Dispatch
import Logging
import Synchronization
import TwillAddress

/// flannel's `--ip-masq` (and `--iptables-forward-rules`) rules, kept in place with iptables.
///
/// The rules are exactly flannel's, in flannel's chains, with flannel's comments, so that a
/// node moved from flanneld to Twill (or back) ends up with one set of rules, not two:
///
/// ```
/// *nat
/// -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
/// -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
/// -A FLANNEL-POSTRTG -s <subnet> -d <network> -m comment --comment "flanneld masq" -j RETURN
/// -A FLANNEL-POSTRTG -s <network> -d <subnet> -m comment --comment "flanneld masq" -j RETURN
/// -A FLANNEL-POSTRTG ! -s <network> -d <subnet> -m comment --comment "flanneld masq" -j RETURN
/// -A FLANNEL-POSTRTG -s <network> ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
/// -A FLANNEL-POSTRTG ! -s <network> -d <network> -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
/// *filter (only with forwardRules)
/// -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
/// -A FLANNEL-FWD -s <network> -m comment --comment "flanneld forward" -j ACCEPT
/// -A FLANNEL-FWD -d <network> -m comment --comment "flanneld forward" -j ACCEPT
/// ```
///
/// For a dual-stack network the same chains, rules and comments go into ip6tables for the
/// IPv6 network and subnet (flannel's), with multicast `ff00::/8` in place of `224.0.0.0/4`.
///
/// Twill owns the two chains outright: ``ensure()`` makes each chain hold exactly these rules
/// (which also drops the rules of a previous subnet or network after a restart) and makes
/// the parent chain jump to it exactly once. Nothing else in any table is touched.
///
/// The commands act on the network namespace the process runs in. Usage:
/// `try ensure()` once the subnet is known, `await run(resync:)` in a task to restore rules
/// that someone removes, and ``teardown()`` on shutdown (after cancelling that task).
public struct IPTablesRules: Sendable {
    /// The whole overlay network (flannel's `Network`).
    public let network: IPv4Network
    /// This node's leased subnet.
    public let subnet: IPv4Network
    /// Whether the FORWARD rules are managed too (flannel's `--iptables-forward-rules`).
    public let forwardRules: Bool

    /// The IPv6 overlay and this node's IPv6 subnet, for a dual-stack network.
    public let network6: IPv6Network?
    public let subnet6: IPv6Network?

    let logger: Logger
    let iptables: IPTables
    let ip6tables: IPTables
    /// The chains this instance manages: nat's FLANNEL-POSTRTG, and filter's FLANNEL-FWD when
    /// `forwardRules` is set.
    let chains: [ManagedChain]
    /// Shared by the copies of one value.
    private let shared: RulesWorker

    /// The mark kube-proxy sets on packets it will masquerade itself; flannel skips them so
    /// that the kernel never NATs a packet twice (which some kernels got wrong).
    static let kubeProxyMark = "0x4000/0x4000"
    static let masqComment = "flanneld masq"
    static let forwardComment = "flanneld forward"

    /// Describes the rules for `network` and `subnet`; nothing is installed until ``ensure()``.
    ///
    /// - Parameters:
    ///   - network: The overlay network, e.g. `10.244.0.0/16`.
    ///   - subnet: This node's subnet inside it, e.g. `10.244.7.0/24`.
    ///   - forwardRules: Also accept forwarded traffic from and to `network` in the filter
    ///     table (for hosts whose FORWARD policy is DROP, as Docker sets it).
    ///   - logger: Where changes and failures are reported.
    ///   - commandPrefix: Prepended to every iptables command line. Tests pass
    ///     `["/usr/sbin/ip", "netns", "exec", NAME]` to act on a throwaway namespace; the agent
    ///     leaves it empty.
    ///   - masquerade: Manage the nat rules (flannel's `--ip-masq`); false leaves only the
    ///     FORWARD rules, which flannel installs by default even without masquerading.
    ///   - fullyRandom: masquerade with `--random-fully` (flannel's default; off with
    ///     `--ip-masq-fully-random-disable`).
    ///   - overlay: the network and this node's subnet per family: iptables rules for the
    ///     IPv4 part, the same rules in ip6tables for the IPv6 part; none for an absent part.
    public init(
        overlay: Overlay, forwardRules: Bool, masquerade: Bool = true, fullyRandom: Bool = true,
        logger: Logger = Logger(label: "twill.ipmasq"), commandPrefix: [String] = []
    ) {
        let ipv4 = overlay.v4 != nil
        let network = overlay.v4?.network ?? .all
        let subnet = overlay.v4?.subnet ?? .all
        let network6 = overlay.v6?.network
        let subnet6 = overlay.v6?.subnet
        self.network = network
        self.subnet = subnet
        self.network6 = network6
        self.subnet6 = subnet6
        self.forwardRules = forwardRules
        self.logger = logger
        self.iptables = IPTables(commandPrefix: commandPrefix)
        self.ip6tables = IPTables(commandPrefix: commandPrefix, ipv6: true)
        var chains: [ManagedChain] =
            masquerade && ipv4 ? [Self.masqueradeChain(network: "\(network)", subnet: "\(subnet)", fullyRandom: fullyRandom)] : []
        if forwardRules && ipv4 { chains.append(Self.forwardChain(network: "\(network)")) }
        if let network6, let subnet6 {
            if masquerade {
                chains.append(Self.masqueradeChain(network: "\(network6)", subnet: "\(subnet6)", fullyRandom: fullyRandom, ipv6: true))
            }
            if forwardRules { chains.append(Self.forwardChain(network: "\(network6)", ipv6: true)) }
        }
        self.chains = chains
        self.shared = RulesWorker(label: "twill.ipmasq")
    }

    /// Whether two values manage the same rules.
    public func sameRules(as other: IPTablesRules) -> Bool { chains == other.chains }

    /// Removes flannel's chains and their jumps, whatever subnet they were for: the node
    /// runs in nftables mode now (flannel cleans the other mode up the same way). Nothing
    /// happens where the iptables binaries are not installed.
    static func removeLeftovers(logger: Logger, commandPrefix: [String] = []) {
        removeIPv6Leftovers(logger: logger, commandPrefix: commandPrefix)
        guard (try? IPTables.locate("iptables", prefix: commandPrefix)) != nil else { return }
        IPTablesRules(overlay: .anyIPv4, forwardRules: true, masquerade: true, logger: logger, commandPrefix: commandPrefix)
            .teardown()
    }

    /// Removes flannel's ip6tables chains (and jumps) where the network has no IPv6 (any more):
    /// a node that ran dual stack keeps no IPv6 rules. Silent where ip6tables or its tables are
    /// missing, or hold no flannel chain.
    static func removeIPv6Leftovers(logger: Logger, commandPrefix: [String] = []) {
        guard (try? IPTables.locate("ip6tables", prefix: commandPrefix)) != nil else { return }
        let ip6tables = IPTables(commandPrefix: commandPrefix, ipv6: true)
        let present = ["nat", "filter"].contains { table in
            ((try? ip6tables.listTable(table)) ?? []).contains { $0 == "-N FLANNEL-POSTRTG" || $0 == "-N FLANNEL-FWD" }
        }
        guard present else { return }
        IPTablesRules(overlay: .anyIPv6, forwardRules: true, masquerade: true, logger: logger, commandPrefix: commandPrefix).teardown()
    }

    /// Removes flannel's IPv4 chains (and jumps) on an IPv6-only node: what an earlier run
    /// with IPv4 installed goes. Silent where there is none.
    static func removeIPv4Leftovers(logger: Logger, commandPrefix: [String] = []) {
        guard (try? IPTables.locate("iptables", prefix: commandPrefix)) != nil else { return }
        let iptables = IPTables(commandPrefix: commandPrefix)
        let present = ["nat", "filter"].contains { table in
            ((try? iptables.listTable(table)) ?? []).contains { $0 == "-N FLANNEL-POSTRTG" || $0 == "-N FLANNEL-FWD" }
        }
        guard present else { return }
        IPTablesRules(overlay: .anyIPv4, forwardRules: true, masquerade: true, logger: logger, commandPrefix: commandPrefix)
            .teardown()
    }

    /// ``ensure()`` on a thread of its own (iptables blocks), for async callers.
    @discardableResult
    public func ensureOffPool() async throws -> Bool {
        let cancelled = CancelFlag()
        switch await ensureOffPool(unless: cancelled) {
        case .success(let changed): return changed
        case .failure(let message): throw IPMasqueradeError(message)
        case .skipped: return false
        }
    }

    /// Makes the rules exactly as described, in one pass, and reports whether anything had
    /// to change.
    ///
    /// For each managed chain: when the chain is missing or holds anything but the expected
    /// rules in the expected order, it is rebuilt in one `iptables-restore` transaction (so
    /// traffic never sees a half-built chain); when the parent chain (POSTROUTING, FORWARD)
    /// lacks the jump it is appended, and duplicate jumps are removed. Afterwards the table
    /// is read back and compared again, so success means the kernel holds the rules.
    ///
    /// - Returns: true when rules were installed or repaired, false when all were in place.
    /// - Throws: ``IPTablesError`` naming the failed command and its stderr, or
    ///   ``IPMasqueradeError`` when iptables accepted the rules but shows something else.
    @discardableResult
    public func ensure() throws -> Bool {
        try shared.locked { () throws -> Bool in try ensureLocked() }
    }

    /// Calls ``ensure()`` every `resync` until the task is cancelled, restoring rules that
    /// were removed or changed in between (flannel's `--iptables-resync`); see
    /// ``RulesResync`` for pacing and logging. iptables runs on a dispatch queue of its own,
    /// so its blocking waits never occupy Swift's cooperative threads.
    ///
    /// - Parameters:
    ///   - firstPassNow: run the first pass at once instead of after one period (when the
    ///     caller's own ``ensure()`` failed, say).
    ///   - onPass: told after every pass whether the rules are in place (nil) or why not.
    public func run(resync: Duration, firstPassNow: Bool = false, onPass: (@Sendable (String?) -> Void)? = nil) async {
        await RulesResync.run(what: "iptables rules", period: resync, firstPassNow: firstPassNow, logger: logger, onPass: onPass) {
            cancelled in
            await ensureOffPool(unless: cancelled)
        }
    }

    /// Removes the jumps and both chains (as far as they exist); never throws.
    ///
    /// Only rules that exactly match Twill's (flannel's) jumps are deleted from POSTROUTING
    /// and FORWARD. Failures are logged and the remaining steps still run, because on
    /// shutdown there is nothing better to do than remove as much as possible. If a
    /// ``run(resync:)`` pass is under way, teardown waits for it to finish first.
    public func teardown() {
        shared.locked {
            for chain in chains {
                do {
                    let iptables = runner(chain)
                    if chain.ipv6, (try? IPTables.locate("ip6tables", prefix: [])) == nil { continue }
                    let state = ChainState(listing: try iptables.listTable(chain.table), chain: chain)
                    for _ in 0..<state.jumps {
                        try iptables.run(["-t", chain.table, "-D", chain.parent] + chain.jump)
                    }
                    if state.exists {
                        try iptables.run(["-t", chain.table, "-F", chain.name])
                        try iptables.run(["-t", chain.table, "-X", chain.name])
                    }
                    if state.exists || state.jumps > 0 {
                        logger.info(
                            "removed iptables rules",
                            metadata: [
                                "family": "\(chain.ipv6 ? "ipv6" : "ipv4")", "table": "\(chain.table)", "chain": "\(chain.name)",
                                "jumps": "\(state.jumps)",
                            ])
                    }
                } catch {
                    logger.error(
                        "cannot remove iptables rules",
                        metadata: [
                            "table": "\(chain.table)", "chain": "\(chain.name)", "error": "\(error)",
                        ])
                }
            }
        }
    }

    // MARK: - Internals

    /// The runner for a chain's family.
    private func runner(_ chain: ManagedChain) -> IPTables { chain.ipv6 ? ip6tables : iptables }

    /// Every rule, in iptables-save argument form, grouped by table in install order: for
    /// each chain the jump from its parent, then the chain's rules.
    var savedRules: [String: [String]] {
        var out: [String: [String]] = [:]
        for chain in chains { out[(chain.ipv6 ? "ip6 " : "") + chain.table, default: []] += [chain.jumpLine] + chain.ruleLines }
        return out
    }

    private func ensureLocked() throws -> Bool {
        var changed = false
        for chain in chains where try ensure(chain) { changed = true }
        return changed
    }

    /// One chain and its jump; returns whether anything changed.
    private func ensure(_ chain: ManagedChain) throws -> Bool {
        let iptables = runner(chain)
        let before = ChainState(listing: try iptables.listTable(chain.table), chain: chain)
        guard !before.isCorrect else { return false }

        var input = ["*\(chain.table)"]
        if before.rules != chain.ruleLines {
            // Declaring the chain in a --noflush restore creates it or empties it, inside the
            // same transaction that appends the rules.
            input.append(":\(chain.name) - [0:0]")
            input += chain.ruleLines
        }
        if before.jumps > 1 {
            input += Array(repeating: IPTables.render(["-D", chain.parent] + chain.jump), count: before.jumps - 1)
        } else if before.jumps == 0 {
            input.append(chain.jumpLine)
        }
        input.append("COMMIT")
        try iptables.restore(input.joined(separator: "\n") + "\n")

        let after = ChainState(listing: try iptables.listTable(chain.table), chain: chain)
        guard after.isCorrect else {
            throw IPMasqueradeError(
                "after rebuilding \(chain.table) \(chain.name), iptables shows\n"
                    + (after.rules + ["(\(after.jumps) jump(s) from \(chain.parent))"]).joined(separator: "\n")
                    + "\ninstead of\n" + chain.ruleLines.joined(separator: "\n"))
        }
        var metadata: Logger.Metadata = [
            "family": "\(chain.ipv6 ? "ipv6" : "ipv4")", "table": "\(chain.table)", "chain": "\(chain.name)",
            "network": "\(chain.ipv6 ? network6.map { "\($0)" } ?? "-" : "\(network)")",
            "subnet": "\(chain.ipv6 ? subnet6.map { "\($0)" } ?? "-" : "\(subnet)")",
        ]
        if !before.exists {
            logger.info("installed iptables rules", metadata: metadata)
        } else {
            // Stale rules (another subnet's, or anyone's additions) are what an operator
            // will want to know about, so name them.
            let stale = before.rules.filter { !chain.ruleLines.contains($0) }
            let missing = chain.ruleLines.filter { !before.rules.contains($0) }
            metadata["rules_removed"] = "\(stale.count)"
            metadata["rules_added"] = "\(missing.count)"
            metadata["jumps_found"] = "\(before.jumps)"
            if let first = stale.first { metadata["first_removed"] = "\(first)" }
            logger.notice("repaired iptables rules", metadata: metadata)
        }
        return true
    }

    private func ensureOffPool(unless cancelled: CancelFlag) async -> RulesPass {
        await shared.pass(unless: cancelled) { try ensureLocked() }
    }

    static func masqueradeChain(network n: String, subnet s: String, fullyRandom: Bool = true, ipv6: Bool = false) -> ManagedChain {
        let tag = ["-m", "comment", "--comment", masqComment]
        let random = fullyRandom ? ["--random-fully"] : []
        return ManagedChain(
            table: "nat", parent: "POSTROUTING", name: "FLANNEL-POSTRTG", comment: masqComment, ipv6: ipv6,
            rules: [
                // Packets kube-proxy marked are masqueraded by kube-proxy's own rules.
                ["-m", "mark", "--mark", kubeProxyMark] + tag + ["-j", "RETURN"],
                // Pod to pod (here or on another node) keeps the pod's address.
                ["-s", s, "-d", n] + tag + ["-j", "RETURN"],
                ["-s", n, "-d", s] + tag + ["-j", "RETURN"],
                // Traffic from outside to a local pod that arrives through another node keeps its
                // source, so the pod can answer it directly.
                ["!", "-s", n, "-d", s] + tag + ["-j", "RETURN"],
                // Pods reaching beyond the overlay leave with the node's address (multicast is
                // never NATed, as it is not routed anyway).
                ["-s", n, "!", "-d", ipv6 ? "ff00::/8" : "224.0.0.0/4"] + tag + ["-j", "MASQUERADE"] + random,
                // The host (or anything outside the overlay) reaching remote pods takes an
                // address those pods can answer.
                ["!", "-s", n, "-d", n] + tag + ["-j", "MASQUERADE"] + random,
            ])
    }

    static func forwardChain(network n: String, ipv6: Bool = false) -> ManagedChain {
        let tag = ["-m", "comment", "--comment", forwardComment]
        return ManagedChain(
            table: "filter", parent: "FORWARD", name: "FLANNEL-FWD", comment: forwardComment, ipv6: ipv6,
            rules: [
                // Overlay traffic is forwarded even where the FORWARD policy is DROP (Docker).
                ["-s", n] + tag + ["-j", "ACCEPT"],
                ["-d", n] + tag + ["-j", "ACCEPT"],
            ])
    }
}

/// iptables accepted Twill's rules but does not show them as written (for example when a
/// network is given in a form iptables prints differently).
public struct IPMasqueradeError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One chain Twill owns, the rules it must hold, and the jump from its parent chain.
struct ManagedChain: Sendable, Equatable {
    let table: String
    let parent: String
    let name: String
    let comment: String
    /// An ip6tables chain.
    let ipv6: Bool
    /// Each rule's arguments after `-A NAME`.
    let rules: [[String]]

    init(table: String, parent: String, name: String, comment: String, ipv6: Bool = false, rules: [[String]]) {
        self.table = table
        self.parent = parent
        self.name = name
        self.comment = comment
        self.ipv6 = ipv6
        self.rules = rules
    }

    /// The jump rule's arguments after `-A PARENT`.
    var jump: [String] { ["-m", "comment", "--comment", comment, "-j", name] }
    /// The jump as `iptables -S` prints it.
    var jumpLine: String { IPTables.render(["-A", parent] + jump) }
    /// The rules as `iptables -S` prints them.
    var ruleLines: [String] { rules.map { IPTables.render(["-A", name] + $0) } }
}

/// What `iptables -t TABLE -S` shows of one managed chain.
struct ChainState: Equatable {
    let exists: Bool
    /// The chain's rules, in order.
    let rules: [String]
    /// How many exact copies of the jump the parent holds.
    let jumps: Int
    let isCorrect: Bool

    init(listing: [String], chain: ManagedChain) {
        exists = listing.contains("-N \(chain.name)")
        rules = listing.filter { $0.hasPrefix("-A \(chain.name) ") }
        jumps = listing.filter { $0 == chain.jumpLine }.count
        isCorrect = exists && rules == chain.ruleLines && jumps == 1
    }
}

extension IPTablesRules: TrafficRules {
    var mode: String { "iptables" }
    func sameRules(as other: any TrafficRules) -> Bool { (other as? IPTablesRules).map(sameRules(as:)) ?? false }
}

extension Overlay {
    /// Rules for any IPv4 network: what a teardown of whatever subnet an earlier run had needs.
    static let anyIPv4 = Overlay(v4: OverlayPart(network: .all, subnet: .all))
    /// The same for IPv6 only.
    static let anyIPv6 = Overlay(v6: OverlayPart(network: .all, subnet: .all))
}
