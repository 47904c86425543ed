import Foundation
import Testing
import TwillTestSupport

/// Docker on two nodes: each node runs `twill agent`; a dockerd per node (inside the node's
/// namespace) is started with the options `twill docker-opts` wrote; a container on node A
/// pings a container on node B and fetches a file from it.
@Suite(.serialized) struct DockerEndToEndTests {
    /// One dockerd inside a host namespace, with its own roots and socket.
    final class Dockerd: @unchecked Sendable {
        let host: TestNamespace
        let dir: String
        let socket: String
        var process: ChildProcess?

        init(host: TestNamespace, dir: String, options: [String]) throws {
            self.host = host
            self.dir = dir
            socket = "unix://\(dir)/docker.sock"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            process = try ChildProcess(
                "/usr/bin/nsenter",
                [
                    "--net=\(host.path)", "/usr/sbin/dockerd", "--data-root", dir + "/data", "--exec-root", dir + "/exec",
                    "--pidfile", dir + "/docker.pid", "-H", socket, "--storage-driver", "vfs",
                ] + options, logPath: dir + "/dockerd.log")
        }

        @discardableResult
        func docker(_ args: [String], input: String? = nil) throws -> String {
            try run("/usr/bin/docker", ["-H", socket] + args, input: input)
        }

        func waitReady() async -> Bool {
            await eventually(timeout: .seconds(40)) { (try? self.docker(["info", "--format", "{{.ServerVersion}}"])) != nil }
        }

        /// Stops containers and the daemon, unmounts what it mounted, removes its files.
        func shutdown() {
            if let ids = try? docker(["ps", "-aq"]), !ids.isEmpty {
                _ = try? docker(["rm", "-f"] + ids.split(separator: "\n").map(String.init))
            }
            process?.stop(signal: SIGTERM, timeout: .seconds(15))
            process = nil
            let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
            for m in mounts.split(separator: "\n").compactMap({ $0.split(separator: " ").dropFirst().first }).filter({ $0.hasPrefix(dir) })
                .sorted().reversed()
            {
                _ = try? run("/usr/bin/umount", ["-l", String(m)])
            }
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// A root filesystem of busybox-static with a web page, as an image tarball. (The file is
    /// fetched with nc: Debian's static busybox wget crashes in a bare container.)
    static func busyboxTar(in dir: String) throws -> String {
        let root = dir + "/rootfs"
        try FileManager.default.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/www", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: root + "/bin/busybox")
        for applet in ["sh", "ping", "httpd", "nc", "ip", "cat", "sleep"] {
            try FileManager.default.createSymbolicLink(atPath: root + "/bin/" + applet, withDestinationPath: "busybox")
        }
        try "hello from twill\n".write(toFile: root + "/www/index.html", atomically: false, encoding: .utf8)
        try run("/usr/bin/tar", ["-C", root, "-cf", dir + "/busybox.tar", "."])
        return dir + "/busybox.tar"
    }

    @Test(arguments: [("udp", "198.51.100"), ("vxlan", "203.0.113")])
    func containersOnTwoNodesTalk(backend: String, underlay: String) async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/dockerd"), FileManager.default.fileExists(atPath: "/bin/busybox")
        else {
            Issue.record("docker.io and busybox-static are needed (make deps installs them)")
            return
        }
        try await withCluster(hosts: 2, underlay: underlay) { cluster in
            try cluster.etcdctl(["put", "/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"\#(backend)"}}"#])
            for i in 0..<2 {
                try cluster.net.hosts[i].exec("/usr/sbin/sysctl", ["-qw", "net.ipv4.ip_forward=1"])
                try cluster.startAgent(i, extra: ["--ip-masq"])
            }
            for i in 0..<2 {
                #expect(await eventually(timeout: .seconds(20)) { cluster.subnet(i) != nil }, "\(cluster.agentLog(i))")
            }
            let image = try Self.busyboxTar(in: cluster.dir)
            var daemons: [Dockerd] = []
            defer { for d in daemons { d.shutdown() } }
            for i in 0..<2 {
                // Docker's options, exactly as docker-opts wrote them.
                let envFile = cluster.dir + "/docker_opts_h\(i + 1).env"
                try run(try twillBinary(), ["docker-opts", "-f", cluster.subnetFile(i), "-d", envFile, "-i"])
                let text = try String(contentsOfFile: envFile, encoding: .utf8)
                let options = text.split(separator: "\n").compactMap { line -> String? in
                    guard let eq = line.firstIndex(of: "=") else { return nil }
                    return String(line[line.index(after: eq)...]).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                }
                #expect(options.contains("--ip-masq=false"), "\(text)")
                let d = try Dockerd(host: cluster.net.hosts[i], dir: cluster.dir + "/docker-h\(i + 1)", options: options)
                daemons.append(d)
                #expect(await d.waitReady(), "dockerd on h\(i + 1): \(d.process?.log ?? "")")
                try d.docker(["import", image, "twill-busybox"])
            }
            // Docker's bridge holds the subnet's first address.
            for i in 0..<2 {
                let gw = (cluster.subnet(i) ?? "").replacingOccurrences(of: ".0/24", with: ".1/24")
                #expect(try cluster.net.hosts[i].ip("-4", "addr", "show", "docker0").contains(gw))
            }
            try daemons[1].docker(["run", "-d", "--name", "web", "twill-busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
            let ip = try daemons[1].docker(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]).trimmingCharacters(
                in: .whitespacesAndNewlines)
            #expect(ip.hasPrefix((cluster.subnet(1) ?? "-").replacingOccurrences(of: "0/24", with: "")), "web container address \(ip)")
            let out = try daemons[0].docker([
                "run", "--rm", "twill-busybox", "sh", "-c",
                "ping -c1 -W3 \(ip) && printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 \(ip) 8080",
            ])
            #expect(out.contains("1 packets received"), "\(out)")
            #expect(out.contains("hello from twill"), "\(out)")
        }
    }
}
