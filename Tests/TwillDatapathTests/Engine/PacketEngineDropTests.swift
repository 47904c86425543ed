import Foundation
import Testing
import TwillAddress
import TwillSystem

@testable import TwillDatapath

/// One node in a namespace, fed crafted datagrams from local addresses standing in for a
/// peer and a stranger: every drop reason the kernel lets us provoke, each counted once.
@Suite("PacketEngine drops", .serialized, .requiresRoot)
struct PacketEngineDropTests {
    @Test("every drop reason is counted, valid traffic passes both ways", .timeLimit(.minutes(1)), arguments: [false, true])
    func everyDropReason(offloads: Bool) throws {
        let namespaces = TestNamespaces()
        defer { namespaces.cleanup() }
        let ns = try namespaces.add("n")
        try ip("-n", ns, "link", "add", "und0", "type", "bridge")
        for last in [1, 2, 3] { try ip("-n", ns, "addr", "add", "198.51.100.\(last)/24", "dev", "und0") }
        try ip("-n", ns, "link", "set", "und0", "up")

        let node = try TestNode.make(
            namespace: ns, underlay: IPv4Address(198, 51, 100, 1),
            subnet: IPv4Network("198.18.1.0/24")!, offloads: offloads
        ) { $0.maxPacketSize = 2048 }
        defer { node.engine.stop() }
        let peer = PeerLease(
            subnet: IPv4Network("198.18.2.0/24")!, publicIP: IPv4Address(198, 51, 100, 2), backendType: nil, backendData: nil)
        // A peer whose underlay address has no route here: sends to it fail.
        let unreachable = PeerLease(
            subnet: IPv4Network("198.18.3.0/24")!, publicIP: IPv4Address(203, 0, 113, 9), backendType: nil, backendData: nil)
        node.engine.update(peers: [peer, unreachable])

        let fromPeer = try senderSocket(in: ns, address: peer.publicIP)
        let fromStranger = try senderSocket(in: ns, address: IPv4Address(198, 51, 100, 3))
        let engine = node.engine
        func expectDrop(_ reason: DropReason, _ action: () throws -> Void) throws {
            let before = engine.counters()
            try action()
            let counted = eventually { engine.counters()[drop: reason] == before[drop: reason] + 1 }
            #expect(counted, "\(reason): \(engine.counters()[drop: reason] - before[drop: reason]) counted")
        }
        let peerHost = IPv4Address(198, 18, 2, 5)
        let udp = Packets.udp(data: Array("hello".utf8))

        // Valid: written to the TUN and counted for the peer.
        try fromPeer.send(Packets.ipv4(source: peerHost, destination: node.host, payload: udp), to: node.underlay)
        #expect(eventually { engine.counters().peer(peer.subnet)?.rxPackets == 1 })
        #expect(engine.counters().rxPackets == 1)

        try expectDrop(.malformed) { try fromPeer.send([0x45, 0, 0, 99] + Array(repeating: 1, count: 40), to: node.underlay) }
        try expectDrop(.malformed) { // a bad header checksum from the network
            var packet = Packets.ipv4(source: peerHost, destination: node.host, payload: udp)
            packet[11] ^= 0xFF
            try fromPeer.send(packet, to: node.underlay)
        }
        try expectDrop(.unknownSender) {
            try fromStranger.send(Packets.ipv4(source: peerHost, destination: node.host, payload: udp), to: node.underlay)
        }
        try expectDrop(.spoofedInnerSource) {
            try fromPeer.send(Packets.ipv4(source: IPv4Address(198, 18, 3, 5), destination: node.host, payload: udp), to: node.underlay)
        }
        try expectDrop(.wrongInnerDestination) {
            try fromPeer.send(Packets.ipv4(source: peerHost, destination: IPv4Address(198, 18, 2, 9), payload: udp), to: node.underlay)
        }
        try expectDrop(.ttlExpired) {
            try fromPeer.send(Packets.ipv4(source: peerHost, destination: node.host, ttl: 1, payload: udp), to: node.underlay)
        }
        try expectDrop(.oversize) {
            try fromPeer.send(
                Packets.ipv4(source: peerHost, destination: node.host, payload: Array(repeating: 0, count: 3000)), to: node.underlay)
        }

        // TUN side: no route answers ICMP net unreachable.
        let icmpBefore = engine.counters().icmpUnreachableSent
        try expectDrop(.noRoute) {
            // From the bridge's address, as a container would: a reply to the TUN's own
            // address would come back with a local source and be dropped as a martian.
            let ping = inNamespace(ns, "ping", "-c", "1", "-W", "1", "-I", "198.18.1.1", "198.18.9.9")
            #expect(ping.output.contains("Destination Net Unreachable"), "\(ping.output)")
        }
        #expect(engine.counters().icmpUnreachableSent == icmpBefore + 1)
        // A UDP probe is answered too (as flannel would).
        try expectDrop(.noRoute) {
            let probe = try senderSocket(in: ns, address: node.host)
            try probe.send([1, 2, 3], to: IPv4Address(198, 18, 9, 9), port: 9)
        }
        #expect(eventually { engine.counters().icmpUnreachableSent == icmpBefore + 2 })
        try expectDrop(.ttlExpired) { _ = inNamespace(ns, "ping", "-c", "1", "-W", "1", "-t", "1", "198.18.2.1") }
        try expectDrop(.sendFailed) { _ = inNamespace(ns, "ping", "-c", "1", "-W", "1", "198.18.3.1") }
        let txBefore = engine.counters().peer(peer.subnet)?.txPackets ?? 0
        _ = inNamespace(ns, "ping", "-c", "1", "-W", "1", "198.18.2.1")
        #expect(eventually { (engine.counters().peer(peer.subnet)?.txPackets ?? 0) == txBefore + 1 })

        // IPv6 read from the TUN is not carried.
        _ = inNamespace(ns, "sysctl", "-qw", "net.ipv6.conf.twill0.disable_ipv6=0")
        if (try? ip("-n", ns, "-6", "addr", "add", "2001:db8::1/64", "dev", "twill0", "nodad")) != nil {
            let before = engine.counters()[drop: .wrongFamily]
            _ = inNamespace(ns, "ping", "-6", "-c", "1", "-W", "1", "2001:db8::2")
            #expect(eventually { engine.counters()[drop: .wrongFamily] > before })
        }

        // A TUN that is down refuses writes.
        try ip("-n", ns, "link", "set", "twill0", "down")
        try expectDrop(.tunWriteFailed) {
            try fromPeer.send(Packets.ipv4(source: peerHost, destination: node.host, payload: udp), to: node.underlay)
        }
        // Hostile input and a downed TUN cost packets, never a packet thread.
        #expect(engine.counters().failedThreads == 0)
    }

