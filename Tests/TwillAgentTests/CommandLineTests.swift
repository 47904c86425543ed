import Foundation
import Testing
import TwillTestSupport

/// The `twill` binary as an operator runs it: flags, FLANNELD_ environment, signals, errors.
@Suite(.serialized) struct CommandLineTests {
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
            #expect(try run(t, ["leases", "reserve", "198.18.7.0/24", "--public-ip", "203.0.113.7"] + e).contains("reserved 198.18.7.0/24"))
            // FLANNELD_ environment in place of the flag, and Go-style single-dash flags.
            let list = try run(t, ["leases"], environment: ["FLANNELD_ETCD_ENDPOINTS": etcd.endpoint])
            #expect(list.contains("198.18.7.0/24") && list.contains("203.0.113.7") && list.contains("reserved"))
            let json = try run(t, ["leases", "--json", "-etcd-endpoints=\(etcd.endpoint)"])
            #expect(json.contains("\"reserved\" : true"))
            #expect(try run(t, ["leases", "release", "198.18.7.0/24"] + e).contains("released 198.18.7.0/24"))
            #expect(throws: (any Error).self) { try run(t, ["leases", "release", "198.18.7.0/24"] + e) }
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
