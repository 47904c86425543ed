import Synchronization
import Testing
import TwillAddress
import TwillSystem

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

/// Two engines carrying WireGuard over the in-memory TUN and network, each with its control
/// thread: the handshake runs through the packet threads' queue, data is sealed and opened
/// in place by the pumps.
struct WireGuardFakePair {
    static let subnetA = IPv4Network("198.18.1.0/24")!
    static let subnetB = IPv4Network("198.18.2.0/24")!
    static let addressA = IPv4Address("203.0.113.1")!
    static let addressB = IPv4Address("203.0.113.2")!
    static let port: UInt16 = 51820
    let network = FakeNetwork()
    let tunA: FakeTUN, tunB: FakeTUN
    let socketA: FakeSocket, socketB: FakeSocket
    let a: PacketEngine, b: PacketEngine
    let controlA: WireGuardControl, controlB: WireGuardControl
    /// Every datagram put on the network, in order.
    let wire = WireLog()
    /// While `holding`: transport messages kept off the network, for the test to deliver.
    let held = WireLog()

    init(virtio: Bool = false, gso: Bool = false, gro: Bool = false, timers: WireGuardTimers = WireGuardTimers(), startB: Bool = true)
        throws
    {
        try WireGuardCrypto.load()
        tunA = FakeTUN(name: "wgA", virtio: virtio)
        tunB = FakeTUN(name: "wgB", virtio: virtio)
        socketA = FakeSocket(address: Self.addressA, port: Self.port, network: network, gso: gso, gro: gro)
        socketB = FakeSocket(address: Self.addressB, port: Self.port, network: network, gso: gso, gro: gro)
        let idA = WireGuardIdentity(privateKey: Secret.random(count: 32))
        let idB = WireGuardIdentity(privateKey: Secret.random(count: 32))
        controlA = try WireGuardControl(identity: idA, timers: timers)
        controlB = try WireGuardControl(identity: idB, timers: timers)
        func configuration(_ subnet: IPv4Network, _ control: WireGuardControl) -> EngineConfiguration {
            var c = EngineConfiguration(localSubnet: subnet, peerPort: Self.port, udpOffloads: gso || gro)
            c.wireGuard = control.engineOptions(mtu: 1420)
            return c
        }
        a = PacketEngine(tun: tunA, socket: socketA, configuration: configuration(Self.subnetA, controlA))
        b = PacketEngine(tun: tunB, socket: socketB, configuration: configuration(Self.subnetB, controlB))
        a.update(peers: [PeerLease(subnet: Self.subnetB, publicIP: Self.addressB, backendType: "wireguard", backendData: nil)])
        b.update(peers: [PeerLease(subnet: Self.subnetA, publicIP: Self.addressA, backendType: "wireguard", backendData: nil)])
        controlA.attach(a)
        controlB.attach(b)
        controlA.setPeers([
            WireGuardPeerConfig(
                publicKey: idB.publicKey, endpoint: .init(address: Self.addressB, port: Self.port),
                allowedIPs: Self.subnetB)
        ])
        controlB.setPeers([
            WireGuardPeerConfig(
                publicKey: idA.publicKey, endpoint: .init(address: Self.addressA, port: Self.port),
                allowedIPs: Self.subnetA)
        ])
        let wire = self.wire
        let held = self.held
        network.intercept { d, _ in
            wire.datagrams.withLock { $0.append(d) }
            if held.holding.load(ordering: .relaxed), d.first == 4, d.count > 32 {
                held.datagrams.withLock { $0.append(d) }
                return false
            }
            return true
        }
        try controlA.start()
        if startB { try controlB.start() }
        try a.start()
        try b.start()
    }

    func stop() {
        a.stop()
        b.stop()
        controlA.stop()
        controlB.stop()
    }

    /// Sends `packet` from A's TUN until B's TUN has received `count` writes (the first
    /// packets find no session keys and start the handshake); bounded.
    func establish(_ packet: [UInt8]) -> Bool {
        for _ in 0..<100 {
            tunA.inject(packet)
            if waitUntil(.milliseconds(50), { !tunB.written.isEmpty }) { return true }
        }
        return false
    }
}

final class WireLog: Sendable {
    let datagrams = Mutex<[[UInt8]]>([])
    let holding = Atomic<Bool>(false)
}

@Suite("WireGuard on the packet engine, over fakes")
struct WireGuardEngineTests {
    static let a1 = IPv4Address("198.18.1.10")!
    static let b1 = IPv4Address("198.18.2.20")!

