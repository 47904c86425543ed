import Foundation
import TwillAddress
import TwillDatapath
import TwillSystem
import TwillTestSupport

/// `ip` with arguments; throws with the output on failure.
@discardableResult
func ip(_ arguments: String...) throws -> String { try run("/usr/sbin/ip", arguments) }

/// Runs a command and returns its exit status and combined output, without throwing on failure.
func runStatus(_ path: String, _ arguments: [String]) -> (status: Int32, output: String) {
    do {
        let r = try runCapturing(path, arguments)
        return (r.status, r.stdout + r.stderr)
    } catch {
        return (-1, "\(error)")
    }
}

/// Runs a command inside a namespace (`ip netns exec`), without throwing on failure.
func inNamespace(_ ns: String, _ command: String...) -> (status: Int32, output: String) {
    runStatus("/usr/sbin/ip", ["netns", "exec", ns] + command)
}

/// Polls `condition` every 20 ms for at most `seconds`; returns whether it became true.
func eventually(within seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// Throwaway network namespaces named `twu-<random>-<suffix>`, deleted by `cleanup()`
/// (call it in a defer right after creating the set, so a failing test removes them too).
final class TestNamespaces: @unchecked Sendable { // used from one test at a time
    let prefix = "twu-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))-"
    private(set) var names: [String] = []

    /// Creates a namespace with its loopback up.
    func add(_ suffix: String) throws -> String {
        let name = prefix + suffix
        try ip("netns", "add", name)
        names.append(name)
        try ip("-n", name, "link", "set", "lo", "up")
        return name
    }

    func cleanup() {
        for name in names.reversed() { _ = runStatus("/usr/sbin/ip", ["netns", "del", name]) }
        names = []
    }
}

/// One overlay node: a namespace with an underlay address, a TUN `twill0` (198.18.x.0/32,
/// MTU 1472 unless asked otherwise, route for 198.18.0.0/16), a bridge `twd0` (as docker0; this kernel has no dummy
/// driver) holding the subnet's first host
/// address, and a running engine.
struct TestNode {
    let namespace: String
    let underlay: IPv4Address
    let subnet: IPv4Network
    let engine: PacketEngine
    /// The first host address of the subnet, on twd0 (as docker0 would hold it).
    var host: IPv4Address { subnet.host(1)! }
    var lease: PeerLease { PeerLease(subnet: subnet, publicIP: underlay, backendType: nil, backendData: nil) }

    /// Opens the TUN and socket inside `namespace`, configures them with `ip`, starts an engine.
    static func make(
        namespace: String, underlay: IPv4Address, subnet: IPv4Network, offloads: Bool = false,
        udpOffloads: Bool = true, queues: Int = 1, mtu: Int = 1472,
        configure: (inout EngineConfiguration) -> Void = { _ in }
    ) throws -> TestNode {
        var configuration = EngineConfiguration(localSubnet: subnet, udpOffloads: udpOffloads, queues: queues)
        configure(&configuration)
        let engine = try NetworkNamespace.run(inNamespace: NetworkNamespace.path(named: namespace)) { [configuration] in
            let engine = try PacketEngine.open(tunName: "twill0", tunOffloads: offloads, address: underlay, configuration: configuration)
            try engine.setTransmitQueueLength(5000)
            return engine
        }
        if offloads && !engine.hasTUNOffloads {
            engine.stop()
            throw SystemError("TUN offloads refused", errno: 0)
        }
        // No IPv6 on the TUN: the kernel's router solicitations and MLD reports would show up
        // as wrongFamily drops and blur exact counts.
        _ = inNamespace(namespace, "sysctl", "-qw", "net.ipv6.conf.twill0.disable_ipv6=1")
        // The engine's ICMP net unreachable comes from the TUN's own address (as flannel's):
        // without accept_local the kernel drops it as a martian source.
        _ = inNamespace(namespace, "sysctl", "-qw", "net.ipv4.conf.twill0.accept_local=1")
        try ip("-n", namespace, "addr", "add", "\(subnet.address)/32", "dev", "twill0")
        try ip("-n", namespace, "link", "set", "twill0", "mtu", "\(mtu)", "up")
        try ip("-n", namespace, "route", "add", "198.18.0.0/16", "dev", "twill0")
        try ip("-n", namespace, "link", "add", "twd0", "type", "bridge")
        try ip("-n", namespace, "addr", "add", "\(subnet.host(1)!)/\(subnet.prefixLength)", "dev", "twd0")
        try ip("-n", namespace, "link", "set", "twd0", "up")
        try engine.start()
        return TestNode(namespace: namespace, underlay: underlay, subnet: subnet, engine: engine)
    }
}

/// A UDP socket opened inside a namespace, for sending crafted datagrams to an engine.
func senderSocket(in namespace: String, address: IPv4Address) throws -> UDPSocket {
    try NetworkNamespace.run(inNamespace: NetworkNamespace.path(named: namespace)) { try UDPSocket(address: address, port: 0) }
}

extension UDPSocket {
    /// Sends `bytes` to `address`:8285, retrying briefly while the buffer is full.
    func send(_ bytes: [UInt8], to address: IPv4Address, port: UInt16 = UDPSocket.defaultPort) throws {
        for _ in 0..<100 {
            if try bytes.withUnsafeBytes({ try send($0, to: address, port: port) }) { return }
            usleep(1000)
        }
        throw SystemError("send stalled", errno: EAGAIN)
    }
}

/// One TCP transfer through the overlay (``TCPTransferScripts``): a sink on `to`'s subnet
/// address, `size` bytes sent from `from`'s.
struct TCPTransfer {
    /// The source's exit status and output, and the sink's output.
    var sourceStatus: Int32
    var sourceOutput: String
    var sinkOutput: String
    var seconds: Double
    /// The "<bytes> <sha256>" lines each side printed last.
    var sentLine: String { Self.lastLine(sourceOutput) }
    var receivedLine: String { Self.lastLine(sinkOutput) }
    /// Throughput including python's own overhead, for the log.
    var megabitsPerSecond: Double {
        seconds > 0 ? Double(sentLine.split(separator: " ").first.flatMap { Int($0) } ?? 0) * 8 / seconds / 1e6 : 0
    }

    static func lastLine(_ text: String) -> String {
        text.split(separator: "\n").last.map(String.init) ?? text
    }

    static func run(from: TestNode, to: TestNode, size: Int, port: Int = 5201) throws -> TCPTransfer {
        let started = Date()
        let sink = Process()
        sink.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        sink.arguments = ["netns", "exec", to.namespace, "/usr/bin/python3", "-c", TCPTransferScripts.sink, "\(to.host)", "\(port)"]
        let sinkOut = Pipe()
        sink.standardOutput = sinkOut
        sink.standardError = sinkOut
        try sink.run()
        defer {
            if sink.isRunning {
                sink.terminate()
                sink.waitUntilExit()
            }
        }
        let sent = inNamespace(
            from.namespace, "/usr/bin/python3", "-c", TCPTransferScripts.source,
            "\(from.host)", "\(to.host)", "\(port)", "\(size)")
        let received = String(decoding: sinkOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        sink.waitUntilExit()
        return TCPTransfer(
            sourceStatus: sent.status, sourceOutput: sent.output, sinkOutput: received,
            seconds: Date().timeIntervalSince(started))
    }
}
