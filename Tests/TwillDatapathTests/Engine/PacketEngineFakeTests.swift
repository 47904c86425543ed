import Testing
import TwillAddress
import TwillSystem

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

/// The packet engine against in-memory devices and sockets (``FakeTUN``, ``FakeSocket``):
/// the pumps, the route swap, drop accounting and the offload paths, without root or
/// namespaces.
@Suite("PacketEngine over fakes", .serialized)
struct PacketEngineFakeTests {
    static let a1 = IPv4Address("198.18.1.5")!
    static let b1 = IPv4Address("198.18.2.7")!

    @Test("packets cross both ways, TTL decremented on each side, counted per peer")
    func packetsCrossBothWays() throws {
        let pair = try FakePair()
        defer { pair.stop() }
        let ping = Packets.ipv4(source: Self.a1, destination: Self.b1, ttl: 64, payload: Packets.udp(data: Array("hello".utf8)))
        pair.tunA.inject(ping)
        let got = pair.tunB.waitForWrites(1)
        #expect(got.count == 1)
        var expected = ping
        #expect(expected.withUnsafeMutableBytes { IPv4Header.decrementTTL($0.baseAddress!) && IPv4Header.decrementTTL($0.baseAddress!) })
        #expect(got.first == expected)
        let back = Packets.ipv4(source: Self.b1, destination: Self.a1, ttl: 9, payload: Packets.udp(data: [1, 2, 3]))
        pair.tunB.inject(back)
        #expect(pair.tunA.waitForWrites(1).first?[8] == 7)
        let ca = pair.a.counters()
        let cb = pair.b.counters()
        #expect(ca.txPackets == 1 && ca.rxPackets == 1 && cb.txPackets == 1 && cb.rxPackets == 1)
        #expect(ca.peers.first?.txBytes == UInt64(ping.count) && ca.peers.first?.rxBytes == UInt64(back.count))
        #expect(pair.socketA.sentDatagrams == 1)
    }

    @Test("hostile and broken datagrams are dropped and counted by reason; nothing reaches the TUN")
    func dropsAreCountedByReason() throws {
        let pair = try FakePair()
        defer { pair.stop() }
        let from = FakePair.addressA
        let good = { (src: IPv4Address, dst: IPv4Address, ttl: UInt8) in Packets.ipv4(source: src, destination: dst, ttl: ttl) }
        pair.socketB.receiveFrom(IPv4Address("203.0.113.9")!, good(Self.a1, Self.b1, 64)) // a stranger
        pair.socketB.receiveFrom(from, good(IPv4Address("198.18.9.1")!, Self.b1, 64)) // spoofed inner source
        pair.socketB.receiveFrom(from, good(Self.a1, IPv4Address("198.18.7.7")!, 64)) // not for this node
        pair.socketB.receiveFrom(from, good(Self.a1, Self.b1, 1)) // TTL runs out
        pair.socketB.receiveFrom(from, [0x45, 0, 0, 99, 1, 2, 3]) // garbage
        var badSum = good(Self.a1, Self.b1, 64)
        badSum[10] ^= 0xFF
        pair.socketB.receiveFrom(from, badSum) // IP checksum wrong
        pair.socketB.receiveFrom(from, [UInt8](repeating: 0x45, count: 10_000)) // larger than any packet
        let done = waitUntil {
            let c = pair.b.counters()
            return c[drop: .unknownSender] == 1 && c[drop: .spoofedInnerSource] == 1 && c[drop: .wrongInnerDestination] == 1
                && c[drop: .ttlExpired] == 1 && c[drop: .malformed] == 2 && c[drop: .oversize] == 1
        }
        let c = pair.b.counters()
        #expect(done, "\(c.drops)")
        #expect(pair.tunB.written.isEmpty)
        #expect(c.rxPackets == 0)
        // And the engine still forwards.
        pair.tunA.inject(good(Self.a1, Self.b1, 64))
        #expect(pair.tunB.waitForWrites(1).count == 1)
    }

    @Test("no peer for a destination: ICMP net unreachable back into the TUN, from the TUN's address")
    func noRouteIsAnsweredWithNetUnreachable() throws {
        let pair = try FakePair()
        defer { pair.stop() }
        let lost = Packets.ipv4(source: Self.a1, destination: IPv4Address("198.18.77.1")!, payload: Packets.udp(data: [9, 9]))
        pair.tunA.inject(lost)
        let answers = pair.tunA.waitForWrites(1)
        #expect(answers.count == 1)
        guard let icmp = answers.first, icmp.count >= 28 else { return }
        #expect(icmp[9] == 1 && icmp[20] == 3 && icmp[21] == 0)
        #expect(Array(icmp[12..<16]) == FakePair.subnetA.address.octets && Array(icmp[16..<20]) == Self.a1.octets)
        #expect(pair.a.counters()[drop: .noRoute] == 1 && pair.a.counters().icmpUnreachableSent == 1)
        #expect(pair.socketA.sentDatagrams == 0)
    }

