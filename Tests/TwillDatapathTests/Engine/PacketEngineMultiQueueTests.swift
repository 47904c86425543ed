import Foundation
import Testing
import TwillAddress
import TwillSystem
import TwillTestSupport

@testable import TwillDatapath

/// 500 MB TCP transfers through two in-process engines (namespaces over a veth pair): with
/// several queues and offloads, with offloads forced off, between a node with offloads and
/// several queues and a plain single-queue one, and with tiny batches at a small MTU (many
/// messages per super-packet) and a thread per direction.
@Suite("PacketEngine queues and offloads, 500 MB", .serialized, .requiresRoot)
struct PacketEngineMultiQueueTests {
    struct Side: CustomStringConvertible, Sendable {
        var offloads: Bool
        var queues: Int
        var threadsPerQueue = 1
        /// Messages per send/receive batch: 2 forces the gathered send path to flush in the
        /// middle of a super-packet (its frame still being split) and to reuse frames.
        var batchSize = 64
        var mtu = 1472
        var description: String {
            "offloads \(offloads ? "on" : "off"), \(queues) queue\(queues == 1 ? "" : "s")"
                + (threadsPerQueue > 1 ? ", \(threadsPerQueue) threads per queue" : "")
                + (batchSize != 64 ? ", batch \(batchSize)" : "") + (mtu != 1472 ? ", MTU \(mtu)" : "")
        }
    }

