import ArgumentParser
import TwillSystem
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
        subcommands: [AgentCommand.self, NetworkCommand.self, LeasesCommand.self, DockerOptsCommand.self, CNICommand.self, VersionCommand.self]
    )

    static func main() async {
        // `twill version` answers before anything else is set up: it is what scripts and
        // health checks run most.
        switch Array(CommandLine.arguments.dropFirst()) {
        case ["version"]: return StandardIO.write("twill \(TwillVersion.string)\n")
        case ["--version"]: return StandardIO.write(TwillVersion.string + "\n")
        default: break
        }
        // Installed in the CNI bin dir as `flannel` or `twill`, the runtime calls us with
        // CNI_COMMAND set and no arguments: be the plugin.
        let name = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
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
}
