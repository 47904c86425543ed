import Foundation
import Logging
import Testing
import TwillAddress
import TwillTestSupport

@testable import TwillAgent

/// flannel's nftables mode, with the real `nft` in throwaway namespaces (through
/// `commandPrefix`), never in the machine's own.
@Suite(.requiresRoot) struct NFTablesRulesTests {
    static let network = IPv4Network("198.18.0.0/16")!
    static let subnet = IPv4Network("198.18.5.0/24")!

    /// `nft list table ip flannel-ipv4` after installing for the sample network and subnet.
    static let expectedTable = """
        table ip flannel-ipv4 {
        \tcomment "rules for flannel-ipv4"
        \tchain forward {
        \t\tcomment "chain to accept flannel traffic"
        \t\ttype filter hook forward priority filter; policy accept;
        \t\tip saddr 198.18.0.0/16 accept
        \t\tip daddr 198.18.0.0/16 accept
        \t}

        \tchain postrtg {
        \t\tcomment "chain to manage traffic masquerading by flannel"
        \t\ttype nat hook postrouting priority srcnat; policy accept;
        \t\tmeta mark & 0x00004000 == 0x00004000 return
        \t\tip saddr 198.18.5.0/24 ip daddr 198.18.0.0/16 return
        \t\tip saddr 198.18.0.0/16 ip daddr 198.18.5.0/24 return
        \t\tip saddr != 198.18.0.0/16 ip daddr 198.18.5.0/24 return
        \t\tip saddr 198.18.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
        \t\tip saddr != 198.18.0.0/16 ip daddr 198.18.0.0/16 masquerade fully-random
        \t}
        }

        """

    static func rules(in ns: TestNamespace, subnet: IPv4Network = subnet, forwardRules: Bool = true, fullyRandom: Bool = true)
        -> NFTablesRules
    {
        var logger = Logger(label: "twill.nftables.test")
        logger.logLevel = .debug
        return NFTablesRules(
            overlay: Overlay(v4: OverlayPart(network: network, subnet: subnet)), forwardRules: forwardRules, fullyRandom: fullyRandom,
            logger: logger,
            commandPrefix: ["/usr/sbin/ip", "netns", "exec", ns.name])
    }

    @discardableResult
    static func nft(_ ns: TestNamespace, _ arguments: [String]) throws -> String {
        try ns.exec("/usr/sbin/nft", arguments)
    }

    static func table(_ ns: TestNamespace) throws -> String? {
        let tables = try nft(ns, ["list", "tables"])
        guard tables.contains("table ip flannel-ipv4") else { return nil }
        return try nft(ns, ["list", "table", "ip", "flannel-ipv4"])
    }

    @Test func installsFlannelsTableAndIsIdempotent() async throws {
        try await withNamespaces(["node"]) { (namespaces: [TestNamespace]) async throws in
            let ns = namespaces[0]
            let rules = Self.rules(in: ns)
            #expect(try rules.ensure())
            #expect(try Self.table(ns) == Self.expectedTable)
            #expect(try !rules.ensure())
            // Another value for the same rules (the agent restarted) replaces the table once
            // (it cannot know who wrote it), then leaves it.
            let again = Self.rules(in: ns)
            #expect(try again.ensure())
            #expect(try !again.ensure())
            #expect(try Self.table(ns) == Self.expectedTable)
        }
    }

    @Test func repairsChangesAndFollowsANewSubnet() async throws {
        try await withNamespaces(["node"]) { (namespaces: [TestNamespace]) async throws in
            let ns = namespaces[0]
            let rules = Self.rules(in: ns)
            try rules.ensure()
            try Self.nft(ns, ["flush", "chain", "ip", "flannel-ipv4", "postrtg"])
            #expect(try rules.ensure())
            #expect(try Self.table(ns) == Self.expectedTable)
            try Self.nft(ns, ["delete", "table", "ip", "flannel-ipv4"])
            #expect(try rules.ensure())
            #expect(try Self.table(ns) == Self.expectedTable)

            let moved = Self.rules(in: ns, subnet: IPv4Network("198.18.6.0/24")!)
            #expect(try moved.ensure())
            let table = try #require(try Self.table(ns))
            #expect(!table.contains("198.18.5."))
            #expect(table == Self.expectedTable.replacingOccurrences(of: "198.18.5.0/24", with: "198.18.6.0/24"))
        }
    }

