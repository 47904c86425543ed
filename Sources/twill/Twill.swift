import ArgumentParser

@main
struct Twill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "twill",
        abstract: "Overlay network agent for Docker hosts and Kubernetes nodes (flannel-compatible).",
        version: TwillVersion.string,
        subcommands: [VersionCommand.self]
    )
}
