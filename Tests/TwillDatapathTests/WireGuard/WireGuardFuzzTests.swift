import Testing
import TwillAddress

@testable import TwillDatapath

/// Seeded fuzzing of WireGuard's receive side: handshake messages into the protocol (mutated
/// real initiations, responses and cookie replies, and garbage), and transport messages
/// through whole engines over fakes (mutated real ones). Nothing may crash, nothing forged
/// may be accepted, and the real traffic goes on. See ``Fuzz`` for the knobs and the corpus.
@Suite struct WireGuardFuzzTests {
    init() throws { try WireGuardCrypto.load() }

    @Test func handshakeMessagesIntoTheProtocol() {
        let p = WireGuardProtocolTests.Pair()
        let now = WireGuardProtocolTests.second
        p.activityAB.wantHandshake()
        guard let initiation = p.a.tick(now: now).first?.bytes,
            let response = p.b.receive(initiation, from: WireGuardProtocolTests.endA, underLoad: false, now: now).first?.bytes,
            let cookie = p.b.receive(initiation, from: WireGuardProtocolTests.endA, underLoad: true, now: now + 1).first?.bytes
        else {
            Issue.record("no handshake to start from")
            return
        }
        let seeds = [initiation, response, cookie]
        var accepted = 0
        Fuzz.run(
            "wireguard-handshake",
            generate: { rng in
                let pick = Int(rng.next() % 4)
                return pick == 3 ? [UInt8].random(count: Int(rng.next() % 200), using: &rng) : Fuzz.mutate(seeds[pick], &rng)
            }
        ) { input in
            // Under load and not, from the peer's address and a stranger's.
            let from =
                input.count % 2 == 0 ? WireGuardProtocolTests.endA : WireGuardEndpoint(address: IPv4Address("203.0.113.77")!, port: 4444)
            // mac2 is only checked under load: a change there leaves the real message.
            let real =
                (input.count == 148 && input.prefix(132).elementsEqual(initiation.prefix(132)))
                || (input.count == 92 && input.prefix(76).elementsEqual(response.prefix(76)))
            for device in [p.a, p.b] where !real {
                accepted +=
                    device.receive(input, from: from, underLoad: input.count % 3 == 0, now: now + 2).filter { $0.bytes.count != 64 }.count
            }
        }
        // A changed byte anywhere makes mac1 or the AEAD fail: no forged message is answered
        // (cookie replies under load excepted, which is their job).
        #expect(accepted == 0)
    }

    @Test func transportMessagesThroughTheEngines() throws {
        let pair = try WireGuardFakePair()
        defer { pair.stop() }
        let a1 = IPv4Address("198.18.1.10")!
        let b1 = IPv4Address("198.18.2.20")!
        #expect(pair.establish(Packets.ipv4(source: a1, destination: b1)))
        let written = pair.tunB.written.count
        guard let sealed = pair.wire.datagrams.withLock({ $0.last { $0.first == 4 && $0.count > 32 } }) else {
            Issue.record("no transport message on the wire")
            return
        }
        var sent = 0
        Fuzz.run("wireguard-transport", generate: { rng in Fuzz.mutate(sealed, &rng) }) { input in
            pair.socketB.receiveFrom(WireGuardFakePair.addressA, port: WireGuardFakePair.port, input)
            sent += 1
        }
        // Every one dropped (a copy that happens to equal the original is a replay); and B still forwards.
        #expect(
            waitUntil(.seconds(30)) {
                let c = pair.b.counters()
                return c[drop: .malformed] + c[drop: .unknownReceiver] + c[drop: .notAuthentic] + c[drop: .replayed]
                    + c[drop: .handshakeFlood] >= UInt64(sent)
            })
        #expect(pair.tunB.written.count == written)
        pair.tunA.inject(Packets.ipv4(source: a1, destination: b1))
        #expect(pair.tunB.waitForWrites(written + 1).count == written + 1)
    }
}