    @Test func optionsShapeTheTable() async throws {
        try await withNamespaces(["node"]) { (namespaces: [TestNamespace]) async throws in
            let ns = namespaces[0]
            try Self.rules(in: ns, forwardRules: false, fullyRandom: false).ensure()
            let table = try #require(try Self.table(ns))
            #expect(!table.contains("chain forward"))
            #expect(table.contains("ip saddr 198.18.0.0/16 ip daddr != 224.0.0.0/4 masquerade\n"))
            #expect(!table.contains("fully-random"))
            let forwardOnly = NFTablesRules(
                overlay: Overlay(v4: OverlayPart(network: Self.network, subnet: Self.subnet)), forwardRules: true, masquerade: false,
                commandPrefix: ["/usr/sbin/ip", "netns", "exec", ns.name])
            try forwardOnly.ensure()
            let second = try #require(try Self.table(ns))
            #expect(second.contains("chain forward") && !second.contains("chain postrtg"))
        }
    }

    /// Teardown removes flannel's tables (flanneld's empty flannel-ipv6 too) and nothing else.
    @Test func teardownRemovesOnlyFlannelsTables() async throws {
        try await withNamespaces(["node"]) { (namespaces: [TestNamespace]) async throws in
            let ns = namespaces[0]
            try Self.nft(ns, ["add", "table", "inet", "someone-else"])
            try Self.nft(ns, ["add", "table", "ip6", "flannel-ipv6"])
            let rules = Self.rules(in: ns)
            try rules.ensure()
            rules.teardown()
            #expect(try Self.nft(ns, ["list", "tables"]) == "table inet someone-else\n")
            rules.teardown() // nothing left: harmless
            #expect(try Self.nft(ns, ["list", "tables"]) == "table inet someone-else\n")
        }
    }

    /// Switching modes: each mode's start removes the other's rules, so one set is left.
    @Test func eachModeRemovesTheOthersLeftovers() async throws {
        try await withNamespaces(["node"]) { (namespaces: [TestNamespace]) async throws in
            let ns = namespaces[0]
            let prefix = ["/usr/sbin/ip", "netns", "exec", ns.name]
            let logger = Logger(label: "twill.test")
            let iptables = IPTablesRules(
                overlay: Overlay(v4: OverlayPart(network: Self.network, subnet: Self.subnet)), forwardRules: true, commandPrefix: prefix)
            try iptables.ensure()
            IPTablesRules.removeLeftovers(logger: logger, commandPrefix: prefix)
            #expect(
                try IPTablesRulesTests.listing(ns, "nat")
                    == IPTablesRulesTests.natWithoutRules.filter { $0 != IPTablesRulesTests.foreignRule }
            )
            #expect(try IPTablesRulesTests.listing(ns, "filter") == IPTablesRulesTests.filterWithoutRules)

            try Self.rules(in: ns).ensure()
            NFTablesRules.removeLeftovers(logger: logger, commandPrefix: prefix)
            #expect(try Self.table(ns) == nil)
        }
    }

    @Test func errorsNameTheCommand() throws {
        let missing = uniqueTestPrefix() + "missing"
        let rules = NFTablesRules(
            overlay: Overlay(v4: OverlayPart(network: Self.network, subnet: Self.subnet)), forwardRules: true,
            commandPrefix: ["/usr/sbin/ip", "netns", "exec", missing])
        #expect {
            try rules.ensure()
        } throws: { error in
            guard let e = error as? IPTablesError else { return false }
            return e.description.contains("ip netns exec \(missing)") && e.description.contains("/nft list tables ip")
                && e.stderr.contains(missing)
        }
    }
}
