import ArgumentParser
import Testing

@testable import twill

/// The binary invoked as `flanneld`: flanneld's own command line, as Go's flag package reads it.
@Suite struct FlanneldCommandLineTests {
    func parse(_ arguments: [String], _ environment: [String: String] = [:]) -> FlanneldCommandLine.Outcome {
        FlanneldCommandLine.parse(arguments, environment: environment, version: "v9.9.9")
    }

    func agentArguments(_ arguments: [String], _ environment: [String: String] = [:]) -> [String]? {
        guard case .run(let out) = parse(arguments, environment) else { return nil }
        return out
    }

    @Test func goSpellingsOfEveryKind() throws {
        let out = try #require(
            agentArguments([
                "-etcd-endpoints=http://198.51.100.254:2379", "--etcd-prefix", "/vxlan/network", "-iface", "eth0", "--iface=eth1",
                "-ip-masq", "-iptables-forward-rules=false", "--subnet-file=/run/flannel/subnet.env", "-iptables-resync", "0x0a",
            ]))
        #expect(
            out == [
                "--etcd-endpoints=http://198.51.100.254:2379", "--etcd-prefix=/vxlan/network", "--iface=eth0", "--iface=eth1",
                "--subnet-file=/run/flannel/subnet.env", "--ip-masq", "--iptables-resync=10", "--iptables-forward-rules=false",
            ])
    }

    /// klog's -v, in each spelling flanneld command lines carry, sets the log level.
    @Test func verbosityBecomesALogLevel() {
        #expect(agentArguments(["-v=2"]) == ["--log-level=info"])
        #expect(agentArguments(["--v", "4"]) == ["--log-level=debug"])
        #expect(agentArguments(["-v", "10"]) == ["--log-level=trace"])
        #expect(agentArguments(["-vmodule=main=3", "-log_backtrace_at=main.go:10"]) == [])
    }

    @Test func unknownFlagsAreRefusedWithTheirName() {
        guard case .exit(let status, _, let stderr) = parse(["-ip-masq", "-no-such-flag"]) else {
            Issue.record("expected an exit")
            return
        }
        #expect(status == 2)
        #expect(stderr.hasPrefix("flag provided but not defined: -no-such-flag\n"))
        #expect(stderr.contains("Usage of flanneld:"))
    }

    @Test func badValuesAndMissingValues() {
        guard case .exit(2, _, let e1) = parse(["-ip-masq=maybe"]) else {
            Issue.record("expected exit 2")
            return
        }
        #expect(e1.hasPrefix("invalid boolean value \"maybe\" for -ip-masq"))
        guard case .exit(2, _, let e2) = parse(["-healthz-port", "eighty"]) else {
            Issue.record("expected exit 2")
            return
        }
        #expect(e2.hasPrefix("invalid value \"eighty\" for flag -healthz-port"))
        guard case .exit(2, _, let e3) = parse(["-etcd-endpoints"]) else {
            Issue.record("expected exit 2")
            return
        }
        #expect(e3.hasPrefix("flag needs an argument: -etcd-endpoints"))
        guard case .exit(2, _, let e4) = parse(["---iface=eth0"]) else {
            Issue.record("expected exit 2")
            return
        }
        #expect(e4.hasPrefix("bad flag syntax: ---iface=eth0"))
    }

    /// Go's parser stops at the first argument that is not a flag: `-ip-masq false` leaves
    /// `false` (and everything after it) as positional arguments, as flanneld does.
    @Test func parsingStopsAtTheFirstNonFlag() {
        #expect(agentArguments(["-ip-masq", "false", "-iface", "eth0"]) == ["--ip-masq"])
        #expect(agentArguments(["--", "-ip-masq"]) == [])
    }

    @Test func kubernetesFlagsSayUseEtcd() {
        for args in [["--kube-subnet-mgr"], ["-kube-api-url=https://10.0.0.1"], ["--kubeconfig-file", "/etc/kubeconfig"]] {
            guard case .exit(1, _, let stderr) = parse(args) else {
                Issue.record("expected exit 1 for \(args)")
                continue
            }
            #expect(stderr.contains("is not supported: Twill keeps subnet leases in etcd"), "\(args)")
            #expect(stderr.contains("-etcd-endpoints"))
        }
        // Spelled at their defaults they change nothing, so they are accepted.
        #expect(agentArguments(["--kube-subnet-mgr=false", "-set-node-network-unavailable=true"]) == [])
    }

    @Test func versionAndHelp() {
        #expect(parse(["--version"]) == .exit(status: 0, stdout: "", stderr: "v9.9.9\n"))
        #expect(
            parse(["-version", "-no-such"])
                == .exit(status: 2, stdout: "", stderr: "flag provided but not defined: -no-such\n" + FlanneldCommandLine.usage()))
        guard case .exit(0, _, let help) = parse(["-h"]) else {
            Issue.record("expected exit 0")
            return
        }
        for flag in FlanneldCommandLine.flanneldFlags { #expect(help.contains("  -\(flag.name)"), "\(flag.name)") }
    }

    /// FLANNELD_<NAME> for any flag not on the command line, checked like the flag.
    @Test func environment() {
        let env = [
            "FLANNELD_IFACE": "eth9", "FLANNELD_IP_MASQ": "1", "FLANNELD_ETCD_PREFIX": "/env/network",
            "FLANNELD_V": "5", "FLANNELD_TUN_NAME": "fl0", "FLANNELD_PUBLIC_IP": "",
        ]
        #expect(
            agentArguments(["-etcd-prefix=/cli/network"], env) == [
                "--etcd-prefix=/cli/network", "--iface=eth9", "--ip-masq", "--log-level=debug", "--tun-name=fl0",
            ])
        guard case .exit(1, _, let stderr) = parse([], ["FLANNELD_IPTABLES_FORWARD_RULES": "yes"]) else {
            Issue.record("expected exit 1")
            return
        }
        #expect(stderr.contains("FLANNELD_IPTABLES_FORWARD_RULES"))
        guard case .exit(1, _, _) = parse([], ["FLANNELD_KUBE_SUBNET_MGR": "true"]) else {
            Issue.record("expected exit 1")
            return
        }
    }

    /// Every flanneld flag, given a value, becomes arguments `twill agent` accepts.
    @Test func everyFlagReachesTheAgentParser() throws {
        let values: [String: String] = [
            "etcd-endpoints": "http://198.51.100.254:2379", "etcd-prefix": "/p/network", "etcd-keyfile": "/k", "etcd-certfile": "/c",
            "etcd-cafile": "/ca", "etcd-username": "u", "etcd-password": "p", "iface": "eth0", "iface-regex": "^eth",
            "iface-can-reach": "198.51.100.9", "public-ip": "198.51.100.3", "public-ipv6": "2001:db8:1::3",
            "subnet-file": "/run/flannel/subnet.env", "subnet-lease-renew-margin": "30", "healthz-ip": "127.0.0.1",
            "healthz-port": "8471", "iptables-resync": "7", "v": "2", "vmodule": "x=1", "log_backtrace_at": ":0",
        ]
        var arguments: [String] = []
        for flag in FlanneldCommandLine.flanneldFlags {
            switch flag.role {
            case .kubernetes, .version: continue
            default: break
            }
            if flag.kind == .bool {
                arguments.append("-\(flag.name)=\(flag.name == "iptables-forward-rules" ? "false" : "true")")
            } else {
                arguments.append("--\(flag.name)=\(try #require(values[flag.name], "a value for \(flag.name)"))")
            }
        }
        let out = try #require(agentArguments(arguments))
        let command = try AgentCommand.parse(out)
        #expect(command.ipMasq && command.ipBlackholeRoute && command.ipMasqFullyRandomDisable)
        #expect(command.iptablesForwardRules == false && command.iptablesResync == 7 && command.renewMargin == 30)
        #expect(command.iface == ["eth0"] && command.ifaceRegex == ["^eth"] && command.ifaceCanReach == "198.51.100.9")
        #expect(command.healthzIP == "127.0.0.1" && command.healthzPort == 8471 && command.publicIPv6 == "2001:db8:1::3")
    }

    /// Twill's own agent flags work under the flanneld name too.
    @Test func twillFlagsAreAccepted() throws {
        let out = try #require(agentArguments(["-udp-queues=2", "--release-on-exit", "-subnet-lease-ttl", "600"]))
        let command = try AgentCommand.parse(out)
        #expect(command.udpQueues == 2 && command.releaseOnExit && command.leaseTTL == 600)
    }

    @Test func goIntegers() {
        #expect(FlanneldCommandLine.goInt("010") == 8)
        #expect(FlanneldCommandLine.goInt("0x1f") == 31)
        #expect(FlanneldCommandLine.goInt("-0b101") == -5)
        #expect(FlanneldCommandLine.goInt("1_000") == 1000)
        #expect(FlanneldCommandLine.goInt("") == nil)
        #expect(FlanneldCommandLine.goInt("12a") == nil)
    }
}
