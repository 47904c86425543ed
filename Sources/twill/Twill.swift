import ArgumentParser
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@main
struct Twill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "twill",
        abstract: "Overlay network agent for Docker hosts and Kubernetes nodes (flannel-compatible).",
        version: TwillVersion.string,
        subcommands: [
            AgentCommand.self, StatusCommand.self, NetworkCommand.self, LeasesCommand.self, DockerOptsCommand.self, CNICommand.self,
            CleanupCommand.self, VersionCommand.self,
        ]
    )

    static func main() async {
        let name = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
        // Invoked as `flanneld` (a symlink): flanneld's command line, unchanged.
        if name == "flanneld" { return await runAsFlanneld() }
        // `twill version` answers before anything else is set up: it is what scripts and
        // health checks run most.
        switch Array(CommandLine.arguments.dropFirst()) {
        case ["version"]: return StandardIO.write("twill \(TwillVersion.string)\n")
        // The holder a stopping agent leaves (HeldDescriptorStore); not for operators.
        case let args where args.count == 2 && args[0] == "hold-descriptors": return HeldDescriptorStore.hold(names: args[1])
        case ["--version"]: return StandardIO.write(TwillVersion.string + "\n")
        default: break
        }
        // Installed in the CNI bin dir as `flannel` or `twill`, the runtime calls us with
        // CNI_COMMAND set and no arguments: be the plugin.
        if CommandLine.arguments.count == 1, ProcessInfo.processInfo.environment["CNI_COMMAND"] != nil || name == "flannel" {
            CNICommand.runPlugin()
        }
        // Go-style spellings first, then FLANNELD_ values for flags not given: one parse
        // (and one validation) for both.
        let normalised = FlannelEnvironment.normalise(Array(CommandLine.arguments.dropFirst()))
        let arguments = FlannelEnvironment.merge(normalised, flags: FlannelEnvironment.flags(forSubcommandIn: normalised))
        do {
            var command = try parseAsRoot(arguments)
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    /// The agent with flanneld's command line (``FlanneldCommandLine``).
    static func runAsFlanneld() async {
        let environment = ProcessInfo.processInfo.environment
        switch FlanneldCommandLine.parse(
            Array(CommandLine.arguments.dropFirst()), environment: environment,
            version: "\(TwillVersion.string) (Twill, flanneld-compatible)")
        {
        case .exit(let status, let stdout, let stderr):
            if !stdout.isEmpty { StandardIO.write(stdout, to: 1) }
            if !stderr.isEmpty { StandardIO.write(stderr, to: 2) }
            Glibc.exit(status)
        case .run(let arguments):
            do {
                let command = try AgentCommand.parse(arguments)
                try await command.run()
            } catch {
                AgentCommand.exit(withError: error)
            }
        }
    }
}
