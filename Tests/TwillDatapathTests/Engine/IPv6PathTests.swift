import Testing
import TwillAddress

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

func v6(_ text: String) -> IPv6Address { IPv6Address(text)! }

extension Packets {
    /// A valid IPv6 packet: the 40-byte fixed header, then `payload`.
    static func ipv6(
        source: IPv6Address, destination: IPv6Address, hopLimit: UInt8 = 64, nextHeader: UInt8 = 17,
        payload: [UInt8] = Array(repeating: 0xCD, count: 12)
    ) -> [UInt8] {
        var bytes: [UInt8] = [0x60, 0, 0, 0, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF), nextHeader, hopLimit]
        bytes += source.bytes + destination.bytes
        return bytes + payload
    }
}

/// The TCP checksum of an IPv6 packet (TCP right after the fixed header) computed from scratch.
func tcpChecksum6(_ packet: [UInt8]) -> UInt16 {
    var segment = Array(packet[40...])
    segment[16] = 0
    segment[17] = 0
    let n = segment.count
    let pseudo = Array(packet[8..<40]) + [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), 0, 0, 0, 6]
    return (pseudo + segment).withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
}

/// A TCP/IPv6 packet with timestamps, its checksum right.
func tcpPacket6(
    payload: [UInt8], seq: UInt32 = 1_000_000, flags: UInt8 = 0x10, source: IPv6Address, destination: IPv6Address,
    hopLimit: UInt8 = 64
) -> [UInt8] {
    let options: [UInt8] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
    var tcp: [UInt8] = [0x9C, 0x40, 0x14, 0x51]
    tcp += [UInt8(seq >> 24), UInt8(seq >> 16 & 0xFF), UInt8(seq >> 8 & 0xFF), UInt8(seq & 0xFF)]
    tcp += [0, 0, 0x30, 0x39, UInt8((20 + options.count) / 4) << 4, flags, 2, 0, 0, 0, 0, 0]
    tcp += options
    var p = Packets.ipv6(source: source, destination: destination, hopLimit: hopLimit, nextHeader: 6, payload: tcp + payload)
    let sum = tcpChecksum6(p)
    p[56] = UInt8(sum >> 8)
    p[57] = UInt8(sum & 0xFF)
    return p
}

@Suite("IPv6 in the udp engine: header, ICMPv6, routes, TSO6 and GRO")
struct IPv6PathTests {
    static let a6 = v6("2001:db8:100:1::5")
    static let b6 = v6("2001:db8:100:2::7")

    @Test func headerIsValidated() throws {
        let p = Packets.ipv6(source: Self.a6, destination: Self.b6, hopLimit: 3, nextHeader: 58)
        let h = try p.withUnsafeBytes { try IPv6Header(parsing: $0) }
        #expect(h.source == Self.a6 && h.destination == Self.b6 && h.hopLimit == 3 && h.nextHeader == 58 && h.payloadLength == 12)
        #expect(throws: IPv6Header.Rejection.tooShort) { try Array(p.prefix(39)).withUnsafeBytes { try IPv6Header(parsing: $0) } }
        #expect(throws: IPv6Header.Rejection.payloadLengthMismatch) { try (p + [0]).withUnsafeBytes { try IPv6Header(parsing: $0) } }
        var four = p
        four[0] = 0x45
        #expect(throws: IPv6Header.Rejection.notVersion6) { try four.withUnsafeBytes { try IPv6Header(parsing: $0) } }
        var q = p
        #expect(q.withUnsafeMutableBytes { IPv6Header.decrementHopLimit($0.baseAddress!) } && q[7] == 2)
        var last = Packets.ipv6(source: Self.a6, destination: Self.b6, hopLimit: 1)
        #expect(!last.withUnsafeMutableBytes { IPv6Header.decrementHopLimit($0.baseAddress!) } && last[7] == 1)
    }