    @Test(
        "500 MB TCP arrives byte-identical", .timeLimit(.minutes(2)),
        arguments: [
            (Side(offloads: true, queues: 2), Side(offloads: true, queues: 2)),
            (Side(offloads: false, queues: 2), Side(offloads: false, queues: 2)),
            (Side(offloads: true, queues: 2), Side(offloads: false, queues: 1)),
            (
                Side(offloads: true, queues: 1, threadsPerQueue: 2, batchSize: 2, mtu: 576),
                Side(offloads: true, queues: 1, batchSize: 2, mtu: 576)
            ),
        ])
    func transfer(a sideA: Side, b sideB: Side) throws {
        let namespaces = TestNamespaces()
        defer { namespaces.cleanup() }
        let nsA = try namespaces.add("a")
        let nsB = try namespaces.add("b")
        try ip("-n", nsA, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", nsB)
        try ip("-n", nsA, "addr", "add", "198.51.100.1/24", "dev", "eth0")
        try ip("-n", nsB, "addr", "add", "198.51.100.2/24", "dev", "eth0")
        try ip("-n", nsA, "link", "set", "eth0", "up")
        try ip("-n", nsB, "link", "set", "eth0", "up")

        let a = try TestNode.make(
            namespace: nsA, underlay: IPv4Address(198, 51, 100, 1), subnet: IPv4Network("198.18.1.0/24")!,
            offloads: sideA.offloads, udpOffloads: sideA.offloads, queues: sideA.queues, mtu: sideA.mtu
        ) {
            $0.threadsPerQueue = sideA.threadsPerQueue
            $0.batchSize = sideA.batchSize
        }
        defer { a.engine.stop() }
        let b = try TestNode.make(
            namespace: nsB, underlay: IPv4Address(198, 51, 100, 2), subnet: IPv4Network("198.18.2.0/24")!,
            offloads: sideB.offloads, udpOffloads: sideB.offloads, queues: sideB.queues, mtu: sideB.mtu
        ) {
            $0.threadsPerQueue = sideB.threadsPerQueue
            $0.batchSize = sideB.batchSize
        }
        defer { b.engine.stop() }
        #expect(a.engine.queueCount == sideA.queues)
        #expect(b.engine.queueCount == sideB.queues)
        #expect(a.engine.sourcePorts.count == FlowHash.sourcePortCount(queues: sideA.queues))
        if sideB.queues == 1 { #expect(b.engine.sourcePorts == [UDPSocket.defaultPort]) }
        // The peers reach every queue's threads: both directions work at once.
        a.engine.update(peers: [b.lease])
        b.engine.update(peers: [a.lease])
        let ping = inNamespace(nsA, "ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", "\(a.host)", "\(b.host)")
        #expect(ping.status == 0, "\(ping.output)")

        let size = 500 * 1024 * 1024
        let transfer = try TCPTransfer.run(from: a, to: b, size: size)
        #expect(transfer.sourceStatus == 0, "\(transfer.sourceOutput)")
        #expect(transfer.sentLine.hasPrefix("\(size) "), "\(transfer.sourceOutput)")
        #expect(transfer.receivedLine == transfer.sentLine, "received \(transfer.sinkOutput) sent \(transfer.sourceOutput)")
        print(
            "500 MB TCP, A \(sideA), B \(sideB): \(String(format: "%.2f", transfer.seconds)) s (\(String(format: "%.0f", transfer.megabitsPerSecond)) Mbit/s incl. python)"
        )

        // Counters add up over the queues: every byte A sent to B was counted once.
        let ca = a.engine.counters()
        let cb = b.engine.counters()
        #expect(ca.peer(b.subnet)!.txBytes >= UInt64(size))
        #expect(cb.peer(a.subnet)!.rxBytes >= UInt64(size))
        #expect(ca.txBytes == ca.peer(b.subnet)!.txBytes)
        #expect(cb.rxBytes == cb.peer(a.subnet)!.rxBytes)
        #expect(ca[drop: .sendFailed] == 0)
    }

    @Test("stop() joins every queue's threads and removes the device; a refused multi-queue TUN falls back to one queue")
    func stopAndFallback() throws {
        let namespaces = TestNamespaces()
        defer { namespaces.cleanup() }
        let ns = try namespaces.add("q")
        try ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        try ip("-n", ns, "addr", "add", "198.51.100.1/24", "dev", "eth0")
        try ip("-n", ns, "link", "set", "eth0", "up")
        let engine = try NetworkNamespace.run(inNamespace: NetworkNamespace.path(named: ns)) {
            try PacketEngine.open(
                tunName: "twill0", tunOffloads: true, address: IPv4Address(198, 51, 100, 1),
                configuration: EngineConfiguration(localSubnet: IPv4Network("198.18.1.0/24")!, queues: 3))
        }
        #expect(engine.queueCount == 3)
        #expect(Set(engine.sourcePorts).count == FlowHash.sourcePortCount(queues: 3))
        let queues = inNamespace(ns, "ls", "/sys/class/net/twill0/queues")
        #expect(queues.output.split(separator: "\n").filter { $0.hasPrefix("tx-") }.count == 3, "\(queues.output)")
        try engine.start()
        engine.update(peers: [
            PeerLease(subnet: IPv4Network("198.18.2.0/24")!, publicIP: IPv4Address(198, 51, 100, 2), backendType: nil, backendData: nil)
        ])
        engine.stop()
        #expect(inNamespace(ns, "ip", "link", "show", "twill0").status != 0)
        // The same port and name are free again: a second engine opens at once.
        let again = try NetworkNamespace.run(inNamespace: NetworkNamespace.path(named: ns)) {
            try PacketEngine.open(
                tunName: "twill0", tunOffloads: false, address: IPv4Address(198, 51, 100, 1),
                configuration: EngineConfiguration(localSubnet: IPv4Network("198.18.1.0/24")!, queues: 1))
        }
        #expect(again.queueCount == 1)
        #expect(again.sourcePorts == [UDPSocket.defaultPort])
        again.stop()

        // A persistent single-queue device of that name: the kernel refuses IFF_MULTI_QUEUE
        // on it (EINVAL), and the engine runs with one queue instead of failing.
        try ip("-n", ns, "tuntap", "add", "dev", "twill0", "mode", "tun")
        let single = try NetworkNamespace.run(inNamespace: NetworkNamespace.path(named: ns)) {
            try PacketEngine.open(
                tunName: "twill0", tunOffloads: true, address: IPv4Address(198, 51, 100, 1),
                configuration: EngineConfiguration(localSubnet: IPv4Network("198.18.1.0/24")!, queues: 2))
        }
        #expect(single.queueCount == 1)
        #expect(single.sourcePorts == [UDPSocket.defaultPort])
        try single.start()
        single.stop()
    }
}