    @Test("source checks off: strangers and foreign inner sources pass, as in flannel", .timeLimit(.minutes(1)))
    func sourceChecksOff() throws {
        let namespaces = TestNamespaces()
        defer { namespaces.cleanup() }
        let ns = try namespaces.add("n")
        try ip("-n", ns, "link", "add", "und0", "type", "bridge")
        for last in [1, 3] { try ip("-n", ns, "addr", "add", "198.51.100.\(last)/24", "dev", "und0") }
        try ip("-n", ns, "link", "set", "und0", "up")
        let node = try TestNode.make(
            namespace: ns, underlay: IPv4Address(198, 51, 100, 1),
            subnet: IPv4Network("198.18.1.0/24")!
        ) { $0.checkSources = false }
        defer { node.engine.stop() }
        let stranger = try senderSocket(in: ns, address: IPv4Address(198, 51, 100, 3))
        try stranger.send(
            Packets.ipv4(source: IPv4Address(198, 18, 7, 7), destination: node.host, payload: Packets.udp(data: [1])), to: node.underlay)
        #expect(eventually { node.engine.counters().rxPackets == 1 })
        // The destination check stays on.
        try stranger.send(
            Packets.ipv4(source: IPv4Address(198, 18, 7, 7), destination: IPv4Address(198, 18, 2, 1), payload: Packets.udp(data: [1])),
            to: node.underlay)
        #expect(eventually { node.engine.counters()[drop: .wrongInnerDestination] == 1 })
        // (The kernel's ICMP port unreachable for the first datagram finds no peer: noRoute.)
        let counters = node.engine.counters()
        #expect(counters.totalDrops - counters[drop: .noRoute] == 1)
    }

