import Foundation
import Testing
import TwillTestSupport

/// deploy/kubernetes/bootstrap-node.sh, installing into a scratch root (no systemd here).
@Suite struct BootstrapScriptTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .path
    static var script: String { repo + "/deploy/kubernetes/bootstrap-node.sh" }

    @Test func helpAndMissingArguments() throws {
        #expect(try run("/bin/bash", [Self.script, "--help"]).contains("Usage: bootstrap-node.sh --etcd-endpoints URLS"))
        #expect(throws: (any Error).self) { try run("/bin/bash", [Self.script]) }
        #expect(throws: (any Error).self) { try run("/bin/bash", [Self.script, "--bogus"]) }
    }

    @Test func installsOnceAndIsIdempotent() throws {
        let root = try makeTempDir(prefix: "twill-test-bootstrap-")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let args = [
            Self.script, "--etcd-endpoints", "http://198.51.100.254:2379", "--binary", try twillBinary(),
            "--iface", "eth0", "--prefix", root, "--no-start",
        ]
        let first = try run("/bin/bash", args)
        for path in [
            "/usr/local/bin/twill", "/opt/cni/bin/flannel", "/etc/systemd/system/twill.service", "/etc/twill/twill.env",
            "/etc/cni/net.d/10-twill.conflist",
        ] {
            #expect(first.contains("installed \(root)\(path)"), "\(first)")
            #expect(FileManager.default.fileExists(atPath: root + path))
        }
        let env = try String(contentsOfFile: root + "/etc/twill/twill.env", encoding: .utf8)
        #expect(env.contains("FLANNELD_ETCD_ENDPOINTS=http://198.51.100.254:2379") && env.contains("FLANNELD_IFACE=eth0"))
        let mode = (try FileManager.default.attributesOfItem(atPath: root + "/etc/twill/twill.env")[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o600)
        // The installed plugin is the twill binary, which answers CNI's VERSION as flannel would.
        let version = try run(root + "/opt/cni/bin/flannel", [], environment: ["CNI_COMMAND": "VERSION"])
        #expect(version.contains("supportedVersions"))
        // A second run changes nothing.
        #expect(try run("/bin/bash", args).isEmpty)
    }
}
