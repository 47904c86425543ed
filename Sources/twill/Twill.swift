import ArgumentParser
import Foundation

@main
struct Twill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "twill",
        abstract: "Overlay network agent for Docker hosts and Kubernetes nodes (flannel-compatible).",
        version: TwillVersion.string,
        subcommands: [AgentCommand.self, NetworkCommand.self, LeasesCommand.self, VersionCommand.self]
    )

    static func main() async {
        let arguments = FlannelEnvironment.normalise(Array(CommandLine.arguments.dropFirst()))
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