    @Test("handshake through the packet threads, then packets both ways, sealed on the wire")
    func handshakeAndTransport() throws {
        let pair = try WireGuardFakePair()
        defer { pair.stop() }
        let secret = Array("plaintext-that-must-not-appear".utf8)
        let packet = Packets.ipv4(source: Self.a1, destination: Self.b1, payload: Packets.udp(data: secret))
        // The first packet waits for the handshake it starts, and then arrives.
        pair.tunA.inject(packet)
        #expect(pair.tunB.waitForWrites(1).count == 1)
        #expect(pair.a.counters()[drop: .noSessionKeys] == 0)
        let before = pair.tunB.written.count
        for i in 0..<100 {
            pair.tunA.inject(
                Packets.ipv4(source: Self.a1, destination: Self.b1, payload: Packets.udp(data: secret), identification: UInt16(i)))
            pair.tunB.inject(
                Packets.ipv4(source: Self.b1, destination: Self.a1, payload: Packets.udp(data: secret), identification: UInt16(i)))
        }
        let atB = pair.tunB.waitForWrites(before + 100)
        let atA = pair.tunA.waitForWrites(100)
        #expect(atB.count == before + 100 && atA.count == 100)
        // What arrives is the packet as sent, padding gone, TTL one less on each side (as udp).
        if let last = atB.last {
            var expected = Packets.ipv4(source: Self.a1, destination: Self.b1, payload: Packets.udp(data: secret), identification: 99)
            expected[8] -= 2
            #expect(IPv4Header.decrementTTLForTest(expected) == last)
        }
        let wire = pair.wire.datagrams.withLock { $0 }
        #expect(wire.contains { $0.first == 1 && $0.count == 148 } && wire.contains { $0.first == 2 && $0.count == 92 })
        // Transport plaintext is padded to 16 bytes.
        #expect(wire.allSatisfy { $0.first != 4 || ($0.count - 32) % 16 == 0 })
        #expect(
            !wire.contains { d in
                d.count >= secret.count && (0...(d.count - secret.count)).contains { Array(d[$0..<($0 + secret.count)]) == secret }
            })
        let status = pair.controlA.status()
        #expect(status.count == 1 && status.first?.hasSessionKeys == true && status.first?.lastHandshakeUnix != nil)
        let peer = pair.b.counters().peers.first
        #expect(peer?.rxPackets == UInt64(before + 100))
        #expect(pair.a.counters().peers.first?.txPackets == UInt64(before + 100))
    }

    @Test("packets wait for the handshake (128 per peer, the oldest dropped past that) and go once it completes")
    func packetsWaitForTheHandshake() throws {
        let pair = try WireGuardFakePair(timers: .shortened(rekeyAfter: 4), startB: false)
        defer { pair.stop() }
        for i in 0..<200 {
            pair.tunA.inject(Packets.ipv4(source: Self.a1, destination: Self.b1, identification: UInt16(i)))
        }
        // B does not answer yet: 128 wait, 72 are dropped.
        #expect(waitUntil { pair.a.counters()[drop: .noSessionKeys] == 72 })
        #expect(pair.tunB.written.isEmpty)
        try pair.controlB.start()
        // A's retransmitted initiation (a second later) completes the handshake.
        let arrived = pair.tunB.waitForWrites(128, timeout: .seconds(10))
        #expect(arrived.count == 128)
        #expect(arrived.map { UInt16($0[4]) << 8 | UInt16($0[5]) } == (72..<200).map(UInt16.init))
    }

    @Test("tampered, replayed, unknown-index, garbage and spoofed datagrams are dropped and counted")
    func hostileDatagramsAreCounted() throws {
        let pair = try WireGuardFakePair()
        defer { pair.stop() }
        #expect(pair.establish(Packets.ipv4(source: Self.a1, destination: Self.b1)))
        let written = pair.tunB.written.count
        guard let sealed = pair.wire.datagrams.withLock({ $0.last { $0.first == 4 && $0.count > 32 } }) else {
            Issue.record("no transport message on the wire")
            return
        }
        let from = WireGuardFakePair.addressA
        // Replay: the very datagram again.
        pair.socketB.receiveFrom(from, port: WireGuardFakePair.port, sealed)
        #expect(waitUntil { pair.b.counters()[drop: .replayed] == 1 })
        // Tampered: one bit of the ciphertext.
        var tampered = sealed
        tampered[20] ^= 1
        pair.socketB.receiveFrom(from, port: WireGuardFakePair.port, tampered)
        #expect(waitUntil { pair.b.counters()[drop: .notAuthentic] == 1 })
        // A receiver index nobody gave out.
        var unknown = sealed
        unknown[4] ^= 0xFF
        unknown[5] ^= 0xFF
        pair.socketB.receiveFrom(from, port: WireGuardFakePair.port, unknown)
        #expect(waitUntil { pair.b.counters()[drop: .unknownReceiver] == 1 })
        // Garbage, and messages of each type with the wrong size, an unknown type, and
        // reserved bytes that are not zero.
        var rng = SplitMix64(seed: 7)
        let cases: [(type: UInt8?, size: Int)] = [
            (nil, 0), (nil, 3), (1, 31), (1, 147), (1, 149), (2, 91), (2, 93), (2, 148),
            (3, 63), (3, 65), (4, 31), (4, 16), (5, 148), (0, 64),
        ]
        for (type, size) in cases {
            var g = [UInt8].random(count: size, using: &rng)
            if let type, size >= 4 {
                g[0] = type
                g[1] = 0
                g[2] = 0
                g[3] = 0
            }
            pair.socketB.receiveFrom(from, port: WireGuardFakePair.port, g)
        }
        var reserved = [UInt8](repeating: 0, count: 148)
        reserved[0] = 1
        reserved[2] = 1
        pair.socketB.receiveFrom(from, port: WireGuardFakePair.port, reserved)
        #expect(waitUntil { pair.b.counters()[drop: .malformed] == UInt64(cases.count + 1) })
        // A's own inner source outside its subnet: sealed by A, refused by B's allowed IPs.
        pair.tunA.inject(Packets.ipv4(source: IPv4Address("198.18.9.9")!, destination: Self.b1))
        #expect(waitUntil { pair.b.counters()[drop: .spoofedInnerSource] == 1 })
        #expect(pair.tunB.written.count == written)
        // And traffic still flows.
        pair.tunA.inject(Packets.ipv4(source: Self.a1, destination: Self.b1))
        #expect(pair.tunB.waitForWrites(written + 1).count == written + 1)
    }

    @Test(
        "TSO super-packet: sealed per segment, sent with and without UDP GSO, opened per GRO segment, merged again, byte-identical",
        arguments: [false, true])
    func offloadsAreKept(gso: Bool) throws {
        let pair = try WireGuardFakePair(virtio: true, gso: gso, gro: true)
        defer { pair.stop() }
        var plainHeader = [UInt8](repeating: 0, count: VirtioNetHeader.size)
        #expect(pair.establish(plainHeader + Packets.ipv4(source: Self.a1, destination: Self.b1)))
        let before = pair.tunB.written.count
        var rng = SplitMix64(seed: 5)
        let payload = [UInt8].random(count: 20 * 1368, using: &rng)
        let superPacket = tcpPacket(payload: payload, source: Self.a1, destination: Self.b1)
        let header = VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 52,
            gsoSize: 1368, checksumStart: 20, checksumOffset: 16)
        plainHeader.withUnsafeMutableBytes { header.write(to: $0.baseAddress!) }
        // The 20 sealed segments reach B as the kernel's UDP GRO hands them over: one message.
        pair.held.holding.store(true, ordering: .relaxed)
        pair.tunA.inject(plainHeader + superPacket)
        #expect(waitUntil { pair.held.datagrams.withLock { $0.count } == 20 })
        let sealed = pair.held.datagrams.withLock { $0 }
        #expect(Set(sealed.map(\.count)) == [32 + 1420])
        pair.socketB.enqueue(sealed.flatMap { $0 }, from: WireGuardFakePair.addressA, port: WireGuardFakePair.port, groSegment: 32 + 1420)
        #expect(waitUntil { pair.tunB.written.dropFirst(before).reduce(0) { $0 + $1.count - VirtioNetHeader.size - 52 } >= payload.count })
        let writes = Array(pair.tunB.written.dropFirst(before))
        #expect(writes.count == 1, "segments must be merged again")
        #expect(writes.flatMap { $0.dropFirst(VirtioNetHeader.size + 52) } == payload)
    }
}

extension IPv4Header {
    /// `packet` with its header checksum recomputed (after a test changed the TTL).
    static func decrementTTLForTest(_ packet: [UInt8]) -> [UInt8] {
        var p = packet
        p[10] = 0
        p[11] = 0
        let sum = p[0..<20].withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
        p[10] = UInt8(sum >> 8)
        p[11] = UInt8(sum & 0xFF)
        return p
    }
}