    @Test("peer snapshots swap under traffic without loss of counters or crashes", .timeLimit(.minutes(1)))
    func swapsUnderTraffic() throws {
        let namespaces = TestNamespaces()
        defer { namespaces.cleanup() }
        let ns = try namespaces.add("n")
        try ip("-n", ns, "link", "add", "und0", "type", "bridge")
        for last in [1, 2] { try ip("-n", ns, "addr", "add", "198.51.100.\(last)/24", "dev", "und0") }
        try ip("-n", ns, "link", "set", "und0", "up")
        let node = try TestNode.make(namespace: ns, underlay: IPv4Address(198, 51, 100, 1), subnet: IPv4Network("198.18.1.0/24")!)
        defer { node.engine.stop() }
        let peer = PeerLease(
            subnet: IPv4Network("198.18.2.0/24")!, publicIP: IPv4Address(198, 51, 100, 2), backendType: nil, backendData: nil)
        let others = (3..<40).map {
            PeerLease(
                subnet: IPv4Network("198.18.\($0).0/24")!, publicIP: IPv4Address(198, 51, 100, UInt8($0)), backendType: nil,
                backendData: nil)
        }
        node.engine.update(peers: [peer])
        let sender = try senderSocket(in: ns, address: peer.publicIP)
        let packet = Packets.ipv4(
            source: IPv4Address(198, 18, 2, 5), destination: IPv4Address(198, 18, 1, 200), payload: Packets.udp(data: [7]))
        let total = 20_000
        let engine = node.engine
        let flood = Thread {
            for i in 0..<total {
                try? sender.send(packet, to: node.underlay)
                if i % 500 == 499 { // stay within the receive buffer: let the engine catch up
                    _ = eventually { engine.counters().rxPackets + 1000 >= UInt64(i + 1) }
                }
            }
        }
        flood.start()
        // The peer stays in every snapshot; the rest churn, for as long as the flood lasts.
        var rounds = 0
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            node.engine.update(peers: [peer] + others.prefix(rounds % others.count))
            rounds += 1
            if rounds % 100 == 0 {
                let c = node.engine.counters()
                if c.rxPackets + c.totalDrops - c[drop: .noRoute] >= UInt64(total) { break }
            }
        }
        #expect(rounds > 100, "\(rounds) swaps")
        let c = node.engine.counters()
        #expect(c.rxPackets == UInt64(total), "drops: \(c.drops.filter { $0.value > 0 })")
        #expect(c.peer(peer.subnet)?.rxPackets == UInt64(total), "the peer's counters survive every swap")
    }

    @Test("stop ends the threads promptly and removes the TUN", .timeLimit(.minutes(1)))
    func stopIsPrompt() throws {
        let namespaces = TestNamespaces()
        defer { namespaces.cleanup() }
        let ns = try namespaces.add("n")
        try ip("-n", ns, "link", "add", "und0", "type", "bridge")
        try ip("-n", ns, "addr", "add", "198.51.100.1/24", "dev", "und0")
        let node = try TestNode.make(namespace: ns, underlay: IPv4Address(198, 51, 100, 1), subnet: IPv4Network("198.18.1.0/24")!)
        for round in 0..<50 { // swaps while the threads run
            node.engine.update(peers: [
                PeerLease(
                    subnet: IPv4Network("198.18.\(2 + round % 5).0/24")!, publicIP: IPv4Address(198, 51, 100, 2), backendType: nil,
                    backendData: nil)
            ])
        }
        let started = Date()
        node.engine.stop()
        #expect(Date().timeIntervalSince(started) < 0.5)
        #expect(node.engine.counters().peers.count == 1)
        #expect(!(try ip("-n", ns, "link", "show")).contains("twill0"))
        node.engine.stop() // idempotent
        #expect(throws: SystemError.self) { try node.engine.start() }
    }
}
