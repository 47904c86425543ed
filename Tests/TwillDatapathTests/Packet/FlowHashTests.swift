import Testing
import TwillAddress

@testable import TwillDatapath

/// The per-flow choice of the outer source port: deterministic, symmetric, fragments kept together.
@Suite("FlowHash")
struct FlowHashTests {
    static let a = IPv4Address(198, 18, 1, 5)
    static let b = IPv4Address(198, 18, 2, 9)

    static func hash(_ packet: [UInt8]) -> UInt32 { packet.withUnsafeBytes { FlowHash.symmetric($0) } }
    static func index(_ packet: [UInt8], _ count: Int) -> Int { packet.withUnsafeBytes { FlowHash.index(of: $0, count: count) } }

    @Test("a flow and its reverse share a hash; the hash does not depend on payload, TTL or ID")
    func symmetricAndStable() {
        let forward = tcpPacket(
            payload: Array(repeating: 1, count: 100), sourcePort: 40000, destinationPort: 5201,
            source: Self.a, destination: Self.b)
        let reverse = tcpPacket(payload: [], sourcePort: 5201, destinationPort: 40000, source: Self.b, destination: Self.a)
        #expect(Self.hash(forward) == Self.hash(reverse))
        let other = tcpPacket(
            payload: Array(repeating: 7, count: 1400), seq: 99, sourcePort: 40000, destinationPort: 5201,
            source: Self.a, destination: Self.b)
        #expect(Self.hash(other) == Self.hash(forward))
        // Another port, another protocol or other addresses: (almost surely) another hash.
        #expect(
            Self.hash(tcpPacket(payload: [], sourcePort: 40001, destinationPort: 5201, source: Self.a, destination: Self.b))
                != Self.hash(forward))
        let udp = Packets.ipv4(
            source: Self.a, destination: Self.b, payload: Packets.udp(sourcePort: 40000, destinationPort: 5201, data: [1]))
        #expect(Self.hash(udp) != Self.hash(forward))
        let udpReverse = Packets.ipv4(
            source: Self.b, destination: Self.a, payload: Packets.udp(sourcePort: 5201, destinationPort: 40000, data: [2, 3]))
        #expect(Self.hash(udp) == Self.hash(udpReverse))
    }

    @Test("fragments of one datagram hash alike (addresses and protocol only); ICMP by addresses")
    func fragmentsTogether() {
        let first = Packets.ipv4(
            source: Self.a, destination: Self.b, payload: Packets.udp(data: Array(repeating: 1, count: 64)),
            identification: 7, moreFragments: true)
        let second = Packets.ipv4(
            source: Self.a, destination: Self.b, payload: Array(repeating: 2, count: 64),
            fragmentOffset: 9, identification: 7)
        #expect(Self.hash(first) == Self.hash(second))
        let ping = Packets.ipv4(source: Self.a, destination: Self.b, protocolNumber: 1, payload: [8, 0, 0, 0, 0, 1, 0, 1])
        let pong = Packets.ipv4(source: Self.b, destination: Self.a, protocolNumber: 1, payload: [0, 0, 0, 0, 0, 1, 0, 1])
        #expect(Self.hash(ping) == Self.hash(pong))
        // Too short for a header: 0, no crash; a TCP header cut after the IP header: no ports.
        #expect([UInt8](repeating: 0x45, count: 10).withUnsafeBytes { FlowHash.symmetric($0) } == 0)
        let cut = Array(Packets.ipv4(source: Self.a, destination: Self.b, protocolNumber: 6, payload: []))
        _ = Self.hash(cut)
    }

    @Test("the index stays in range and spreads flows over the sockets")
    func spread() {
        #expect(FlowHash.sourcePortCount(queues: 1) == 1)
        #expect(FlowHash.sourcePortCount(queues: 2) == 16)
        #expect(FlowHash.sourcePortCount(queues: 64) == 64)
        var hits = [Int](repeating: 0, count: 16)
        for port in UInt16(30000)..<UInt16(34000) {
            let packet = tcpPacket(payload: [], sourcePort: port, destinationPort: 5201, source: Self.a, destination: Self.b)
            #expect(Self.index(packet, 1) == 0)
            let i = Self.index(packet, 16)
            #expect((0..<16).contains(i))
            hits[i] += 1
        }
        // 4000 flows over 16 sockets: 250 each on average; none far off.
        #expect(hits.allSatisfy { (170...330).contains($0) }, "\(hits)")
        // Deterministic: same input, same answer, every time (and on every node).
        let packet = tcpPacket(payload: [], sourcePort: 12345, destinationPort: 80, source: Self.a, destination: Self.b)
        #expect(Self.index(packet, 16) == Self.index(packet, 16))
        #expect(
            Self.hash(packet)
                == Self.hash(tcpPacket(payload: [9], sourcePort: 80, destinationPort: 12345, source: Self.b, destination: Self.a)))
    }
}