    @Test("peer snapshots swap under traffic: nothing lost, counters kept")
    func routeTableSwapsUnderTraffic() throws {
        let pair = try FakePair()
        defer { pair.stop() }
        let peerB = PeerLease(subnet: FakePair.subnetB, publicIP: FakePair.addressB, backendType: nil, backendData: nil)
        let total = 2000
        let tun = pair.tunA
        let feeder = try OSThread.spawn(name: "feeder") {
            for i in 0..<total {
                tun.inject(Packets.ipv4(source: Self.a1, destination: Self.b1, identification: UInt16(truncatingIfNeeded: i)))
            }
        }
        defer { feeder.join() }
        for i in 0..<200 {
            // The same peer among changing others: its counters must survive every swap.
            let others = (0..<(i % 7)).map {
                PeerLease(
                    subnet: IPv4Network("198.18.\(100 + $0).0/24")!, publicIP: IPv4Address("203.0.113.\(100 + $0)")!,
                    backendType: nil, backendData: nil)
            }
            pair.a.update(peers: others + [peerB])
        }
        #expect(pair.tunB.waitForWrites(total, timeout: .seconds(20)).count == total)
        let peer = pair.a.counters().peers.first { $0.subnet == FakePair.subnetB }
        #expect(peer?.txPackets == UInt64(total))
    }

    /// A TCP super-packet (TSO) from A's TUN is split into MSS-sized datagrams sent as one
    /// UDP_SEGMENT message; B's socket coalesces them (UDP GRO) and B merges them back into one
    /// super-packet for one TUN write (userspace GRO). A segment corrupted on the way is not
    /// merged: it is written alone with a plain header, for the kernel to check and drop.
    @Test("offloads: TSO split, GSO send, GRO receive, coalesced again; a corrupted segment is passed alone")
    func offloadsEndToEnd() throws {
        for corrupt in [false, true] {
            let pair = try FakePair(virtio: true, gso: true, gro: true)
            defer { pair.stop() }
            if corrupt {
                pair.network.intercept { datagram, index in
                    if index == 5 { datagram[datagram.count - 1] ^= 0x5A }
                    return true
                }
            }
            var rng = SplitMix64(seed: 99)
            let payload = [UInt8].random(count: 20 * 1400, using: &rng)
            let superPacket = tcpPacket(payload: payload, source: Self.a1, destination: Self.b1)
            let header = VirtioNetHeader(
                flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 52,
                gsoSize: 1400, checksumStart: 20, checksumOffset: 16)
            var frame = [UInt8](repeating: 0, count: VirtioNetHeader.size)
            frame.withUnsafeMutableBytes { header.write(to: $0.baseAddress!) }
            pair.tunA.inject(frame + superPacket)
            // How many writes the merged data takes depends on how the datagrams fall into
            // receive batches; what must hold is what they carry and how they are marked.
            #expect(waitUntil { pair.tunB.written.reduce(0) { $0 + $1.count - VirtioNetHeader.size - 52 } >= payload.count })
            let writes = pair.tunB.written
            #expect(pair.socketA.sentDatagrams == 20)
            let headers = writes.map { w in w.withUnsafeBytes { VirtioNetHeader(reading: $0.baseAddress!) } }
            let packets = writes.map { Array($0.dropFirst(VirtioNetHeader.size)) }
            let received = packets.flatMap { $0.dropFirst(52) }
            let plain = headers.indices.filter { headers[$0] == .plain }
            var expected = payload
            if corrupt {
                expected[6 * 1400 - 1] ^= 0x5A
                // The corrupted segment goes to the kernel alone and unvouched, its checksum as
                // it came. A good segment that fell alone into a receive batch may also be
                // written plain; its checksum verifies.
                let bad = plain.filter { tcpChecksum(packets[$0]) != UInt16(packets[$0][36]) << 8 | UInt16(packets[$0][37]) }
                #expect(bad.count == 1, "\(headers)")
                if let i = bad.first {
                    #expect(packets[i].count == 52 + 1400)
                    #expect(Array(packets[i].dropFirst(52)) == Array(expected[(5 * 1400)..<(6 * 1400)]))
                }
                for i in plain where !bad.contains(i) {
                    #expect(packets[i].count == 52 + 1400, "a plain write carries one segment")
                }
            } else {
                // Nothing is corrupted: whatever was written plain (a segment alone in its
                // receive batch) carries one segment whose checksum verifies.
                for i in plain {
                    #expect(
                        packets[i].count == 52 + 1400 && tcpChecksum(packets[i]) == UInt16(packets[i][36]) << 8 | UInt16(packets[i][37]),
                        "\(headers)")
                }
            }
            for i in headers.indices where !plain.contains(i) {
                #expect(
                    headers[i].gsoType == VirtioNetHeader.gsoTCPv4 && headers[i].gsoSize == 1400
                        && headers[i].flags == VirtioNetHeader.needsChecksum)
            }
            #expect(writes.count < 20, "segments must be merged")
            #expect(received == expected)
            let c = pair.b.counters()
            #expect(c.rxPackets == 20)
        }
    }

    @Test("a device that goes away ends its queue's thread, which is counted")
    func aClosedDeviceIsCountedAsAFailedThread() throws {
        let pair = try FakePair()
        defer { pair.stop() }
        pair.tunA.close()
        #expect(waitUntil { pair.a.counters().failedThreads == 1 })
    }
}