    @Test("ICMPv6 no route: RFC 4443 layout and checksum, at most 1280 bytes, never about errors, multicast or later fragments")
    func icmpv6Unreachable() throws {
        let source = v6("2001:db8:100:1::")
        var out = [UInt8](repeating: 0, count: 1400)
        func answer(_ p: [UInt8], queries: Bool = true) -> [UInt8] {
            let h = try! p.withUnsafeBytes { try IPv6Header(parsing: $0) }
            let n = p.withUnsafeBytes { inp in
                out.withUnsafeMutableBytes {
                    ICMPv6Unreachable.build(offending: inp, header: h, source: source, into: $0, answeringQueries: queries)
                }
            }
            return Array(out.prefix(n))
        }
        let big = Packets.ipv6(source: Self.a6, destination: v6("2001:db8:100:77::1"), payload: [UInt8](repeating: 7, count: 1400))
        let m = answer(big)
        #expect(m.count == 1280)
        #expect(m[0] >> 4 == 6 && m[6] == 58 && m[7] == 8 && m[40] == 1 && m[41] == 0)
        #expect(Array(m[8..<24]) == source.bytes && Array(m[24..<40]) == Self.a6.bytes)
        #expect(Array(m[48...]) == Array(big.prefix(1280 - 48)))
        // The checksum verifies over the pseudo-header.
        let n = m.count - 40
        let pseudo = Array(m[8..<40]) + [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), 0, 0, 0, 58]
        #expect((pseudo + Array(m[40...])).withUnsafeBytes { InternetChecksum.referenceChecksum($0) } == 0)
        // Echo request: answered only with queries on; an error message never; multicast never.
        let echo = Packets.ipv6(
            source: Self.a6, destination: v6("2001:db8:100:77::1"), nextHeader: 58, payload: [128, 0, 0, 0, 0, 1, 0, 1])
        #expect(answer(echo).count == 48 + echo.count)
        #expect(answer(echo, queries: false).isEmpty)
        let error = Packets.ipv6(source: Self.a6, destination: v6("2001:db8:100:77::1"), nextHeader: 58, payload: [1, 0, 0, 0, 0, 0, 0, 0])
        #expect(answer(error).isEmpty)
        #expect(
            answer(Packets.ipv6(source: Self.a6, destination: v6("ff02::16"), nextHeader: 0, payload: [58, 0, 5, 2, 0, 0, 1, 0])).isEmpty)
        #expect(answer(Packets.ipv6(source: .any, destination: v6("2001:db8:100:77::1"))).isEmpty)
        // Fragments: the first is answered, a later one not.
        let first = Packets.ipv6(
            source: Self.a6, destination: v6("2001:db8:100:77::1"), nextHeader: 44, payload: [17, 0, 0, 1, 0, 0, 0, 9])
        let later = Packets.ipv6(
            source: Self.a6, destination: v6("2001:db8:100:77::1"), nextHeader: 44, payload: [17, 0, 0x05, 0x00, 0, 0, 0, 9])
        #expect(!answer(first).isEmpty && answer(later).isEmpty)
    }

    @Test("route table: longest IPv6 prefix, sender checks by the IPv6 subnet of the sender's lease")
    func routeTable6() {
        let peers = [
            PeerLease(
                subnet: IPv4Network("198.18.2.0/24")!, publicIP: IPv4Address("203.0.113.2")!, backendType: nil, backendData: nil,
                subnet6: IPv6Network("2001:db8:100:2::/64")!),
            PeerLease(
                subnet: IPv4Network("198.18.3.0/24")!, publicIP: IPv4Address("203.0.113.3")!, backendType: nil, backendData: nil,
                subnet6: IPv6Network("2001:db8:100:3::/64")!),
            PeerLease(
                subnet: IPv4Network("198.18.4.0/24")!, publicIP: IPv4Address("203.0.113.4")!, backendType: nil, backendData: nil,
                subnet6: IPv6Network("2001:db8:100:3:8000::/65")!),
            PeerLease(subnet: IPv4Network("198.18.5.0/24")!, publicIP: IPv4Address("203.0.113.5")!, backendType: nil, backendData: nil),
        ]
        let t = RouteTable(peers: peers)
        #expect(t.lookup(v6("2001:db8:100:2::99")) == 0)
        #expect(t.lookup(v6("2001:db8:100:3::1")) == 1)
        #expect(t.lookup(v6("2001:db8:100:3:8000::1")) == 2)
        #expect(t.lookup(v6("2001:db8:100:9::1")) == nil)
        #expect(t.lookup(IPv4Address("198.18.5.9")!) == 3)
        #expect(t.checkSender(outerSource: IPv4Address("203.0.113.2")!, innerSource: v6("2001:db8:100:2::1")) == .peer(0))
        #expect(t.checkSender(outerSource: IPv4Address("203.0.113.2")!, innerSource: v6("2001:db8:100:3::1")) == .spoofedInnerSource)
        #expect(t.checkSender(outerSource: IPv4Address("203.0.113.5")!, innerSource: v6("2001:db8:100:2::1")) == .spoofedInnerSource)
        #expect(t.checkSender(outerSource: IPv4Address("203.0.113.9")!, innerSource: v6("2001:db8:100:2::1")) == .unknownSender)
    }

    @Test("IPv6-only leases (IPv4 part 0.0.0.0/0) never route IPv4; over an IPv6 underlay senders are known by PublicIPv6")
    func routeTableIPv6Only() {
        let only6 = [
            PeerLease(
                subnet: .all, publicIP: .any, backendType: nil, backendData: nil,
                subnet6: IPv6Network("2001:db8:100:2::/64")!, publicIPv6: v6("2001:db8:1::2")),
            PeerLease(
                subnet: .all, publicIP: .any, backendType: nil, backendData: nil,
                subnet6: IPv6Network("2001:db8:100:3::/64")!, publicIPv6: v6("2001:db8:1::3")),
        ]
        let t = RouteTable(peers: only6)
        #expect(t.peers.count == 2, "two IPv6-only leases are two peers")
        #expect(t.lookup(IPv4Address("8.8.8.8")!) == nil && t.lookup(IPv4Address("198.18.1.1")!) == nil, "nothing IPv4 is routed")
        #expect(t.lookup(v6("2001:db8:100:3::9")) == 1)
        #expect(t.peer(publicIP: .any) == nil)
        #expect(t.peer(sender: .v6(v6("2001:db8:1::3"))) == 1)
        #expect(t.checkSender(.v6(v6("2001:db8:1::2")), innerSource: v6("2001:db8:100:2::5")) == .peer(0))
        #expect(t.checkSender(.v6(v6("2001:db8:1::2")), innerSource: v6("2001:db8:100:3::5")) == .spoofedInnerSource)
        #expect(t.checkSender(.v6(v6("2001:db8:1::9")), innerSource: v6("2001:db8:100:2::5")) == .unknownSender)
        #expect(t.checkSender(.v6(v6("2001:db8:1::2")), innerSource: IPv4Address("198.18.1.1")!) == .spoofedInnerSource)
        #expect(t.checkSender(.v4(IPv4Address("0.0.0.0")!), innerSource: v6("2001:db8:100:2::5")) == .unknownSender)
    }

    @Test("TSO6: a TCP/IPv6 super-packet splits into segments with their own payload length, sequence and a valid checksum")
    func segmenter6() {
        var rng = SplitMix64(seed: 6)
        let payload = [UInt8].random(count: 5 * 1000 + 123, using: &rng)
        let p = tcpPacket6(payload: payload, flags: 0x18, source: Self.a6, destination: Self.b6)
        let count = p.withUnsafeBytes { TCPSegmenter.segmentCount($0, segmentSize: 1000) }
        #expect(count == 6)
        var out = [UInt8](repeating: 0, count: 6 * 1100)
        var lengths = [Int](repeating: 0, count: 6)
        let made = p.withUnsafeBytes { inp in
            out.withUnsafeMutableBytes { o in
                lengths.withUnsafeMutableBufferPointer {
                    TCPSegmenter.split(
                        inp, segmentSize: 1000, output: o.baseAddress!, stride: 1100, maxSegments: 6, lengths: $0.baseAddress!)
                }
            }
        }
        #expect(made == 6)
        var joined: [UInt8] = []
        for i in 0..<6 {
            let seg = Array(out[(i * 1100)..<(i * 1100 + lengths[i])])
            let h = try? seg.withUnsafeBytes { try IPv6Header(parsing: $0) }
            #expect(h != nil, "segment \(i) is a valid IPv6 packet")
            #expect(tcpChecksum6(seg) == UInt16(seg[56]) << 8 | UInt16(seg[57]))
            let seq = UInt32(seg[44]) << 24 | UInt32(seg[45]) << 16 | UInt32(seg[46]) << 8 | UInt32(seg[47])
            #expect(seq == 1_000_000 + UInt32(i * 1000))
            #expect(seg[53] == (i == 5 ? 0x18 : 0x10), "PSH on the last segment only")
            joined += seg.dropFirst(72)
        }
        #expect(joined == payload)
    }

    @Test("GRO for TCP over IPv6: consecutive segments merge into one TSO6 write; a bad checksum or an IPv4 segment does not join")
    func coalescer6() {
        let c = TCPCoalescer()
        var rng = SplitMix64(seed: 7)
        let chunks = (0..<4).map { _ in [UInt8].random(count: 1000, using: &rng) }
        let segments = chunks.enumerated().map {
            tcpPacket6(payload: $1, seq: 5000 + UInt32($0 * 1000), source: Self.a6, destination: Self.b6)
        }
        for s in segments {
            #expect(s.withUnsafeBytes { c.offer($0.baseAddress!, s.count) })
        }
        var bad = tcpPacket6(payload: [UInt8](repeating: 1, count: 1000), seq: 9000, source: Self.a6, destination: Self.b6)
        bad[100] ^= 0xFF
        #expect(!bad.withUnsafeBytes { c.offer($0.baseAddress!, bad.count) })
        let v4 = tcpPacket(payload: [UInt8](repeating: 2, count: 1000), seq: 9000)
        #expect(!v4.withUnsafeBytes { c.offer($0.baseAddress!, v4.count) })
        let merged = gathered(c.take())
        let header = merged.withUnsafeBytes { VirtioNetHeader(reading: $0.baseAddress!) }
        #expect(
            header.gsoType == VirtioNetHeader.gsoTCPv6 && header.gsoSize == 1000 && header.checksumStart == 40
                && header.checksumOffset == 16 && header.headerLength == 72 && header.flags == VirtioNetHeader.needsChecksum)
        let packet = Array(merged.dropFirst(VirtioNetHeader.size))
        #expect((try? packet.withUnsafeBytes { try IPv6Header(parsing: $0) }) != nil, "payload length covers the merged packet")
        #expect(Array(packet.dropFirst(72)) == chunks.flatMap { $0 })
        // The checksum field holds the pseudo-header sum, for the kernel to finish.
        let n = packet.count - 40
        let pseudo = Array(packet[8..<40]) + [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), 0, 0, 0, 6]
        let expected = ~pseudo.withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
        #expect(UInt16(packet[56]) << 8 | UInt16(packet[57]) == expected)
    }

    @Test("the IPv6 flow hash is symmetric and uses the ports")
    func flowHash6() {
        let ab = tcpPacket6(payload: [1], source: Self.a6, destination: Self.b6)
        var ba = ab
        ba.replaceSubrange(8..<24, with: Self.b6.bytes)
        ba.replaceSubrange(24..<40, with: Self.a6.bytes)
        ba.replaceSubrange(40..<44, with: Array(ab[42..<44]) + Array(ab[40..<42]))
        let h = { (p: [UInt8]) in p.withUnsafeBytes { FlowHash.symmetric($0) } }
        #expect(h(ab) == h(ba))
        var other = ab
        other[41] ^= 1
        #expect(h(other) != h(ab))
    }
}

