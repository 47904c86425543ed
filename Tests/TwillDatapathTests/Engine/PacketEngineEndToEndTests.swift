import Foundation
import Testing
import TwillAddress
import TwillTestSupport

@testable import TwillDatapath

/// Two hosts (namespaces over a veth pair on 198.51.100.0/24), each with a TUN, a bridge
/// holding an address of its subnet, and an engine in this process with the other as peer.
@Suite("PacketEngine end to end", .serialized, .requiresRoot)
struct PacketEngineEndToEndTests {
    @Test(
        "ping, a 50 MB TCP transfer, hostile datagrams dropped by reason, lease removal -> net unreachable",
        .timeLimit(.minutes(2)), arguments: [(false, false), (false, true), (true, false), (true, true)])
    func twoHosts(offloads: Bool, udpOffloads: Bool) throws {
        let namespaces = TestNamespaces()
        defer { namespaces.cleanup() }
        let nsA = try namespaces.add("a")
        let nsB = try namespaces.add("b")
        try ip("-n", nsA, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", nsB)
        try ip("-n", nsA, "addr", "add", "198.51.100.1/24", "dev", "eth0")
        try ip("-n", nsB, "addr", "add", "198.51.100.2/24", "dev", "eth0")
        try ip("-n", nsB, "addr", "add", "198.51.100.99/24", "dev", "eth0") // a stranger's address
        try ip("-n", nsA, "link", "set", "eth0", "up")
        try ip("-n", nsB, "link", "set", "eth0", "up")

        let a = try TestNode.make(
            namespace: nsA, underlay: IPv4Address(198, 51, 100, 1), subnet: IPv4Network("198.18.1.0/24")!, offloads: offloads,
            udpOffloads: udpOffloads)
        defer { a.engine.stop() }
        let b = try TestNode.make(
            namespace: nsB, underlay: IPv4Address(198, 51, 100, 2), subnet: IPv4Network("198.18.2.0/24")!, offloads: offloads,
            udpOffloads: udpOffloads)
        defer { b.engine.stop() }
        a.engine.update(peers: [b.lease])
        b.engine.update(peers: [a.lease])

        func ping(from node: TestNode, to target: IPv4Address, count: Int = 3) -> (ok: Bool, output: String) {
            let r = inNamespace(node.namespace, "ping", "-c", "\(count)", "-i", "0.2", "-W", "2", "-I", "\(node.host)", "\(target)")
            return (r.status == 0, r.output)
        }

        // Ping across, both ways, and from the TUN's own address too.
        var started = Date()
        let ab = ping(from: a, to: b.host)
        #expect(ab.ok, "\(ab.output)")
        let ba = ping(from: b, to: a.host)
        #expect(ba.ok, "\(ba.output)")
        let plain = inNamespace(nsA, "ping", "-c", "1", "-W", "2", "\(b.host)")
        #expect(plain.status == 0, "\(plain.output)")
        #expect(a.engine.counters().peer(b.subnet)!.txPackets >= 4)
        #expect(b.engine.counters().peer(a.subnet)!.rxPackets >= 4)
        print("ping: \(String(format: "%.2f", Date().timeIntervalSince(started))) s")

        // 50 MB over TCP, byte-identical.
        let size = 50 * 1024 * 1024
        let transfer = try TCPTransfer.run(from: a, to: b, size: size)
        #expect(transfer.sourceStatus == 0, "\(transfer.sourceOutput)")
        #expect(transfer.sentLine.hasPrefix("\(size) "), "\(transfer.sourceOutput)")
        #expect(transfer.receivedLine == transfer.sentLine, "received \(transfer.sinkOutput) sent \(transfer.sourceOutput)")
        print(
            "50 MB TCP (TUN offloads \(offloads), UDP offloads \(udpOffloads)): \(String(format: "%.2f", transfer.seconds)) s (\(String(format: "%.0f", transfer.megabitsPerSecond)) Mbit/s incl. python)"
        )
        #expect(a.engine.counters()[drop: .sendFailed] == 0)

        // Hostile datagrams to A's port, from B's namespace.
        started = Date()
        let stranger = try senderSocket(in: nsB, address: IPv4Address(198, 51, 100, 99))
        let fromPeer = try senderSocket(in: nsB, address: b.underlay)
        let before = a.engine.counters()
        let udp = Packets.udp(data: Array("intruder".utf8))
        try stranger.send(Packets.ipv4(source: b.host, destination: a.host, payload: udp), to: a.underlay)
        #expect(eventually { a.engine.counters()[drop: .unknownSender] == before[drop: .unknownSender] + 1 })
        try fromPeer.send(Packets.ipv4(source: IPv4Address(198, 18, 7, 7), destination: a.host, payload: udp), to: a.underlay)
        #expect(eventually { a.engine.counters()[drop: .spoofedInnerSource] == before[drop: .spoofedInnerSource] + 1 })

        var rng = SplitMix64(seed: 10_000)
        let junkBefore = a.engine.counters()
        for i in 0..<10_000 {
            let junk = [UInt8].random(count: Int.random(in: 1...1400, using: &rng), using: &rng)
            try fromPeer.send(junk, to: a.underlay)
            if i % 500 == 499 {
                // Stay within the receive buffer even on a busy machine: let the engine catch up.
                _ = eventually { a.engine.counters().totalDrops - junkBefore.totalDrops + 500 >= UInt64(i + 1) }
            }
        }
        #expect(eventually { a.engine.counters().totalDrops - junkBefore.totalDrops >= 10_000 })
        let junkAfter = a.engine.counters()
        #expect(junkAfter.totalDrops - junkBefore.totalDrops == 10_000)
        // Junk whose first nibble is 6 looks like IPv6, which this IPv4-only engine does not carry.
        #expect(
            junkAfter[drop: .malformed] - junkBefore[drop: .malformed] + junkAfter[drop: .wrongFamily] - junkBefore[drop: .wrongFamily]
                >= 9_990)
        #expect(junkAfter.rxPackets == junkBefore.rxPackets)
        print(
            "hostile datagrams: \(String(format: "%.2f", Date().timeIntervalSince(started))) s; drops \(junkAfter.drops.filter { $0.value > 0 })"
        )

        let again = ping(from: a, to: b.host)
        #expect(again.ok, "\(again.output)")

        // B's lease goes away: A answers ICMP net unreachable from its TUN address.
        a.engine.update(peers: [])
        let unreachable = ping(from: a, to: b.host, count: 1)
        #expect(!unreachable.ok)
        #expect(unreachable.output.contains("Destination Net Unreachable"), "\(unreachable.output)")
        #expect(unreachable.output.contains("From \(a.subnet.address)"), "\(unreachable.output)")
        #expect(a.engine.counters().icmpUnreachableSent >= 1)
        #expect(a.engine.counters().peers.isEmpty)
    }
}
