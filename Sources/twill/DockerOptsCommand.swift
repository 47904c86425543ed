import ArgumentParser
import TwillAgent
import TwillLease
import TwillNetlink
import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct DockerOptsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "docker-opts",
        abstract: "Write Docker daemon options from subnet.env (flannel's mk-docker-opts.sh).",
        discussion: "With neither -i nor -c both forms are written. --daemon-json prints daemon.json members instead.")

    @Option(name: .customShort("f"), help: "subnet.env to read (default /run/flannel/subnet.env).") var subnetFile = SubnetEnv.defaultPath
    @Option(name: .customShort("d"), help: "Docker environment file to write (default /run/docker_opts.env).") var dockerEnvFile =
        "/run/docker_opts.env"
    @Flag(name: .customShort("i"), help: "Write each option as its own variable (DOCKER_OPT_BIP, ...).") var individual = false
    @Flag(name: .customShort("c"), help: "Write all options in one variable (see -k).") var combined = false
    @Option(name: .customShort("k"), help: "Name of the combined variable (default DOCKER_OPTS).") var combinedKey = "DOCKER_OPTS"
    @Flag(name: .customShort("m"), help: "Leave --ip-masq out (older Docker).") var noIPMasq = false
    @Flag(name: .customLong("daemon-json"), help: "Print {\"bip\",\"mtu\",\"ip-masq\"} for /etc/docker/daemon.json and write nothing.")
    var daemonJSON = false

    func run() throws {
        guard let env = try SubnetEnv.read(path: subnetFile, requireComplete: true) else {
            throw CLIError("subnet file \(subnetFile) does not exist (is the Twill agent running?)")
        }
        let opts = try DockerOptions(env: env)
        if let subnet = env.subnet, let netlink = try? Netlink(), let routes = try? netlink.routes(),
            let conflict = DockerOptions.conflictingRoute(
                for: subnet, routes: routes, name: { (try? netlink.link(index: $0).name) ?? "index \($0)" })
        {
            throw CLIError(
                "subnet \(subnet) from \(subnetFile) is already routed via a gateway (\(conflict)); refusing to give it to Docker's bridge")
        }
        if daemonJSON {
            print(opts.daemonJSON)
            return
        }
        let text = opts.environmentFile(individual: individual, combined: combined, combinedKey: combinedKey, includeIPMasq: !noIPMasq)
        do { try AtomicFile.write(Array(text.utf8), to: dockerEnvFile, mode: 0o644) } catch {
            throw CLIError("cannot write \(dockerEnvFile): \(error)")
        }
    }
}
