import ArgumentParser
import Testing

@testable import twill

@Suite struct FlannelEnvironmentTests {
    @Test func goStyleArgumentsAreNormalised() {
        #expect(
            FlannelEnvironment.normalise([
                "agent", "-etcd-endpoints=http://h:2379", "-iface", "eth0", "--ip-masq=true", "--release-on-exit=false",
            ])
                == ["agent", "--etcd-endpoints=http://h:2379", "--iface", "eth0", "--ip-masq"])
        // Short flags of docker-opts stay as they are; Option<Bool> keeps its value.
        #expect(FlannelEnvironment.normalise(["docker-opts", "-f", "x", "-c"]) == ["docker-opts", "-f", "x", "-c"])
        #expect(FlannelEnvironment.normalise(["agent", "--iptables-forward-rules=false"]) == ["agent", "--iptables-forward-rules=false"])
    }

    @Test func environmentNamesFollowFlanneld() {
        let env = ["FLANNELD_ETCD_ENDPOINTS": "http://h:2379", "FLANNELD_PUBLIC_IP": "", "FLANNELD_IP_MASQ": "true"]
        #expect(FlannelEnvironment.value("etcd-endpoints", env) == "http://h:2379")
        #expect(FlannelEnvironment.value("public-ip", env) == nil) // empty values are ignored
        #expect(FlannelEnvironment.value("subnet-file", env) == nil)
        #expect(EnvironmentFlag.value("subnet-lease-renew-margin").variable == "FLANNELD_SUBNET_LEASE_RENEW_MARGIN")
    }

    /// Environment values become arguments, so the parser checks them like flags; the command
    /// line wins; booleans and lists follow flanneld's forms.
    @Test func environmentValuesAreMergedBeforeParsing() throws {
        let env = [
            "FLANNELD_ETCD_ENDPOINTS": "http://e:2379", "FLANNELD_IP_MASQ": "true", "FLANNELD_RELEASE_ON_EXIT": "false",
            "FLANNELD_IFACE": "eth0,eth1", "FLANNELD_PUBLIC_IP": "", "FLANNELD_SUBNET_FILE": "/x/subnet.env",
            "FLANNELD_IPTABLES_RESYNC": "0", "FLANNELD_NOT_A_FLAG": "1",
        ]
        let merged = FlannelEnvironment.merge(
            ["agent", "--subnet-file", "/cli/subnet.env"], flags: AgentCommand.environmentFlags, environment: env)
        #expect(
            merged == [
                "agent", "--subnet-file", "/cli/subnet.env", "--etcd-endpoints=http://e:2379", "--iface=eth0", "--iface=eth1",
                "--ip-masq", "--iptables-resync=0",
            ])
        let command = try AgentCommand.parse(
            Array(
                FlannelEnvironment.merge(
                    ["--subnet-file", "/cli"], flags: AgentCommand.environmentFlags,
                    environment: ["FLANNELD_IFACE": "eth0,eth1", "FLANNELD_IP_MASQ": "1"])))
        #expect(command.iface == ["eth0", "eth1"] && command.ipMasq && command.subnetFile == "/cli")
        // A bad value from the environment is refused as a bad flag is, naming it.
        #expect(throws: (any Error).self) { try AgentCommand.parse(["--iptables-resync=0"]) }
        let message = AgentCommand.message(for: ValidationError("x"))
        #expect(!message.isEmpty)
        do {
            _ = try AgentCommand.parse(Array(merged.dropFirst()))
            Issue.record("FLANNELD_IPTABLES_RESYNC=0 must be refused")
        } catch {
            #expect(AgentCommand.message(for: error).contains("--iptables-resync 0"))
        }
    }

    /// Every long option the agent's help shows can come from the environment: the list
    /// cannot fall behind the flags.
    @Test func everyAgentFlagIsInTheEnvironmentList() {
        let help = AgentCommand.helpMessage(columns: 400)
        let options = Set(
            help.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," }).compactMap { word -> String? in
                guard word.hasPrefix("--"), word.count > 2 else { return nil }
                return String(word.dropFirst(2).prefix { $0.isLetter || $0.isNumber || $0 == "-" })
            })
        let listed = Set(AgentCommand.environmentFlags.map(\.name))
        #expect(
            options.subtracting(listed).subtracting(["help", "version"]).isEmpty,
            "not in AgentCommand.environmentFlags: \(options.subtracting(listed))")
        #expect(listed.subtracting(options).isEmpty, "listed but no such flag: \(listed.subtracting(options))")
    }
}
