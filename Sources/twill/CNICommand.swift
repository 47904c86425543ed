import ArgumentParser
import TwillAgent
import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

struct CNICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cni",
        abstract: "Act as a CNI plugin (flannel's): bridge + host-local from subnet.env.",
        discussion:
            "Normally run by the container runtime with CNI_COMMAND set and the network config on stdin. Installed as /opt/cni/bin/flannel (or twill) it does this without the subcommand."
    )

    func run() throws {
        Self.runPlugin()
    }

    /// Runs the plugin protocol and exits: result or CNI error JSON on stdout.
    static func runPlugin() -> Never {
        let input = Data(StandardIO.readInput())
        let plugin = CNIPlugin()
        do {
            let out = try plugin.run(stdin: input)
            StandardIO.write(Array(out))
            Glibc.exit(0)
        } catch {
            let version = (try? CNIPlugin.Config(json: input))?.cniVersion ?? "1.0.0"
            StandardIO.write(error.json(cniVersion: version))
            Glibc.exit(1)
        }
    }
}
