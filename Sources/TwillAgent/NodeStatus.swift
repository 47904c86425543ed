#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The node's view in one document: what `GET /status` answers and `twill status` shows.
public struct NodeStatus: Codable, Sendable, Equatable {
    public struct LeaseInfo: Codable, Sendable, Equatable {
        public var subnet: String
        /// The IPv6 subnet of a dual-stack lease.
        public var subnet6: String?
        public var key: String
        /// The etcd lease ID in hex, as etcdctl prints it ("0" for a reservation).
        public var etcdLease: String
        public var reservation: Bool
        /// Seconds until it expires unless renewed; nil for a reservation.
        public var expiresInSeconds: Int64?
    }

    public struct BackendInfo: Codable, Sendable, Equatable {
        public var type: String
        public var device: String?
        public var up: Bool
        public var mtu: Int?
    }

    public struct EndpointInfo: Codable, Sendable, Equatable {
        public var endpoint: String
        public var healthy: Bool
        /// The endpoint the agent uses first now.
        public var inUse: Bool
        public var lastError: String?
    }

    public struct PeerInfo: Codable, Sendable, Equatable {
        public var subnet: String
        public var publicIP: String
        /// A dual-stack peer's IPv6 subnet and address.
        public var subnet6: String?
        public var publicIPv6: String?
        public var backend: String
        /// "routed" once the backend has it.
        public var state: String
        public var txPackets: UInt64?
        public var txBytes: UInt64?
        public var rxPackets: UInt64?
        public var rxBytes: UInt64?
        /// What the peer sent that was dropped, by reason (nil where the backend cannot tell).
        public var drops: [String: UInt64]?
        /// Unix time of the last handshake, for backends that have one.
        public var lastHandshake: Int64?
    }

    public var version: String
    public var publicIP: String?
    public var interface: String?
    public var network: String?
    public var subnetLength: Int?
    /// The IPv6 overlay of a dual-stack network, and this node's public IPv6 address.
    public var network6: String?
    public var publicIPv6: String?
    public var lease: LeaseInfo?
    public var backend: BackendInfo?
    public var ready: Bool
    public var readyReasons: [String]
    public var healthy: Bool
    public var healthReasons: [String]
    public var etcdReachable: Bool
    public var etcd: [EndpointInfo]
    public var peers: [PeerInfo]
    /// Packets dropped by the data path, by reason.
    public var drops: [String: UInt64]
    /// Leases not used, by reason.
    public var ignoredLeases: [String: Int]
    /// Why the last config change was refused, while it stands.
    public var configProblem: String?

    /// The JSON `GET /status` answers.
    public func json() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? Array(encoder.encode(self))) ?? Array("{}".utf8)
    }

    /// The human-readable view `twill status` prints; `now` (Unix seconds) dates handshakes.
    public func rendered(now: Int64 = Int64(Date().timeIntervalSince1970)) -> String {
        var lines: [String] = []
        let backendText =
            backend.map { b in "\(b.type)\(b.device.map { " on \($0)" } ?? "")\(b.up ? "" : " (down)")\(b.mtu.map { ", mtu \($0)" } ?? "")"
            } ?? "-"
        lines.append(
            "node     \(publicIP ?? "-")\(interface.map { " (\($0))" } ?? "")   backend \(backendText)   \(ready ? "ready" : "NOT READY")\(healthy ? "" : ", UNHEALTHY")"
        )
        if let lease {
            let expiry =
                lease.reservation ? "reservation (never expires)" : lease.expiresInSeconds.map { "expires in \(Self.duration($0))" } ?? "-"
            lines.append("lease    \(lease.subnet)\(lease.subnet6.map { " \($0)" } ?? "")   etcd lease \(lease.etcdLease)   \(expiry)")
        } else {
            lines.append("lease    none")
        }
        if let network {
            lines.append("network  \(network)\(subnetLength.map { ", subnets /\($0)" } ?? "")\(network6.map { "   \($0)" } ?? "")")
        }
        let endpoints = etcd.map { e in
            "\(e.endpoint) (\(e.inUse ? "in use, " : "")\(e.healthy ? "healthy" : "failing: \(e.lastError ?? "?")"))"
        }
        lines.append("etcd     \(etcdReachable ? "" : "UNREACHABLE  ")\(endpoints.joined(separator: "  "))")
        for r in readyReasons { lines.append("  not ready: \(r)") }
        for r in healthReasons { lines.append("  unhealthy: \(r)") }
        if let configProblem { lines.append("  config: \(configProblem)") }
        lines.append("")
        var table = [["SUBNET", "PUBLIC IP", "BACKEND", "STATE", "TX PKTS", "TX BYTES", "RX PKTS", "RX BYTES", "RX DROPS", "HANDSHAKE"]]
        for p in peers {
            let drops =
                p.drops.map { d in d.isEmpty ? "0" : d.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") }
                ?? "-"
            table.append([
                p.subnet + (p.subnet6.map { " " + $0 } ?? ""), p.publicIP + (p.publicIPv6.map { " " + $0 } ?? ""), p.backend, p.state,
                p.txPackets.map(String.init) ?? "-", p.txBytes.map(Self.bytes) ?? "-",
                p.rxPackets.map(String.init) ?? "-", p.rxBytes.map(Self.bytes) ?? "-", drops,
                p.lastHandshake.map { Self.ago(now - $0) } ?? "-",
            ])
        }
        let widths = (0..<table[0].count).map { c in table.map { $0[c].count }.max() ?? 0 }
        for row in table {
            lines.append(
                row.enumerated().map { $1 + String(repeating: " ", count: widths[$0] - $1.count) }.joined(separator: "  ")
                    .trimmingTrailingSpaces())
        }
        if peers.isEmpty { lines.append("(no peers)") }
        if !drops.isEmpty {
            lines.append("drops    " + drops.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        let ignored = ignoredLeases.filter { $0.value > 0 }
        if !ignored.isEmpty {
            lines.append(
                "ignored  " + ignored.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + " lease(s)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Seconds since a handshake, as `wg show` says it.
    static func ago(_ seconds: Int64) -> String { seconds <= 0 ? "now" : duration(seconds) + " ago" }

    /// 93784 -> "1d2h3m".
    static func duration(_ seconds: Int64) -> String {
        guard seconds > 0 else { return "0s (expired)" }
        let d = seconds / 86400
        let h = seconds % 86400 / 3600
        let m = seconds % 3600 / 60
        let s = seconds % 60
        if d > 0 { return "\(d)d\(h)h\(m)m" }
        if h > 0 { return "\(h)h\(m)m" }
        if m > 0 { return "\(m)m\(s)s" }
        return "\(s)s"
    }

    /// 1536 -> "1.5 KiB".
    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : "\((value * 10).rounded() / 10) \(units[unit])"
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}
