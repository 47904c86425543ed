import Testing
import TwillAddress

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

/// Two WireGuard devices in memory, on a clock of the test's: handshakes, transport, cookies
/// and every timer.
@Suite struct WireGuardProtocolTests {
    static let netA = IPv4Network("198.18.1.0/24")!
    static let netB = IPv4Network("198.18.2.0/24")!
    static let endA = WireGuardEndpoint(address: IPv4Address("198.51.100.1")!, port: 51820)
    static let endB = WireGuardEndpoint(address: IPv4Address("198.51.100.2")!, port: 51820)
    static let second: UInt64 = 1_000_000_000

    init() throws { try WireGuardCrypto.load() }

    struct Pair {
        let a: WireGuardDevice
        let b: WireGuardDevice
        init(timers: WireGuardTimers = WireGuardTimers()) {
            a = WireGuardDevice(identity: WireGuardIdentity(privateKey: WireGuardCrypto.generatePrivateKey()), timers: timers)
            b = WireGuardDevice(identity: WireGuardIdentity(privateKey: WireGuardCrypto.generatePrivateKey()), timers: timers)
            a.setPeers([WireGuardPeerConfig(publicKey: b.identity.publicKey, endpoint: endB, allowedIPs: netB)])
            b.setPeers([WireGuardPeerConfig(publicKey: a.identity.publicKey, endpoint: endA, allowedIPs: netA)])
        }
        var activityAB: PeerActivity { a.activity(of: b.identity.publicKey)! }
        var activityBA: PeerActivity { b.activity(of: a.identity.publicKey)! }
    }

    /// Seals `payload` as the packet threads do, with the send keypair of `device` for `subnet`.
    static func seal(_ device: WireGuardDevice, to subnet: IPv4Network, _ payload: [UInt8]) -> [UInt8]? {
        guard let k = device.keyTable().send[subnet]?.keypair else { return nil }
        let padded = WireGuardMessage.paddedLength(payload.count, mtu: 1420)
        var msg = [UInt8](repeating: 0, count: 16 + padded + 16)
        for (i, b) in payload.enumerated() { msg[16 + i] = b }
        return TransportCrypto.seal(keypair: k, counter: k.nextCounter(), message: &msg, plaintextLength: padded) ? msg : nil
    }

    /// Opens as the packet threads do; reports the first use of a responder's keypair.
    static func open(_ device: WireGuardDevice, _ msg: [UInt8]) -> [UInt8]? {
        var m = msg
        let index = m.le32(at: 4)
        guard let entry = device.keyTable().receive[index] else { return nil }
        let context = AEADContext()
        let length = m.count
        let counter = m.withUnsafeMutableBytes {
            TransportCrypto.open(context: context, keypair: entry.keypair, message: $0.baseAddress!, length: length)
        }
        guard let counter, entry.keypair.acceptReceived(counter) else { return nil }
        if !entry.keypair.isInitiator { entry.activity.confirmedIndex.store(entry.keypair.localIndex, ordering: .relaxed) }
        return Array(m[16..<(m.count - 16)])
    }

    /// Runs one full handshake started by A; returns A's keepalive.
    @discardableResult
    static func handshake(_ p: Pair, now: UInt64) -> [UInt8] {
        p.activityAB.wantHandshake()
        let initiation = p.a.tick(now: now)
        #expect(initiation.count == 1 && initiation.first?.to == endB && initiation.first?.bytes.count == 148)
        let response = p.b.receive(initiation[0].bytes, from: endA, underLoad: false, now: now)
        #expect(response.count == 1 && response.first?.to == endA && response.first?.bytes.count == 92)
        let keepalive = p.a.receive(response[0].bytes, from: endB, underLoad: false, now: now)
        #expect(keepalive.count == 1 && keepalive.first?.bytes.count == 32)
        return keepalive.first?.bytes ?? []
    }

    @Test func handshakeThenTransportBothWays() {
        let p = Pair()
        let keepalive = Self.handshake(p, now: Self.second)
        // The responder may not send before the initiator used the new keypair.
        #expect(Self.seal(p.b, to: Self.netA, [1]) == nil)
        #expect(Self.open(p.b, keepalive) == [])
        _ = p.b.tick(now: Self.second)
        let packet: [UInt8] = Array(0..<100)
        let sealed = Self.seal(p.a, to: Self.netB, packet)!
        #expect(sealed.count == 16 + 112 + 16) // padded to 16
        #expect(Self.open(p.b, sealed)?.prefix(100).elementsEqual(packet) == true)
        // A replay of the same message is refused.
        #expect(Self.open(p.b, sealed) == nil)
        let back = Self.seal(p.b, to: Self.netA, [9, 9, 9])!
        #expect(Self.open(p.a, back)?.prefix(3).elementsEqual([9, 9, 9]) == true)
        // A flipped bit anywhere in the ciphertext or tag is refused.
        var tampered = Self.seal(p.a, to: Self.netB, packet)!
        tampered[40] ^= 0x20
        #expect(Self.open(p.b, tampered) == nil)
        #expect(p.a.status().first?.hasSessionKeys == true && p.a.status().first?.lastHandshakeUnix != nil)
    }

