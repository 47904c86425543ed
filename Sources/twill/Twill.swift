import ArgumentParser
import Foundation

@main
struct Twill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "twill",
        abstract: "Overlay network agent for Docker hosts and Kubernetes nodes (flannel-compatible).",
        version: TwillVersion.string,
        subcommands: [AgentCommand.self, NetworkCommand.self, LeasesCommand.self, DockerOptsCommand.self, CNICommand.self, VersionCommand.self]
    )

    static func main() async {
        // Installed in the CNI bin dir as `flannel` or `twill`, the runtime calls us with
        // CNI_COMMAND set and no arguments: be the plugin.
        let name = (CommandLine.arguments.first.map { ($0 as NSString).lastPathComponent }) ?? ""
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
