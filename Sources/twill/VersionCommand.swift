import ArgumentParser

enum TwillVersion {
    static let string = "0.1.0"
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print Twill's version.")

    func run() throws {
        print("twill \(TwillVersion.string)")
    }
}
