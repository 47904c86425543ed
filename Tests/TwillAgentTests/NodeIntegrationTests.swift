import Foundation
import Testing
import TwillAddress
import TwillLease
import TwillNetlink
import TwillTestSupport

@testable import TwillAgent

#if canImport(Glibc)
import Glibc
#endif

@Suite struct DockerOptionsTests {
    let env = SubnetEnv(network: IPv4Network("198.18.0.0/16"), subnet: IPv4Network("198.18.7.0/24"), mtu: 1472, ipMasq: true)

    @Test func mkDockerOptsFormats() throws {
        let o = try DockerOptions(env: env)
        #expect(
            o.environmentFile(individual: true, combined: false)
                == "DOCKER_OPT_BIP=\"--bip=198.18.7.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n")
        #expect(
            o.environmentFile(individual: false, combined: true, combinedKey: "OPTS")
                == "OPTS=\" --bip=198.18.7.1/24 --ip-masq=false --mtu=1472\"\n")
        #expect(
            o.environmentFile(individual: false, combined: false, includeIPMasq: false)
                == "DOCKER_OPT_BIP=\"--bip=198.18.7.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=198.18.7.1/24 --mtu=1472\"\n"
        )
        #expect(o.daemonJSON == #"{"bip":"198.18.7.1/24","mtu":1472,"ip-masq":false}"#)
    }

    @Test func subnetRoutedViaGatewayIsDetected() {
        // 198.18.0.0/16 via 203.0.113.1 on eth9, a link route, and a default route.
        let routes = [
            Route(destination: IPv4Network("198.18.0.0/16")!, gateway: IPv4Address("203.0.113.1"), outputInterface: 9, routeProtocol: 3),
            Route(destination: IPv4Network("198.51.100.0/24")!, outputInterface: 8, scope: 253, routeProtocol: 2),
            Route(destination: .all, gateway: IPv4Address("203.0.113.254"), outputInterface: 9, routeProtocol: 3),
        ]
        let name = { (i: Int32) in "eth\(i)" }
        #expect(
            DockerOptions.conflictingRoute(for: IPv4Network("198.18.7.0/24")!, routes: routes, name: name)
                == "198.18.0.0/16 via 203.0.113.1 dev eth9")
        #expect(DockerOptions.conflictingRoute(for: IPv4Network("198.51.100.0/24")!, routes: routes, name: name) == nil)
    }

    @Test func dockerOptsCommandWritesAndRefusesBadInput() throws {
        let dir = try makeTempDir(prefix: "twill-test-docker-")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = try twillBinary()
        try env.write(path: dir + "/subnet.env")
        try run(t, ["docker-opts", "-f", dir + "/subnet.env", "-d", dir + "/docker_opts.env", "-c"])
        #expect(
            try String(contentsOfFile: dir + "/docker_opts.env", encoding: .utf8)
                == "DOCKER_OPTS=\" --bip=198.18.7.1/24 --ip-masq=false --mtu=1472\"\n")
        #expect(try run(t, ["docker-opts", "-f", dir + "/subnet.env", "--daemon-json"]).contains(#""bip":"198.18.7.1/24""#))
        try "FLANNEL_NETWORK=198.18.0.0/16\n".write(toFile: dir + "/partial.env", atomically: false, encoding: .utf8)
        for bad in [dir + "/missing.env", dir + "/partial.env"] {
            do {
                try run(t, ["docker-opts", "-f", bad, "-d", dir + "/out.env"])
                Issue.record("\(bad) should be refused")
            } catch {
                #expect("\(error)".contains(bad))
            }
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/out.env"))
    }
}

