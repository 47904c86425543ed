import ArgumentParser
import TwillAgent
import TwillEtcd
import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `twill status`: the running agent's view of the node, from its health endpoint.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the node's lease, backend, etcd endpoints and peers, from the running agent.",
        discussion:
            "Reads GET /status on the agent's --healthz-ip:--healthz-port (default: FLANNELD_HEALTHZ_IP/PORT, else 127.0.0.1 and no port: give --endpoint)."
    )

    @Option(help: "The agent's health endpoint, e.g. http://127.0.0.1:9100.") var endpoint: String?
    @Flag(help: "Print the JSON as the agent sends it.") var json = false
    @Flag(help: "Refresh the view until interrupted.") var watch = false
    @Option(help: "Seconds between refreshes with --watch (default 2).") var interval: Double = 2

    func validate() throws {
        if watch, !(0.2...3600).contains(interval) { throw ValidationError("--interval \(interval) must be between 0.2 and 3600 seconds") }
    }

    var url: String? {
        if let endpoint { return endpoint.hasSuffix("/status") ? endpoint : endpoint.trimmingSuffix("/") + "/status" }
        let env = ProcessInfo.processInfo.environment
        guard let port = env["FLANNELD_HEALTHZ_PORT"].flatMap(Int.init), port > 0 else { return nil }
        var host = env["FLANNELD_HEALTHZ_IP"].flatMap { $0.isEmpty || $0 == "0.0.0.0" ? nil : $0 } ?? "127.0.0.1"
        if host.contains(":") { host = "[\(host)]" }
        return "http://\(host):\(port)/status"
    }

    func run() async throws {
        guard let url else {
            throw CLIError(
                "no endpoint: give --endpoint http://HOST:PORT (the agent's --healthz-port; the health server is off by default)")
        }
        repeat {
            let text = try await Self.fetch(url, json: json)
            if watch { StandardIO.write("\u{1B}[H\u{1B}[2J") }
            StandardIO.write(text)
            if watch { try await Task.sleep(for: .milliseconds(Int64(interval * 1000))) }
        } while watch
    }

    static func fetch(_ url: String, json: Bool) async throws -> String {
        switch await HTTPGet.fetch(url) {
        case .failure(let e):
            throw CLIError("\(e) (is the agent running with --healthz-port?)")
        case .success(let (status, body)):
            guard status == 200 else {
                throw CLIError("\(url) answered HTTP \(status): \(String(decoding: body.prefix(200), as: UTF8.self))")
            }
            if json { return String(decoding: body, as: UTF8.self) + "\n" }
            do {
                return try JSONDecoder().decode(NodeStatus.self, from: Data(body)).rendered()
            } catch {
                throw CLIError("\(url) sent something that is not a node status: \(error)")
            }
        }
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        var s = self
        while s.hasSuffix(suffix) { s.removeLast(suffix.count) }
        return s
    }
}
