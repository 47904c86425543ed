import Testing
import TwillAddress
import TwillSystem

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

/// WireGuard sessions carried to the next run of the agent: what the peer sealed before the
/// restart opens after it, the send counter goes on (no nonce twice), a replay of the old
/// run's packets is refused, and the kept bytes are used once and by the same identity only.
@Suite struct WireGuardSessionsTests {
    typealias P = WireGuardProtocolTests
    init() throws { try WireGuardCrypto.load() }

    /// A's device again (same key), as the next run makes it, with the sessions A exported.
    static func restarted(_ p: P.Pair, identity: WireGuardIdentity, sessions: WireGuardSessions, now: UInt64) -> WireGuardDevice {
        let again = WireGuardDevice(identity: identity)
        #expect(again.resume(sessions, now: now) == 1)
        again.setPeers([WireGuardPeerConfig(publicKey: p.b.identity.publicKey, endpoint: P.endB, allowedIPs: P.netB)])
        return again
    }

    @Test func aRestartedDeviceGoesOnWithTheSameSession() throws {
        let key = WireGuardCrypto.generatePrivateKey()
        let identity = WireGuardIdentity(privateKey: key)
        let p = P.Pair()
        // A's device is rebuilt with a chosen identity, so that it can be made again below.
        let a = WireGuardDevice(identity: identity)
        a.setPeers([WireGuardPeerConfig(publicKey: p.b.identity.publicKey, endpoint: P.endB, allowedIPs: P.netB)])
        p.b.setPeers([WireGuardPeerConfig(publicKey: identity.publicKey, endpoint: P.endA, allowedIPs: P.netA)])
        a.activity(of: p.b.identity.publicKey)!.wantHandshake()
        let initiation = a.tick(now: P.second)
        let response = p.b.receive(initiation[0].bytes, from: P.endA, underLoad: false, now: P.second)
        let keepalive = a.receive(response[0].bytes, from: P.endB, underLoad: false, now: P.second)
        #expect(P.open(p.b, keepalive[0].bytes) == [])
        _ = p.b.tick(now: P.second)
        let first = try #require(P.seal(a, to: P.netB, [1, 2, 3]))
        #expect(P.open(p.b, first)?.prefix(3).elementsEqual([1, 2, 3]) == true)
        // B seals while A restarts; A's old packets may be replayed by an attacker.
        let sealedDuringRestart = try #require(P.seal(p.b, to: P.netA, [7, 7]))

        let exported = a.exportSessions()
        let bytes = exported.encoded
        let decoded = try #require(WireGuardSessions(decoding: bytes))
        #expect(decoded == exported)
        let sentBefore = try #require(a.keyTable().send[P.netB]?.keypair).sentMessages

        let again = Self.restarted(p, identity: identity, sessions: decoded, now: 2 * P.second)
        #expect(P.open(again, sealedDuringRestart)?.prefix(2).elementsEqual([7, 7]) == true)
        // The send counter goes on where the old run stopped: B accepts, and sees no reuse.
        let k = try #require(again.keyTable().send[P.netB]?.keypair)
        #expect(k.sentMessages == sentBefore)
        let next = try #require(P.seal(again, to: P.netB, [4]))
        #expect(P.open(p.b, next)?.first == 4)
        // B's packet from before the restart, replayed, is refused by the resumed window.
        #expect(P.open(again, sealedDuringRestart) == nil)
    }

    @Test func anotherIdentityOrStaleSessionsAreNotUsed() throws {
        let p = P.Pair()
        P.handshake(p, now: P.second)
        let sessions = p.a.exportSessions()
        #expect(sessions.peers.count == 1 && sessions.peers[0].keypairs.count >= 1)
        // Another key file's device takes nothing.
        let stranger = WireGuardDevice(identity: WireGuardIdentity(privateKey: WireGuardCrypto.generatePrivateKey()))
        #expect(stranger.resume(sessions, now: 2 * P.second) == 0)
        // Past RejectAfterTime the keypairs are of no use: none is installed.
        let late = WireGuardDevice(identity: p.a.identity)
        late.resume(sessions, now: 200 * P.second)
        late.setPeers([WireGuardPeerConfig(publicKey: p.b.identity.publicKey, endpoint: P.endB, allowedIPs: P.netB)])
        #expect(late.keyTable().send[P.netB]?.keypair == nil)
    }

    @Test func malformedBytesAreRefused() {
        let sessions = WireGuardSessions(publicKey: [UInt8](repeating: 1, count: 32), peers: [])
        var bytes = sessions.encoded
        #expect(WireGuardSessions(decoding: bytes) == sessions)
        #expect(WireGuardSessions(decoding: []) == nil)
        #expect(WireGuardSessions(decoding: Array(bytes.dropLast())) == nil)
        bytes[0] ^= 1
        #expect(WireGuardSessions(decoding: bytes) == nil)
        #expect(WireGuardSessions(decoding: sessions.encoded + [0]) == nil)
    }

    @Test func aResumedReplayWindowAcceptsOnlyNewerCounters() {
        for highest: UInt64 in [0, 5, 63, 64, 1000, 8200] {
            var w = ReplayWindow(resumingAfter: highest)
            #expect(w.highestAccepted == highest)
            let results = [
                w.accept(highest, limit: .max), highest > 0 ? w.accept(highest - 1, limit: .max) : false,
                w.accept(highest + 1, limit: .max), w.accept(highest + 3, limit: .max),
                w.accept(highest + 2, limit: .max), w.accept(highest + 2, limit: .max),
            ]
            #expect(results == [false, false, true, true, true, false], "after \(highest)")
        }
        #expect(ReplayWindow().highestAccepted == nil)
    }

    /// The kept file is read once: whoever holds it next finds it empty.
    @Test func aMemoryFileIsConsumedOnce() throws {
        let fd = try MemoryFile.create(name: "twill-test", bytes: [1, 2, 3])
        let other = dup(fd)
        #expect(MemoryFile.consume(fd) == [1, 2, 3])
        #expect(MemoryFile.consume(other) == nil)
    }
}
