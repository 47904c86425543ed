import Foundation
import Testing
import TwillTestSupport

/// /healthz, /readyz and /metrics of a running agent, fetched over HTTP on loopback.
@Suite(.requiresEtcd) struct HealthServerTests {
    /// GET on loopback with curl: (status, body).
    static func get(_ port: Int, _ path: String) -> (Int, String) {
        guard let out = try? run("/usr/bin/curl", ["-s", "-m", "3", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"]) else {
            return (0, "")
        }
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    @Test func healthReadinessAndMetrics() async throws {
        try await withEtcd { etcd in
            let dir = try makeTempDir(prefix: "twill-test-health-")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let port = try freePort()
            let agent = try ChildProcess(
                try twillBinary(),
                [
                    "agent", "--etcd-endpoints", etcd.endpoint, "--iface", "lo", "--public-ip", "198.51.100.70",
                    "--subnet-file", dir + "/subnet.env", "--healthz-ip", "127.0.0.1", "--healthz-port", "\(port)",
                ], logPath: dir + "/agent.log")
            defer { agent.stop() }
            // Alive, but not ready: there is no network config yet.
            #expect(await eventually { Self.get(port, "/healthz").0 == 200 }, "\(agent.log)")
            #expect(Self.get(port, "/readyz").0 == 503)
            try await etcd.client().put("/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"alloc"}}"#)
            try await etcd.client().put("/coreos.com/network/subnets/198.18.99.0-24", #"{"PublicIP":"203.0.113.99","PublicIPv6":null}"#)
            #expect(await eventually { Self.get(port, "/readyz").0 == 200 })
            #expect(await eventually { Self.get(port, "/metrics").1.contains("twill_peers 1") })
            let metrics = Self.get(port, "/metrics").1
            #expect(metrics.contains("# TYPE twill_etcd_request_duration_seconds histogram"))
            #expect(metrics.contains(#"twill_etcd_request_duration_seconds_count{path="/v3/kv/txn"}"#))
            #expect(metrics.contains("twill_lease_expiry_timestamp_seconds{subnet=\"198.18."))
            #expect(metrics.contains("twill_ready 1"))
            #expect(agent.stop() == 0)
        }
    }
}
