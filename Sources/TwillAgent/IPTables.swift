import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A failed `iptables` or `iptables-restore` run: the command line, its exit status and
/// what it wrote to stderr, so that an operator can rerun it by hand.
public struct IPTablesError: Error, CustomStringConvertible, Sendable {
    /// The whole command line, including any command prefix (e.g. `ip netns exec NAME`).
    public let command: [String]
    /// The exit status, or nil when the program could not be started at all.
    public let status: Int32?
    /// The program's stderr (trimmed), or why it could not be started.
    public let stderr: String
    /// The stdin fed to `iptables-restore`, when that is what failed; the line numbers in its
    /// error messages refer to it.
    public let input: String?

    public init(command: [String], status: Int32?, stderr: String, input: String? = nil) {
        self.command = command
        self.status = status
        self.stderr = stderr
        self.input = input
    }

    public var description: String {
        let line = IPTables.render(command)
        let how = status.map { "failed (exit \($0))" } ?? "could not be run"
        var text = "`\(line)` \(how): \(stderr.isEmpty ? "(no stderr)" : stderr)"
        if let input { text += "\ninput was:\n\(input)" }
        return text
    }
}

/// A thin runner of the `iptables` and `iptables-restore` binaries (whichever backend, nft or
/// legacy, the system's alternatives point at).
///
/// Running the binaries rather than talking nftables netlink keeps Twill's rules exactly what
/// flannel and `iptables -S` show, whichever backend the node uses, and lets operators read
/// every change back with the tools they already know.
struct IPTables: Sendable {
    /// Prepended to every command, e.g. `["/usr/sbin/ip", "netns", "exec", NAME]` in tests.
    let commandPrefix: [String]
    /// `ip6tables` and `ip6tables-restore` instead (IPv6 rules live in tables of their own).
    let ipv6: Bool
    private var program: String { ipv6 ? "ip6tables" : "iptables" }

    /// How long to wait for the xtables lock before giving up. Waiting (rather than failing at
    /// once) matters on legacy-backend nodes where kube-proxy holds the lock for a while; the
    /// bound keeps a stuck lock holder from hanging the resync loop forever.
    static let lockWaitSeconds = 10

    init(commandPrefix: [String] = [], ipv6: Bool = false) {
        self.commandPrefix = commandPrefix
        self.ipv6 = ipv6
    }

    /// `iptables --wait=N ARGS...`; returns stdout.
    @discardableResult
    func run(_ arguments: [String]) throws(IPTablesError) -> String {
        let binary = try Self.locate(program, prefix: commandPrefix)
        return try execute([binary, "--wait=\(Self.lockWaitSeconds)"] + arguments, input: nil)
    }

    /// `iptables-restore --wait=N --noflush` with `input` on stdin: all of `input` is applied
    /// in one transaction, or nothing is (used so that rebuilding a chain never leaves a
    /// moment in which packets pass half a rule set).
    func restore(_ input: String) throws(IPTablesError) {
        let binary = try Self.locate(program + "-restore", prefix: commandPrefix)
        try execute([binary, "--wait=\(Self.lockWaitSeconds)", "--noflush"], input: input)
    }

    /// `iptables -t TABLE -S`: every chain declaration (`-N`, `-P`) and rule (`-A`) of the
    /// table in iptables-save argument form, one per line.
    func listTable(_ table: String) throws(IPTablesError) -> [String] {
        try run(["-t", table, "-S"]).split(separator: "\n").map(String.init)
    }

    /// Runs `command` (after the prefix) to completion and returns its stdout.
    @discardableResult
    private func execute(_ command: [String], input: String?) throws(IPTablesError) -> String {
        try Self.execute(commandPrefix + command, input: input)
    }

    /// Runs a whole command line (`iptables`, `nft`...) to completion and returns its stdout.
    @discardableResult
    static func execute(_ full: [String], input: String?) throws(IPTablesError) -> String {
        let outcome: Subprocess.Outcome
        do {
            // A fixed environment: iptables needs none, and a caller's XTABLES_LIBDIR or locale
            // must not change what the agent installs or how errors read.
            outcome = try Subprocess.run(
                full[0], Array(full.dropFirst()),
                environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"],
                input: input.map { Array($0.utf8) })
        } catch {
            throw IPTablesError(command: full, status: nil, stderr: "\(error)", input: input)
        }
        guard outcome.succeeded else {
            let stderr = String(decoding: outcome.standardError, as: UTF8.self).trimmingWhitespace()
            throw IPTablesError(command: full, status: outcome.signal.map { 128 + $0 } ?? outcome.status, stderr: stderr, input: input)
        }
        return String(decoding: outcome.standardOutput, as: UTF8.self)
    }

    /// The path of `name` in /usr/sbin or /sbin (Debian and RHEL put it in one or the other,
    /// and an agent run by systemd has no useful PATH to search).
    static func locate(_ name: String, prefix: [String], package: String = "iptables") throws(IPTablesError) -> String {
        for dir in ["/usr/sbin", "/sbin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        throw IPTablesError(
            command: prefix + [name], status: nil,
            stderr: "\(name) not found in /usr/sbin or /sbin; install the \(package) package")
    }

    /// One command line as a shell would take it, quoting arguments with spaces or quotes.
    static func render(_ arguments: [String]) -> String {
        arguments.map(quote).joined(separator: " ")
    }

    /// An argument as iptables-save and `iptables -S` print it: double-quoted when it
    /// contains whitespace or quotes (comments such as `"flanneld masq"`), bare otherwise.
    static func quote(_ argument: String) -> String {
        let needsQuotes = argument.isEmpty || argument.contains { $0 == " " || $0 == "\t" || $0 == "\"" || $0 == "'" }
        guard needsQuotes else { return argument }
        return "\"" + argument.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"") + "\""
    }
}