@Suite(.requiresRoot) struct CNIPluginTests {
    @Test func delegateConfigIsFlannels() throws {
        let config = try CNIPlugin.Config(
            json: Data(#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true}}"#.utf8))
        let env = SubnetEnv(network: IPv4Network("198.18.0.0/16"), subnet: IPv4Network("198.18.7.0/24"), mtu: 1472, ipMasq: true)
        let d = try CNIPlugin.delegateConfig(config, env: env)
        let expected =
            #"{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"198.18.7.0/24"}]],"routes":[{"dst":"198.18.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cbr0","type":"bridge"}"#
        #expect(String(decoding: JSONValue.object(d).encoded(), as: UTF8.self) == expected)
    }

    @Test func versionAndErrorsAreCNIJSON() throws {
        let version = try CNIPlugin(environment: ["CNI_COMMAND": "VERSION"]).run(stdin: Data())
        #expect(String(decoding: version, as: UTF8.self).contains("\"supportedVersions\""))
        do {
            _ = try CNIPlugin(environment: ["CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x"]).run(stdin: Data("{".utf8))
            Issue.record("expected failure")
        } catch {
            #expect(error.code == 6)
            #expect(error.json(cniVersion: "1.0.0").contains("\"msg\":\"failed to parse network configuration\""))
        }
    }

    /// ADD then DEL through the real bridge/host-local/loopback plugins, with the "host" and
    /// the "pod" both namespaces of the test's own.
    @Test func addAndDelWithRealPlugins() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge") else {
            Issue.record("containernetworking-plugins is not installed (make deps installs it)")
            return
        }
        let tag = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let host = "twc-\(tag)-h"
        let pod = "twc-\(tag)-p"
        let dir = try makeTempDir(prefix: "twill-test-cni-")
        defer {
            _ = try? run("/usr/sbin/ip", ["netns", "del", pod])
            _ = try? run("/usr/sbin/ip", ["netns", "del", host])
            try? FileManager.default.removeItem(atPath: dir)
        }
        try run("/usr/sbin/ip", ["netns", "add", host])
        try run("/usr/sbin/ip", ["netns", "add", pod])
        try run("/usr/sbin/ip", ["-n", host, "link", "set", "lo", "up"])
        let env = SubnetEnv(network: IPv4Network("198.18.0.0/16"), subnet: IPv4Network("198.18.7.0/24"), mtu: 1472, ipMasq: false)
        try env.write(path: dir + "/subnet.env")
        let conf =
            #"{"cniVersion":"0.4.0","name":"twill-test","type":"flannel","subnetFile":"\#(dir)/subnet.env","dataDir":"\#(dir)/data","delegate":{"bridge":"twc\#(tag)","ipam":{"dataDir":"\#(dir)/ipam"}}}"#
        let cni: [String: String] = [
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "pod1", "CNI_NETNS": "/run/netns/\(pod)",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
        ]
        let t = try twillBinary()
        let add = try run("/usr/sbin/ip", ["netns", "exec", host, t, "cni"], environment: cni, input: conf)
        #expect(add.contains("198.18.7."), "\(add)")
        #expect(FileManager.default.fileExists(atPath: dir + "/data/pod1"))
        let addrs = try run("/usr/sbin/ip", ["-n", pod, "-4", "addr", "show", "eth0"])
        #expect(addrs.contains("inet 198.18.7."))
        let routes = try run("/usr/sbin/ip", ["-n", pod, "route"])
        #expect(routes.contains("198.18.0.0/16 via 198.18.7.1"))
        #expect(try run("/usr/sbin/ip", ["-n", host, "link", "show", "twc\(tag)"]).contains("mtu 1472"))
        let ipamFiles = try FileManager.default.contentsOfDirectory(atPath: dir + "/ipam/twill-test")
        #expect(ipamFiles.contains { $0.hasPrefix("198.18.7.") })
        // The pod reaches its gateway on the bridge.
        try run("/usr/sbin/ip", ["-n", pod, "link", "set", "lo", "up"])
        #expect((try? run("/usr/sbin/ip", ["netns", "exec", pod, "ping", "-c1", "-W2", "198.18.7.1"])) != nil)
        // CHECK is handed to the delegate with the ADD result as prevResult. (Debian's bridge
        // plugin 1.1.1 then compares routes without their gateway and refuses its own
        // isGateway routes, so only the hand-over is asserted: the answer is the delegate's.)
        var check = cni
        check["CNI_COMMAND"] = "CHECK"
        let checkConf = String(conf.dropLast()) + #","prevResult":"# + add + "}"
        do {
            try run("/usr/sbin/ip", ["netns", "exec", host, t, "cni"], environment: check, input: checkConf)
        } catch {
            #expect("\(error)".contains("delegate bridge:"), "\(error)")
        }
        // DEL removes the interface, frees the address and the saved config.
        var del = cni
        del["CNI_COMMAND"] = "DEL"
        try run("/usr/sbin/ip", ["netns", "exec", host, t, "cni"], environment: del, input: conf)
        #expect(!(try run("/usr/sbin/ip", ["-n", pod, "link"])).contains("eth0"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/data/pod1"))
        let after = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/ipam/twill-test")) ?? []
        #expect(!after.contains { $0.hasPrefix("198.18.7.") })
        // DEL again is fine (CNI requires it).
        try run("/usr/sbin/ip", ["netns", "exec", host, t, "cni"], environment: del, input: conf)
    }
}

@Suite(.requiresEtcd) struct SystemdNotifierTests {
    @Test func readyIsSentOnceSubnetEnvIsWritten() async throws {
        try await withEtcd { etcd in
            let dir = try makeTempDir(prefix: "twill-test-notify-")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try await etcd.client().put("/coreos.com/network/config", #"{"Network":"198.18.0.0/16","Backend":{"Type":"alloc"}}"#)
            let socketPath = dir + "/notify.sock"
            let fd = try bindDatagramSocket(socketPath)
            defer { close(fd) }
            var env = ProcessInfo.processInfo.environment
            env["NOTIFY_SOCKET"] = socketPath
            env["WATCHDOG_USEC"] = "400000"
            let agent = try ChildProcess(
                try twillBinary(),
                [
                    "agent", "--etcd-endpoints", etcd.endpoint, "--iface", "lo", "--public-ip", "198.51.100.60",
                    "--subnet-file", dir + "/subnet.env",
                ], environment: env, logPath: dir + "/agent.log")
            defer { agent.stop() }
            var messages: [String] = []
            let deadline = ContinuousClock.now + .seconds(15)
            while ContinuousClock.now < deadline,
                !(messages.contains { $0.hasPrefix("READY=1") } && messages.filter { $0 == "WATCHDOG=1" }.count >= 2)
            {
                if let m = receive(fd) { messages.append(m) } else { try await Task.sleep(for: .milliseconds(50)) }
            }
            let ready = messages.firstIndex { $0.hasPrefix("READY=1") }
            #expect(ready != nil, "got \(messages); log: \(agent.log)")
            #expect(FileManager.default.fileExists(atPath: dir + "/subnet.env"))
            #expect(messages.filter { $0 == "WATCHDOG=1" }.count >= 2)
            #expect(agent.stop() == 0)
            while let m = receive(fd) { messages.append(m) }
            #expect(messages.last == "STOPPING=1")
        }
    }

    func bindDatagramSocket(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let ok = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        guard ok else { throw HarnessError("bind \(path): \(String(cString: strerror(errno)))") }
        return fd
    }

    func receive(_ fd: Int32) -> String? {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n], as: UTF8.self)
    }
}