    @Test func replayedAndMalformedHandshakesAreDroppedAndCounted() {
        let p = Pair()
        p.activityAB.wantHandshake()
        let initiation = p.a.tick(now: Self.second)[0].bytes
        #expect(p.b.receive(initiation, from: Self.endA, underLoad: false, now: Self.second).count == 1)
        // The same initiation again: its timestamp is not newer.
        #expect(p.b.receive(initiation, from: Self.endA, underLoad: false, now: 2 * Self.second).isEmpty)
        #expect(p.b.drops["replayed_initiation"] == 1)
        var badMAC = initiation
        badMAC[20] ^= 1
        #expect(p.b.receive(badMAC, from: Self.endA, underLoad: false, now: 3 * Self.second).isEmpty)
        #expect(p.b.drops["bad_mac1"] == 1)
        for bytes in [
            Array(initiation.prefix(147)), [5, 0, 0, 0] + [UInt8](repeating: 0, count: 60), [1, 1, 0, 0] + Array(initiation.dropFirst(4)),
            [],
        ] {
            #expect(p.b.receive(bytes, from: Self.endA, underLoad: false, now: 3 * Self.second).isEmpty)
        }
        #expect(p.b.drops["malformed"] == 4)
        // A response to an index nobody has.
        var response = [UInt8](repeating: 0, count: 92)
        response[0] = 2
        Noise.addMACs(&response, mac1Key: p.a.identity.mac1Key, cookie: nil)
        #expect(p.a.receive(response, from: Self.endB, underLoad: false, now: Self.second).isEmpty)
        #expect(p.a.drops["bad_response"] == 1)
        // An initiation from a key that is not a peer.
        let stranger = WireGuardDevice(identity: WireGuardIdentity(privateKey: WireGuardCrypto.generatePrivateKey()))
        stranger.setPeers([WireGuardPeerConfig(publicKey: p.b.identity.publicKey, endpoint: Self.endB, allowedIPs: Self.netA)])
        stranger.activity(of: p.b.identity.publicKey)!.wantHandshake()
        let foreign = stranger.tick(now: Self.second)[0].bytes
        #expect(p.b.receive(foreign, from: Self.endA, underLoad: false, now: 4 * Self.second).isEmpty)
        #expect(p.b.drops["bad_initiation"] == 1)
    }

    /// Under load a responder answers only initiations with a valid mac2, and tells others
    /// the cookie to make one with.
    @Test func cookiesUnderLoad() {
        let timers = WireGuardTimers()
        let p = Pair(timers: timers)
        p.activityAB.wantHandshake()
        let first = p.a.tick(now: Self.second)[0].bytes
        let reply = p.b.receive(first, from: Self.endA, underLoad: true, now: Self.second)
        #expect(reply.count == 1 && reply[0].bytes.count == 64 && reply[0].bytes[0] == 3)
        #expect(p.a.receive(reply[0].bytes, from: Self.endB, underLoad: false, now: Self.second).isEmpty)
        // The retry carries mac2 and is answered, still under load.
        let retry = p.a.tick(now: Self.second + timers.rekeyTimeout.nanoseconds + Self.second)
        #expect(retry.count == 1)
        let response = p.b.receive(retry[0].bytes, from: Self.endA, underLoad: true, now: 7 * Self.second)
        #expect(response.count == 1 && response[0].bytes.count == 92)
        // A cookie reply with a wrong key is refused.
        var forged = reply[0].bytes
        forged[40] ^= 1
        #expect(p.a.receive(forged, from: Self.endB, underLoad: false, now: Self.second).isEmpty)
        #expect(p.a.drops["bad_cookie_reply"] == 1)
    }

    /// Retransmission every RekeyTimeout (+ jitter), giving up after the attempt limit.
    @Test func retransmitsThenGivesUp() {
        var timers = WireGuardTimers()
        timers.rekeyAttemptTime = .seconds(20) // 4 attempts of 5 s
        let p = Pair(timers: timers)
        p.activityAB.wantHandshake()
        var now = Self.second
        var sent = p.a.tick(now: now).count
        for _ in 0..<100 {
            now += Self.second / 10
            sent += p.a.tick(now: now).count
        }
        // 10 s: the first and one retry (5 s + up to 333 ms jitter), not more.
        #expect(sent == 2 || sent == 3)
        for _ in 0..<600 {
            now += Self.second / 10
            sent += p.a.tick(now: now).count
        }
        #expect(sent == 4, "attempts: \(sent)")
    }

