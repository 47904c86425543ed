import Foundation
import TwillSystem

/// A node whose agent runs under a real systemd (PID 1 of a container sharing a test host's
/// network namespace), through `Tests/Scripts/systemd-node.sh`: for what only systemd shows,
/// such as its file descriptor store across `systemctl restart`.
public final class SystemdNode: @unchecked Sendable {
    public let dir: String
    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(
            "Scripts/systemd-node.sh"
        ).path
    }

    /// Boots the node in `host`'s namespace with `binary` as /usr/local/bin/twill; its
    /// state lives in `dir` (removed by ``stop()``).
    public init(dir: String, host: TestNamespace, binary: String) throws {
        self.dir = dir
        do {
            try Self.script(["start", dir, host.name, binary])
        } catch {
            throw HarnessError("systemd node in \(host.name) did not start: \(error)")
        }
    }

    /// Runs `command` in the node (as root, outside any unit): its standard output; throws on
    /// a non-zero exit.
    @discardableResult
    public func exec(_ command: [String], input: String? = nil) throws -> String {
        try Self.script(["exec", dir] + command, input: input)
    }

    /// Writes `text` to `path` inside the node.
    public func write(_ text: String, to path: String) throws {
        try exec(["/bin/sh", "-c", "mkdir -p \"$(dirname '\(path)')\" && cat > '\(path)'"], input: text)
    }

    /// `systemctl ARGS`.
    @discardableResult
    public func systemctl(_ arguments: String...) throws -> String { try exec(["systemctl"] + arguments) }

    /// A unit's journal, for failure messages.
    public func journal(_ unit: String) -> String {
        (try? exec(["journalctl", "-u", unit, "--no-pager", "-o", "short-precise"])) ?? "(no journal)"
    }

    /// Removes the container, its dockerd and everything under `dir`.
    public func stop() {
        _ = try? Self.script(["stop", dir])
    }

    deinit { stop() }

    /// Runs the script (posix_spawn and waitpid: Foundation's Process can miss the exit of a
    /// script that leaves daemons behind); its standard output, or an error with both streams.
    @discardableResult
    static func script(_ arguments: [String], input: String? = nil) throws -> String {
        let outcome = try Subprocess.run("/bin/bash", [script] + arguments, input: input.map { Array($0.utf8) })
        let out = String(decoding: outcome.standardOutput, as: UTF8.self)
        guard outcome.succeeded else {
            throw HarnessError(
                "systemd-node.sh \(arguments.prefix(3).joined(separator: " ")): \(outcome.summary): \(out)\(String(decoding: outcome.standardError, as: UTF8.self))"
            )
        }
        return out
    }
}
