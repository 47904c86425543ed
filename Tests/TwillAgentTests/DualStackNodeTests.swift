import Foundation
import Logging
import Testing
import TwillAddress
import TwillLease
import TwillTestSupport

@testable import TwillAgent

/// What a dual-stack subnet.env turns into for Docker, CNI and the masquerade rules; the
/// rules with the real ip6tables and nft in throwaway namespaces.
@Suite(.requiresRoot) struct DualStackNodeTests {
    static let env = SubnetEnv(
        network: IPv4Network("198.18.0.0/16"), subnet: IPv4Network("198.18.7.0/24"),
        ipv6Network: IPv6Network("2001:db8:100::/48"), ipv6Subnet: IPv6Network("2001:db8:100:7::/64"),
        mtu: 1450, ipMasq: true)

    @Test("subnet.env: flannel's IPv6 lines (the first address of the subnet), read back the same")
    func subnetEnv() throws {
        #expect(
            Self.env.text == """
                FLANNEL_NETWORK=198.18.0.0/16
                FLANNEL_SUBNET=198.18.7.1/24
                FLANNEL_IPV6_NETWORK=2001:db8:100::/48
                FLANNEL_IPV6_SUBNET=2001:db8:100:7::1/64
                FLANNEL_MTU=1450
                FLANNEL_IPMASQ=true

                """)
        let back = try SubnetEnv(text: Self.env.text, requireComplete: true)
        #expect(back.ipv6Subnet == IPv6Network("2001:db8:100:7::/64") && back.ipv6Network == IPv6Network("2001:db8:100::/48"))
    }

    @Test("docker-opts and daemon.json: --ipv6 with the node's IPv6 subnet")
    func docker() throws {
        let o = try DockerOptions(env: Self.env)
        #expect(
            o.environmentFile(individual: true, combined: false)
                == "DOCKER_OPT_BIP=\"--bip=198.18.7.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\nDOCKER_OPT_IPV6=\"--ipv6 --fixed-cidr-v6=2001:db8:100:7::/64\"\n"
        )
        #expect(o.daemonJSON == #"{"bip":"198.18.7.1/24","mtu":1450,"ip-masq":false,"ipv6":true,"fixed-cidr-v6":"2001:db8:100:7::/64"}"#)
    }

    @Test("CNI: one range per family and a route to each overlay, as flannel's plugin")
    func cni() throws {
        let config = try CNIPlugin.Config(json: Data(#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}"#.utf8))
        let d = try CNIPlugin.delegateConfig(config, env: Self.env)
        let ipam = String(decoding: (d["ipam"] ?? .null).encoded(), as: UTF8.self)
        #expect(
            ipam
                == #"{"ranges":[[{"subnet":"198.18.7.0/24"}],[{"subnet":"2001:db8:100:7::/64"}]],"routes":[{"dst":"198.18.0.0/16"},{"dst":"2001:db8:100::/48"}],"type":"host-local"}"#
        )
    }

    @Test("IPv6-only: the CNI delegate has the IPv6 range and route alone; the rules are ip6tables' alone")
    func ipv6OnlyNode() async throws {
        let env = SubnetEnv(
            network: nil, subnet: nil, ipv6Network: IPv6Network("2001:db8:100::/48"), ipv6Subnet: IPv6Network("2001:db8:100:7::/64"),
            mtu: 1430, ipMasq: true)
        let config = try CNIPlugin.Config(json: Data(#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}"#.utf8))
        let ipam = String(decoding: (try CNIPlugin.delegateConfig(config, env: env)["ipam"] ?? .null).encoded(), as: UTF8.self)
        #expect(ipam == #"{"ranges":[[{"subnet":"2001:db8:100:7::/64"}]],"routes":[{"dst":"2001:db8:100::/48"}],"type":"host-local"}"#)
        try await withNamespaces(["node"]) { (namespaces: [TestNamespace]) async throws in
            let ns = namespaces[0]
            let masq = IPTablesRules(
                overlay: Overlay(v6: OverlayPart(network: IPv6Network("2001:db8:100::/48")!, subnet: IPv6Network("2001:db8:100:7::/64")!)),
                forwardRules: true,
                logger: Logger(label: "test"), commandPrefix: ["/usr/sbin/ip", "netns", "exec", ns.name])
            #expect(try masq.ensure())
            #expect(
                try !ns.exec("/usr/sbin/iptables", ["-w", "-t", "nat", "-S"]).contains("FLANNEL"),
                "no IPv4 rule, least of all for 0.0.0.0/0")
            #expect(try ns.exec("/usr/sbin/ip6tables", ["-w", "-t", "nat", "-S"]).contains("FLANNEL-POSTRTG"))
            // IPv6 turned off later: the leftovers go.
            IPTablesRules.removeIPv6Leftovers(logger: Logger(label: "test"), commandPrefix: ["/usr/sbin/ip", "netns", "exec", ns.name])
            #expect(try !ns.exec("/usr/sbin/ip6tables", ["-w", "-t", "nat", "-S"]).contains("FLANNEL"))
            #expect(try !ns.exec("/usr/sbin/ip6tables", ["-w", "-S"]).contains("FLANNEL"))
        }
    }

    @Test("iptables mode: flannel's chains in ip6tables for the IPv6 network, installed, repaired and removed")
    func ip6tables() async throws {
        try await withNamespaces(["node"]) { (namespaces: [TestNamespace]) async throws in
            let ns = namespaces[0]
            let masq = IPTablesRules(
                overlay: Overlay(
                    v4: OverlayPart(network: IPv4Network("198.18.0.0/16")!, subnet: IPv4Network("198.18.7.0/24")!),
                    v6: OverlayPart(network: IPv6Network("2001:db8:100::/48")!, subnet: IPv6Network("2001:db8:100:7::/64")!)),
                forwardRules: true,
                logger: Logger(label: "test"), commandPrefix: ["/usr/sbin/ip", "netns", "exec", ns.name])
            #expect(try masq.ensure())
            #expect(try !masq.ensure())
            let nat6 = { try ns.exec("/usr/sbin/ip6tables", ["-w", "-t", "nat", "-S"]) }
            let rules = try nat6()
            for line in [
                #"-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG"#,
                #"-A FLANNEL-POSTRTG -s 2001:db8:100:7::/64 -d 2001:db8:100::/48 -m comment --comment "flanneld masq" -j RETURN"#,
                #"-A FLANNEL-POSTRTG -s 2001:db8:100::/48 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully"#,
            ] {
                #expect(rules.contains(line), "\(rules)")
            }
            #expect(try ns.exec("/usr/sbin/ip6tables", ["-w", "-S", "FLANNEL-FWD"]).contains("-A FLANNEL-FWD -d 2001:db8:100::/48"))
            // IPv4 rules stay IPv4.
            #expect(try ns.exec("/usr/sbin/iptables", ["-w", "-t", "nat", "-S"]).contains("-s 198.18.7.0/24 -d 198.18.0.0/16"))
            try ns.exec("/usr/sbin/ip6tables", ["-w", "-t", "nat", "-F", "FLANNEL-POSTRTG"])
            #expect(try masq.ensure())
            #expect(try nat6().contains("MASQUERADE"))
            masq.teardown()
            #expect(try !nat6().contains("FLANNEL"))
        }
    }

    @Test("nftables mode: flannel's ip6 flannel-ipv6 table beside ip flannel-ipv4, replaced together; gone when IPv6 is off")
    func nftables() async throws {
        try await withNamespaces(["node"]) { (namespaces: [TestNamespace]) async throws in
            let ns = namespaces[0]
            let prefix = ["/usr/sbin/ip", "netns", "exec", ns.name]
            let dual = NFTablesRules(
                overlay: Overlay(
                    v4: OverlayPart(network: IPv4Network("198.18.0.0/16")!, subnet: IPv4Network("198.18.7.0/24")!),
                    v6: OverlayPart(network: IPv6Network("2001:db8:100::/48")!, subnet: IPv6Network("2001:db8:100:7::/64")!)),
                forwardRules: true,
                logger: Logger(label: "test"), commandPrefix: prefix)
            #expect(try dual.ensure())
            #expect(try !dual.ensure())
            let table6 = try ns.exec("/usr/sbin/nft", ["list", "table", "ip6", "flannel-ipv6"])
            #expect(table6.contains("ip6 saddr 2001:db8:100:7::/64 ip6 daddr 2001:db8:100::/48 return"), "\(table6)")
            #expect(table6.contains("ip6 saddr 2001:db8:100::/48 ip6 daddr != ff00::/8 masquerade fully-random"), "\(table6)")
            #expect(table6.contains("ip6 daddr 2001:db8:100::/48 accept"))
            // Someone deletes the IPv6 table: the next pass puts it back.
            try ns.exec("/usr/sbin/nft", ["delete", "table", "ip6", "flannel-ipv6"])
            #expect(try dual.ensure())
            #expect(try ns.exec("/usr/sbin/nft", ["list", "tables"]).contains("table ip6 flannel-ipv6"))
            // IPv6 switched off: the IPv6 table goes, the IPv4 one stays.
            let v4 = NFTablesRules(
                overlay: Overlay(v4: OverlayPart(network: IPv4Network("198.18.0.0/16")!, subnet: IPv4Network("198.18.7.0/24")!)),
                forwardRules: true,
                logger: Logger(label: "test"), commandPrefix: prefix)
            #expect(try v4.ensure())
            let tables = try ns.exec("/usr/sbin/nft", ["list", "tables"])
            #expect(tables.contains("table ip flannel-ipv4") && !tables.contains("flannel-ipv6"), "\(tables)")
            v4.teardown()
            #expect(try !ns.exec("/usr/sbin/nft", ["list", "tables"]).contains("flannel"))
        }
    }
}