    /// Keepalive 10 s after received data with nothing sent; a new handshake 15 s after data
    /// sent with nothing heard.
    @Test func keepaliveAndNewHandshakeTimers() {
        let p = Pair()
        let now = Self.second
        #expect(Self.open(p.b, Self.handshake(p, now: now)) == [])
        _ = p.b.tick(now: now)
        let data = Self.seal(p.a, to: Self.netB, [7])!
        #expect(Self.open(p.b, data) != nil)
        p.activityBA.receivedAuthenticated(at: now + Self.second, data: true)
        #expect(p.b.tick(now: now + 5 * Self.second).isEmpty)
        let keepalive = p.b.tick(now: now + 11 * Self.second + 1)
        #expect(keepalive.count == 1 && keepalive[0].bytes.count == 32 && keepalive[0].to == Self.endA)
        #expect(p.b.tick(now: now + 12 * Self.second).isEmpty)
        // A sends data and hears nothing: after 15 s it starts a new handshake.
        p.activityAB.sentData(at: now + 20 * Self.second)
        #expect(p.a.tick(now: now + 30 * Self.second).isEmpty)
        let again = p.a.tick(now: now + 36 * Self.second)
        #expect(again.count == 1 && again[0].bytes.count == 148)
    }

    /// The initiator rekeys after RekeyAfterTime while sending; keypairs past RejectAfterTime
    /// leave the table; after 3 x RejectAfterTime without a new keypair every key is zeroed.
    @Test func rekeyRejectAndZeroing() {
        let p = Pair()
        let start = Self.second
        Self.handshake(p, now: start)
        let old = p.a.keyTable().send[Self.netB]!.keypair!
        p.activityAB.sentData(at: start + 121 * Self.second)
        p.activityAB.receivedAuthenticated(at: start + 121 * Self.second, data: true)
        let rekey = p.a.tick(now: start + 121 * Self.second)
        #expect(rekey.count == 1 && rekey[0].bytes.count == 148)
        // Nobody answers: at 180 s the keypair is rejected and gone from the table.
        _ = p.a.tick(now: start + 181 * Self.second)
        #expect(p.a.keyTable().send[Self.netB]?.keypair == nil)
        #expect(p.a.keyTable().receive.isEmpty)
        #expect(!old.isLive)
        // Zeroed once a packet thread could no longer be using it.
        _ = p.a.tick(now: start + 182 * Self.second)
        #expect(old.sendKey.array.allSatisfy { $0 == 0 } && old.receiveKey.array.allSatisfy { $0 == 0 })
        // Zeroing of what is left (the handshake state) at 540 s.
        _ = p.a.tick(now: start + 541 * Self.second)
        #expect(p.a.status().first?.hasSessionKeys == false)
    }

    @Test func replayWindowEdges() {
        var w = ReplayWindow()
        let limit = WireGuardTimers.rejectAfterMessages
        let window = ReplayWindow.windowSize
        // (counter, accepted?) in order.
        let steps: [(UInt64, Bool)] = [
            (0, true), (0, false), (2, true), (1, true), (1, false),
            (10_000, true), (10_000 - window, true), (10_000 - window - 1, false), (10_000 - 5, true), (limit, false),
            // A jump far ahead clears the ring: old counters in the new window are new.
            (1_000_000, true), (1_000_000 - 64, true), (1_000_000 - 64, false),
        ]
        var results: [Bool] = []
        for (counter, _) in steps { results.append(w.accept(counter, limit: limit)) }
        #expect(results == steps.map(\.1))
    }

    @Test func paddingAndTimestamps() {
        #expect(WireGuardMessage.paddedLength(0, mtu: 1420) == 0)
        #expect(WireGuardMessage.paddedLength(1, mtu: 1420) == 16)
        #expect(WireGuardMessage.paddedLength(1419, mtu: 1420) == 1420)
        #expect(WireGuardMessage.paddedLength(1420, mtu: 1420) == 1420)
        #expect(TAI64N.encode(seconds: 0, nanoseconds: 0) == [0x40, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0])
        #expect(TAI64N.encode(seconds: 1, nanoseconds: 0x00ff_ffff) == [0x40, 0, 0, 0, 0, 0, 0, 0x0b, 0, 0, 0, 0])
        #expect(TAI64N.isAfter(TAI64N.encode(seconds: 2, nanoseconds: 0), TAI64N.encode(seconds: 1, nanoseconds: 999_000_000)))
    }
}