@Suite("PacketEngine over fakes: IPv6 inner packets", .serialized)
struct PacketEngineIPv6FakeTests {
    static let subnetA6 = IPv6Network("2001:db8:100:1::/64")!
    static let subnetB6 = IPv6Network("2001:db8:100:2::/64")!
    static let a6 = v6("2001:db8:100:1::5")
    static let b6 = v6("2001:db8:100:2::7")

    /// Two dual-stack engines, as ``FakePair`` but with IPv6 subnets too.
    static func pair(virtio: Bool = false, offloads: Bool = false) throws -> FakePair {
        try FakePair(virtio: virtio, gso: offloads, gro: offloads, subnetA6: subnetA6, subnetB6: subnetB6)
    }

    @Test("IPv6 packets cross both ways with the hop limit decremented; no route is answered with ICMPv6; hostile ones are counted")
    func crossAndDrop() throws {
        let pair = try Self.pair()
        defer { pair.stop() }
        let p = Packets.ipv6(source: Self.a6, destination: Self.b6, hopLimit: 64)
        pair.tunA.inject(p)
        let got = pair.tunB.waitForWrites(1)
        var expected = p
        expected[7] = 62
        #expect(got == [expected])
        // No peer covers it: ICMPv6 type 1 code 0 from the TUN's IPv6 address.
        pair.tunA.inject(Packets.ipv6(source: Self.a6, destination: v6("2001:db8:100:77::1")))
        let answers = pair.tunA.waitForWrites(1)
        #expect(
            answers.first.map { $0.count > 48 && $0[6] == 58 && $0[40] == 1 && Array($0[8..<24]) == Self.subnetA6.address.bytes } == true)
        // From a peer: spoofed inner source, not for this node, hop limit out, garbage.
        let from = FakePair.addressA
        pair.socketB.receiveFrom(from, Packets.ipv6(source: v6("2001:db8:100:9::1"), destination: Self.b6))
        pair.socketB.receiveFrom(from, Packets.ipv6(source: Self.a6, destination: v6("2001:db8:100:7::7")))
        pair.socketB.receiveFrom(from, Packets.ipv6(source: Self.a6, destination: Self.b6, hopLimit: 1))
        pair.socketB.receiveFrom(from, [0x60, 0, 0, 0, 0, 99] + [UInt8](repeating: 0, count: 40))
        pair.socketB.receiveFrom(IPv4Address("203.0.113.9")!, Packets.ipv6(source: Self.a6, destination: Self.b6))
        #expect(
            waitUntil {
                let c = pair.b.counters()
                return c[drop: .spoofedInnerSource] == 1 && c[drop: .wrongInnerDestination] == 1 && c[drop: .ttlExpired] == 1
                    && c[drop: .malformed] == 1 && c[drop: .unknownSender] == 1
            }, "\(pair.b.counters().drops)")
        #expect(pair.tunB.written.count == 1)
    }

    @Test("an IPv4-only engine drops IPv6 packets as not IPv4, both ways")
    func ipv4OnlyEngineDropsIPv6() throws {
        let pair = try FakePair()
        defer { pair.stop() }
        pair.tunA.inject(Packets.ipv6(source: Self.a6, destination: Self.b6))
        pair.socketB.receiveFrom(FakePair.addressA, Packets.ipv6(source: Self.a6, destination: Self.b6))
        #expect(waitUntil { pair.a.counters()[drop: .wrongFamily] == 1 && pair.b.counters()[drop: .wrongFamily] == 1 })
        #expect(pair.tunB.written.isEmpty && pair.socketA.sentDatagrams == 0)
    }

    @Test("an IPv6-only engine (no IPv4 subnet) carries no IPv4 either way, whatever a peer's lease says")
    func ipv6OnlyEngineCarriesNoIPv4() throws {
        let network = FakeNetwork()
        let tun = FakeTUN(name: "fake6", virtio: false)
        let socket = FakeSocket(address: FakePair.addressB, port: 8285, network: network, gso: false, gro: false)
        let engine = PacketEngine(
            tun: tun, socket: socket,
            configuration: EngineConfiguration(
                localSubnet: nil, peerPort: 8285, localSubnet6: Self.subnetB6))
        // Even a peer whose lease names an IPv4 subnet (never accepted by the peer set here).
        engine.update(peers: [
            PeerLease(
                subnet: FakePair.subnetA, publicIP: FakePair.addressA, backendType: nil, backendData: nil,
                subnet6: Self.subnetA6, publicIPv6: nil)
        ])
        try engine.start()
        defer { engine.stop() }
        tun.inject(Packets.ipv4(source: IPv4Address("198.18.2.7")!, destination: IPv4Address("198.18.1.5")!))
        socket.receiveFrom(FakePair.addressA, Packets.ipv4(source: IPv4Address("198.18.1.5")!, destination: IPv4Address("8.8.8.8")!))
        #expect(
            waitUntil { engine.counters()[drop: .wrongFamily] == 1 && engine.counters()[drop: .wrongInnerDestination] == 1 },
            "\(engine.counters().drops)")
        #expect(tun.written.isEmpty && socket.sentDatagrams == 0)
    }

    @Test("TSO6 split, GSO send, GRO receive, merged again into one TSO6 write")
    func offloads6() throws {
        let pair = try Self.pair(virtio: true, offloads: true)
        defer { pair.stop() }
        var rng = SplitMix64(seed: 66)
        let payload = [UInt8].random(count: 20 * 1400, using: &rng)
        let superPacket = tcpPacket6(payload: payload, source: Self.a6, destination: Self.b6)
        let header = VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv6, headerLength: 72,
            gsoSize: 1400, checksumStart: 40, checksumOffset: 16)
        var frame = [UInt8](repeating: 0, count: VirtioNetHeader.size)
        frame.withUnsafeMutableBytes { header.write(to: $0.baseAddress!) }
        pair.tunA.inject(frame + superPacket)
        #expect(waitUntil { pair.tunB.written.reduce(0) { $0 + $1.count - VirtioNetHeader.size - 72 } >= payload.count })
        let writes = pair.tunB.written
        #expect(pair.socketA.sentDatagrams == 20)
        #expect(writes.count < 20, "segments must be merged")
        let received = writes.flatMap { $0.dropFirst(VirtioNetHeader.size + 72) }
        #expect(received == payload)
        for w in writes {
            let h = w.withUnsafeBytes { VirtioNetHeader(reading: $0.baseAddress!) }
            let packet = Array(w.dropFirst(VirtioNetHeader.size))
            if h == .plain {
                #expect(tcpChecksum6(packet) == UInt16(packet[56]) << 8 | UInt16(packet[57]))
            } else {
                #expect(h.gsoType == VirtioNetHeader.gsoTCPv6 && h.gsoSize == 1400)
            }
            #expect(packet[7] == 62, "hop limit decremented on each side")
        }
    }
}
