import Foundation

/// What an end-to-end test reads off a running agent and its host.
public enum AgentProbe {
    /// GET `path` on the agent's health port inside `host`: (status, body); status 0 when
    /// nothing answered.
    public static func get(_ host: TestNamespace, port: Int, _ path: String) -> (status: Int, body: String) {
        guard let out = try? host.exec("/usr/bin/curl", ["-s", "-m", "3", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"]) else {
            return (0, "")
        }
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    /// The sum of the samples of metric `name` (the part before `{` or the space) whose
    /// labels contain `label`; nil when there is none.
    public static func metric(_ host: TestNamespace, port: Int, _ name: String, label: String = "") -> Double? {
        let text = get(host, port: port, "/metrics").body
        var total: Double?
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let head = line.prefix { $0 != "{" && $0 != " " }
            guard head == name, label.isEmpty || line.contains(label),
                let v = line.split(separator: " ").last.flatMap({ Double($0) })
            else { continue }
            total = (total ?? 0) + v
        }
        return total
    }

    /// User + system CPU seconds a process has used.
    public static func cpuSeconds(pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// A ping run in the background (`-i interval -c count`), for loss under a fault.
    public final class Ping: @unchecked Sendable {
        let process: ChildProcess

        public init(from host: TestNamespace, source: String, to target: String, interval: Double, count: Int, logPath: String) throws {
            process = try ChildProcess(
                "/usr/sbin/ip",
                [
                    "netns", "exec", host.name, "/usr/bin/ping", "-n", "-q", "-i", "\(interval)",
                    "-W", "1", "-c", "\(count)", "-I", source, target,
                ], logPath: logPath)
        }

        /// Waits for it to finish (at most `timeout`): (sent, received).
        public func finish(timeout: Duration) async -> (sent: Int, received: Int)? {
            _ = await eventually(timeout: timeout) { !process.isRunning }
            process.stop(signal: SIGINT)
            // "N packets transmitted, M received, ..."
            guard let line = process.log.split(separator: "\n").first(where: { $0.contains("packets transmitted") }) else { return nil }
            let numbers = line.split(separator: " ").compactMap { Int($0) }
            guard numbers.count >= 2 else { return nil }
            return (numbers[0], numbers[1])
        }

        public var log: String { process.log }
    }
}

extension TestCluster {
    /// The etcd lease ID attached to `key` (0 for none), read with etcdctl.
    public func leaseID(ofKey key: String) -> Int64? {
        guard let out = try? etcdctl(["get", key, "-w", "json"]),
            let data = out.data(using: .utf8),
            let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let kvs = json["kvs"] as? [[String: Any]], let kv = kvs.first
        else { return nil }
        return (kv["lease"] as? NSNumber)?.int64Value ?? 0
    }

    /// The value at `key`, or nil when absent.
    public func value(ofKey key: String) -> String? {
        guard let out = try? etcdctl(["get", key, "--print-value-only"]) else { return nil }
        let v = out.trimmingCharacters(in: .whitespacesAndNewlines)
        return v.isEmpty ? nil : v
    }

    /// Gives host `i` a bridge holding the first address of `subnet`, as docker0 would
    /// (replacing one from an earlier subnet).
    public func addBridge(_ i: Int, subnet: String) throws {
        let h = hosts[i]
        _ = try? h.ip("link", "del", "twb0")
        try h.ip("link", "add", "twb0", "type", "bridge")
        try h.ip("addr", "add", "\(TestCluster.gateway(subnet))/24", "dev", "twb0")
        try h.ip("link", "set", "twb0", "up")
    }

    /// A /24 subnet's first address ("198.18.7.0/24" -> "198.18.7.1").
    public static func gateway(_ subnet: String) -> String { subnet.replacingOccurrences(of: ".0/24", with: ".1") }

    /// Whether host `from`'s bridge reaches host `to`'s (by their current subnets).
    public func reaches(_ from: Int, _ to: Int, attempts: Int = 3) -> Bool {
        guard let a = subnet(from), let b = subnet(to) else { return false }
        return hosts[from].pingEventually(TestCluster.gateway(b), from: TestCluster.gateway(a), attempts: attempts)
    }
}
