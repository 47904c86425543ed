import Foundation
import Testing
import TwillTestSupport

/// The `twill` binary as an operator runs it: flags, FLANNELD_ environment, signals, errors.
@Suite(.serialized, .requiresEtcd) struct CommandLineTests {
    @Test func versionRuns() throws {
        #expect(try run(try twillBinary(), ["version"]).hasPrefix("twill "))
    }

    @Test func networkSetShowAndLeasesCommands() async throws {
        try await withEtcd { etcd in
            let t = try twillBinary()
            let e = ["--etcd-endpoints", etcd.endpoint]
            #expect(throws: (any Error).self) { try run(t, ["network", "set", "--network", "198.18.0.0/16", "--subnet-len", "31"] + e) }
            let set = try run(t, ["network", "set", "--network", "198.18.0.0/16", "--backend", "alloc"] + e)
            #expect(set.contains("wrote /coreos.com/network/config"))
            #expect(throws: (any Error).self) { try run(t, ["network", "set", "--network", "198.19.0.0/16"] + e) }
            let show = try run(t, ["network", "show"] + e)
            #expect(show.contains("198.18.1.0 to 198.18.255.0 (255 subnets), backend alloc"))
            #expect(
                try run(t, ["leases", "reserve", "198.18.7.0/24", "--public-ip", "203.0.113.7"] + e).contains("reserved 198.18.7.0/24"))
            // FLANNELD_ environment in place of the flag, and Go-style single-dash flags.
            let list = try run(t, ["leases"], environment: ["FLANNELD_ETCD_ENDPOINTS": etcd.endpoint])
            #expect(list.contains("198.18.7.0/24") && list.contains("203.0.113.7") && list.contains("reserved"))
            let json = try run(t, ["leases", "--json", "-etcd-endpoints=\(etcd.endpoint)"])
            #expect(json.contains("\"reserved\" : true"))
            #expect(try run(t, ["leases", "release", "198.18.7.0/24"] + e).contains("released 198.18.7.0/24"))
            #expect(throws: (any Error).self) { try run(t, ["leases", "release", "198.18.7.0/24"] + e) }
        }
    }

    @Test("dual stack from the command line: network set --ipv6-network, reserve and release by either subnet, IPv6-only reservations")
    func dualStackCommands() async throws {
        try await withEtcd { etcd in
            let t = try twillBinary()
            let e = ["--etcd-endpoints", etcd.endpoint]
            let set = try run(
                t, ["network", "set", "--network", "198.18.0.0/16", "--ipv6-network", "2001:db8:100::/48", "--backend", "host-gw"] + e)
            #expect(set.contains(#""EnableIPv6":true"#) && set.contains(#""IPv6Network":"2001:db8:100::/48""#), "\(set)")
            // A dual-stack network wants both subnets in a reservation.
            #expect(throws: (any Error).self) { try run(t, ["leases", "reserve", "198.18.7.0/24", "--public-ip", "203.0.113.7"] + e) }
            let reserved = try run(
                t,
                [
                    "leases", "reserve", "198.18.7.0/24", "--ipv6-subnet", "2001:db8:100:7::/64", "--public-ip", "203.0.113.7",
                    "--public-ipv6", "2001:db8:1::7",
                ] + e)
            #expect(reserved.contains("reserved 198.18.7.0/24 and 2001:db8:100:7::/64"), "\(reserved)")
            #expect(
                try run(
                    "/usr/bin/etcdctl", ["--endpoints", etcd.endpoint, "get", "--prefix", "/coreos.com/network/subnets/", "--keys-only"]
                )
                .contains("/coreos.com/network/subnets/198.18.7.0-24&2001:db8:100:7::-64"))
            // Another reservation of the same IPv6 subnet under another IPv4 one is refused.
            #expect(throws: (any Error).self) {
                try run(
                    t, ["leases", "reserve", "198.18.8.0/24", "--ipv6-subnet", "2001:db8:100:7::/64", "--public-ip", "203.0.113.8"] + e)
            }
            let list = try run(t, ["leases", "list"] + e)
            #expect(list.contains("IPV6-SUBNET") && list.contains("2001:db8:100:7::/64") && list.contains("2001:db8:1::7"), "\(list)")
            // Released by its IPv6 subnet: the whole dual-stack key goes.
            #expect(
                try run(t, ["leases", "release", "2001:db8:100:7::/64"] + e).contains("released 198.18.7.0/24 and 2001:db8:100:7::/64"))
            #expect(throws: (any Error).self) { try run(t, ["leases", "release", "198.18.7.0/24"] + e) }
            // IPv6-only.
            _ = try run(
                t, ["network", "set", "--force", "--file", "-"] + e,
                input: #"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","Backend":{"Type":"host-gw"}}"#)
            let only6 = try run(t, ["leases", "reserve", "2001:db8:100:9::/64", "--public-ipv6", "2001:db8:1::9"] + e)
            #expect(only6.contains("reserved 2001:db8:100:9::/64 for 2001:db8:1::9"), "\(only6)")
            #expect(
                try run(
                    "/usr/bin/etcdctl",
                    [
                        "--endpoints", etcd.endpoint, "get", "/coreos.com/network/subnets/0.0.0.0-0&2001:db8:100:9::-64",
                        "--print-value-only",
                    ]
                ).contains(#"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:1::9"}"#))
            #expect(
                try run(t, ["leases", "release", "2001:db8:100:9::/64"] + e).contains(
                    "released 2001:db8:100:9::/64 (was 2001:db8:1::9, reserved)"))
        }
    }

    @Test func agentStopsCleanlyOnSIGTERMAndEnvironmentConfiguresIt() async throws {
        try await withEtcd { etcd in
            let dir = try makeTempDir(prefix: "twill-test-cli-")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try await etcd.client().put("/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"alloc"}}"#)
            var env = ProcessInfo.processInfo.environment
            env["FLANNELD_ETCD_ENDPOINTS"] = etcd.endpoint
            env["FLANNELD_PUBLIC_IP"] = "198.51.100.50"
            env["FLANNELD_IFACE"] = "lo"
            env["FLANNELD_SUBNET_FILE"] = dir + "/subnet.env"
            env["FLANNELD_IP_MASQ"] = "true"
            let agent = try ChildProcess(try twillBinary(), ["agent", "--release-on-exit"], environment: env, logPath: dir + "/agent.log")
            #expect(await eventually { FileManager.default.fileExists(atPath: dir + "/subnet.env") })
            let text = (try? String(contentsOfFile: dir + "/subnet.env", encoding: .utf8)) ?? ""
            #expect(text.contains("FLANNEL_IPMASQ=true"))
            #expect(text.contains("FLANNEL_NETWORK=198.18.0.0/16"))
            let status = agent.stop(signal: SIGTERM)
            #expect(status == 0, "agent log:\n\(agent.log)")
            #expect(agent.log.contains("agent stopped"))
            // --release-on-exit gave the subnet back.
            #expect(try await etcd.client().list(prefix: "/coreos.com/network/subnets/").kvs.isEmpty)
        }
    }

    @Test func badFlagsAndUnreachableEtcdAreClearErrors() throws {
        let t = try twillBinary()
        do {
            try run(t, ["agent", "--public-ip", "not-an-ip"])
            Issue.record("expected failure")
        } catch {
            #expect("\(error)".contains("--public-ip not-an-ip is not an IPv4 address"))
        }
        do {
            try run(t, ["agent", "--subnet-lease-renew-margin", "5000"])
            Issue.record("expected failure")
        } catch {
            #expect("\(error)".contains("outside 1..1439"))
        }
        do {
            try run(t, ["leases", "--etcd-endpoints", "http://127.0.0.1:\(try freePort())"])
            Issue.record("expected failure")
        } catch {
            #expect("\(error)".contains("etcd unreachable"))
        }
        do {
            try run(t, ["leases", "--etcd-endpoints", "127.0.0.1:2379"])
            Issue.record("expected failure")
        } catch {
            #expect("\(error)".contains("must start with http:// or https://"))
        }
        // The environment is checked like the flag: a zero resync period would spin iptables.
        for (env, message) in [
            (["FLANNELD_IPTABLES_RESYNC": "0"], "--iptables-resync 0 must be a whole number of seconds from 1 to 86400"),
            (["FLANNELD_IPTABLES_RESYNC": "soon"], "The value 'soon' is invalid for '--iptables-resync"),
            (["FLANNELD_ETCD_REQUEST_TIMEOUT": "-1"], "--etcd-request-timeout -1.0 must be a number of seconds"),
        ] {
            do {
                try run(t, ["agent"], environment: env)
                Issue.record("expected failure for \(env)")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
        do {
            try run(t, ["agent", "--etcd-endpoint-timeout", "0"])
            Issue.record("expected failure")
        } catch {
            #expect("\(error)".contains("--etcd-endpoint-timeout 0.0 must be a number of seconds"))
        }
    }
}
