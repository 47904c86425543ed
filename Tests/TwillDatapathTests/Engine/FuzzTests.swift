import CFuzzSupport
import Foundation
import Testing
import TwillAddress

@testable import TwillDatapath

/// Seeded fuzzing of every parser on the inbound path: IPv4 headers, the TCP coalescer, UDP
/// GRO splitting and virtio headers (through whole engines over fakes), the ICMP builder, and
/// the TSO segmenter on the way out.
///
/// `make test` runs a short pass (``Fuzz/iterations``); `TWILL_FUZZ_ITERATIONS=1000000`
/// runs a long one, `TWILL_FUZZ_SEED` picks another seed. If an input crashes the process,
/// it is saved as `crash-<target>-<pid>.bin` in `TWILL_FUZZ_CRASH_DIR` (default the temp
/// dir); copy it into `FuzzCorpus/<target>/` and it is replayed on every run from then on.
enum Fuzz {
    static let environment = ProcessInfo.processInfo.environment
    static var iterations: Int { environment["TWILL_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 3000 }
    static var seed: UInt64 { environment["TWILL_FUZZ_SEED"].flatMap(UInt64.init) ?? 0x7717_11F0_2026 }

    static let installed: Void = {
        twill_fuzz_install(environment["TWILL_FUZZ_CRASH_DIR"] ?? NSTemporaryDirectory())
    }()

    /// Saved regression inputs for `target`, each replayed before the random ones.
    static func corpus(_ target: String) -> [[UInt8]] {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("FuzzCorpus/\(target)")
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path))?.sorted() ?? []
        return files.compactMap { FileManager.default.contents(atPath: dir.appendingPathComponent($0).path).map { Array($0) } }
    }

    /// Runs `body` on the corpus, then on `iterations` generated inputs; each input is
    /// recorded first so that a crash saves it.
    static func run(_ target: String, iterations: Int = Fuzz.iterations, generate: (inout SplitMix64) -> [UInt8], _ body: ([UInt8]) -> Void)
    {
        _ = installed
        // Each target its own stream, the same from run to run (FNV-1a of its name).
        var rng = SplitMix64(seed: seed ^ target.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 })
        let saved = corpus(target)
        #expect(!saved.isEmpty, "no regression corpus found for \(target) (FuzzCorpus/\(target))")
        for input in saved { try_(target, input, body) }
        for _ in 0..<iterations { try_(target, generate(&rng), body) }
    }

    private static func try_(_ target: String, _ input: [UInt8], _ body: ([UInt8]) -> Void) {
        input.withUnsafeBytes { twill_fuzz_set_input(target, $0.baseAddress, $0.count) }
        body(input)
    }

    /// A mutation of `base`: flipped bits, changed bytes, truncation or extension.
    static func mutate(_ base: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var b = base
        for _ in 0..<Int(rng.next() % 4) {
            guard !b.isEmpty else { break }
            let i = Int(rng.next() % UInt64(b.count))
            switch rng.next() % 5 {
            case 0: b[i] ^= UInt8(1 << (rng.next() % 8))
            case 1: b[i] = UInt8(truncatingIfNeeded: rng.next())
            case 2: b = Array(b.prefix(i))
            case 3: b += [UInt8].random(count: Int(rng.next() % 64), using: &rng)
            default: b[i] = [0, 0xFF, 0x45, 0x06, 0x10][Int(rng.next() % 5)]
            }
        }
        return b
    }

    /// Records of `[u16 length][bytes]`, the form of multi-packet inputs.
    static func records(_ input: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var i = 0
        while i + 2 <= input.count {
            let n = Int(input[i]) << 8 | Int(input[i + 1])
            i += 2
            let end = min(i + n, input.count)
            out.append(Array(input[i..<end]))
            i = end
        }
        return out
    }

    static func encode(_ records: [[UInt8]]) -> [UInt8] {
        records.flatMap { [UInt8($0.count >> 8 & 0xFF), UInt8($0.count & 0xFF)] + $0 }
    }

    /// A TCP segment of a flow, sometimes mutated.
    static func segment(_ rng: inout SplitMix64, seq: UInt32) -> [UInt8] {
        let payload = [UInt8].random(count: 1 + Int(rng.next() % 1400), using: &rng)
        let flags: UInt8 = [0x10, 0x10, 0x10, 0x18, 0x11, 0x02][Int(rng.next() % 6)]
        let packet = tcpPacket(payload: payload, seq: seq, flags: flags)
        return rng.next() % 3 == 0 ? mutate(packet, &rng) : packet
    }
}

@Suite("Fuzz: inbound parsers", .serialized)
struct FuzzTests {
    @Test func ipv4HeaderParsing() {
        let base = Packets.ipv4(
            source: IPv4Address("198.18.1.1")!, destination: IPv4Address("198.18.2.2")!, payload: Packets.udp(data: [1, 2, 3]))
        Fuzz.run(
            "ipv4-header",
            generate: { rng in
                rng.next() % 4 == 0 ? [UInt8].random(count: Int(rng.next() % 80), using: &rng) : Fuzz.mutate(base, &rng)
            }
        ) { input in
            input.withUnsafeBytes { raw in
                for verify in [false, true] {
                    guard let h = try? IPv4Header(parsing: raw, verifyChecksum: verify) else { continue }
                    #expect(h.headerLength >= 20 && h.headerLength <= h.totalLength && h.totalLength == raw.count)
                }
            }
        }
    }

    /// Segments offered as the pump offers them: what merges is one valid flow of segments
    /// whose checksums verify, its pieces add up, and the merged packet's IP header is sound.
    @Test func tcpCoalescer() {
        let coalescer = TCPCoalescer()
        Fuzz.run(
            "tcp-coalescer",
            generate: { rng in
                var seq: UInt32 = UInt32(truncatingIfNeeded: rng.next())
                var segments: [[UInt8]] = []
                for _ in 0..<(1 + Int(rng.next() % 24)) {
                    let s = Fuzz.segment(&rng, seq: seq)
                    seq &+= UInt32(max(0, s.count - 52))
                    segments.append(s)
                }
                return Fuzz.encode(segments)
            }
        ) { input in
            var buffers = Fuzz.records(input)
            var merged: [[UInt8]] = []
            func take() {
                let t = coalescer.take()
                let bytes = gathered(t)
                let packet = Array(bytes.dropFirst(VirtioNetHeader.size))
                #expect(packet.count >= 40 && Int(packet[2]) << 8 | Int(packet[3]) == packet.count)
                #expect(packet.withUnsafeBytes { InternetChecksum.referenceChecksum(UnsafeRawBufferPointer(rebasing: $0[0..<20])) } == 0)
                if t.count > 2 {
                    for segment in merged { #expect(tcpChecksum(segment) == UInt16(segment[36]) << 8 | UInt16(segment[37])) }
                }
                merged = []
            }
            for i in buffers.indices {
                let ok = buffers[i].withUnsafeMutableBytes { raw -> Bool in
                    guard (try? IPv4Header(parsing: UnsafeRawBufferPointer(raw), verifyChecksum: true)) != nil else { return true }
                    if coalescer.offer(raw.baseAddress!, raw.count) {
                        merged.append(Array(raw))
                        return true
                    }
                    if coalescer.count > 0 { take() }
                    if coalescer.offer(raw.baseAddress!, raw.count) { merged.append(Array(raw)) }
                    return true
                }
                #expect(ok)
            }
            if coalescer.count > 0 { take() }
            buffers.removeAll()
        }
    }

    @Test func icmpBuilder() {
        let base = Packets.ipv4(
            source: IPv4Address("198.18.1.1")!, destination: IPv4Address("198.18.9.9")!, protocolNumber: 1,
            payload: [8, 0, 0, 0, 0, 1, 0, 1] + Array(repeating: 7, count: 40))
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 16)
        defer { output.deallocate() }
        Fuzz.run("icmp-builder", generate: { rng in Fuzz.mutate(base, &rng) + [UInt8(rng.next() % 200)] }) { input in
            guard let room = input.last else { return }
            let packet = Array(input.dropLast())
            packet.withUnsafeBytes { raw in
                guard let header = try? IPv4Header(parsing: raw) else { return }
                let out = UnsafeMutableRawBufferPointer(rebasing: output[0..<Int(room)])
                let n = ICMPUnreachable.build(offending: raw, header: header, source: IPv4Address("198.18.1.0")!, into: out)
                #expect(n == 0 || (n <= out.count && n <= ICMPUnreachable.maximumLength))
                if n > 0 {
                    #expect((try? IPv4Header(parsing: UnsafeRawBufferPointer(rebasing: output[0..<n]), verifyChecksum: true)) != nil)
                }
            }
        }
    }

    /// The TSO segmenter on super-packets of any shape and segment size.
    @Test func tcpSegmenter() {
        let out = UnsafeMutableRawPointer.allocate(byteCount: 64 * 2048, alignment: 64)
        let lengths = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        defer {
            out.deallocate()
            lengths.deallocate()
        }
        Fuzz.run(
            "tcp-segmenter", iterations: Fuzz.iterations / 3,
            generate: { rng in
                var rng2 = rng
                let packet = Fuzz.mutate(tcpPacket(payload: [UInt8].random(count: Int(rng.next() % 9000), using: &rng2)), &rng)
                rng = rng2
                return [UInt8(rng.next() % 256), UInt8(rng.next() % 256)] + packet
            }
        ) { input in
            guard input.count >= 2 else { return }
            let mss = Int(input[0]) << 8 | Int(input[1])
            Array(input.dropFirst(2)).withUnsafeBytes { raw in
                guard let count = TCPSegmenter.segmentCount(raw, segmentSize: mss) else { return }
                let made = TCPSegmenter.split(raw, segmentSize: mss, output: out, stride: 2048, maxSegments: 64, lengths: lengths)
                #expect(made <= min(count, 64))
                for k in 0..<made { #expect(lengths[k] <= 2048) }
            }
        }
    }

    /// Whole engines over fakes: random GRO segment sizes on received messages (the split on
    /// the inbound path) and random virtio headers on TUN reads. Nothing crashes, and the
    /// engines still carry a valid packet afterwards.
    @Test func engineGROSplittingAndVirtioHeaders() throws {
        let pair = try FakePair(virtio: true, gso: true, gro: true)
        defer { pair.stop() }
        let valid = tcpPacket(
            payload: Array(repeating: 3, count: 600), source: IPv4Address("198.18.1.5")!, destination: IPv4Address("198.18.2.7")!)
        Fuzz.run(
            "engine-gro-virtio", iterations: max(50, Fuzz.iterations / 30),
            generate: { rng in
                var records: [[UInt8]] = []
                for _ in 0..<(1 + Int(rng.next() % 6)) {
                    var flow = [UInt8]()
                    for i in 0..<(1 + Int(rng.next() % 5)) {
                        flow += Fuzz.mutate(
                            tcpPacket(
                                payload: [UInt8].random(count: 100 + Int(rng.next() % 1300), using: &rng), seq: UInt32(i * 1400),
                                source: IPv4Address("198.18.1.5")!, destination: IPv4Address("198.18.2.7")!), &rng)
                    }
                    let segment = [0, 1, 7, 20, 40, 1400, 65535, Int(rng.next() % 3000)][Int(rng.next() % 8)]
                    records.append([UInt8(segment >> 8 & 0xFF), UInt8(segment & 0xFF)] + flow)
                    var virtio = [UInt8].random(count: VirtioNetHeader.size, using: &rng)
                    if rng.next() % 2 == 0 { virtio[1] = [0, 1, 3, 4, 0x81][Int(rng.next() % 5)] }
                    records.append(virtio + Fuzz.mutate(valid, &rng))
                }
                return Fuzz.encode(records)
            }
        ) { input in
            let records = Fuzz.records(input)
            for (i, r) in records.enumerated() {
                if i % 2 == 0, r.count >= 2 {
                    pair.socketB.enqueue(Array(r.dropFirst(2)), from: FakePair.addressA, port: 8285, groSegment: Int(r[0]) << 8 | Int(r[1]))
                } else {
                    pair.tunA.inject(r)
                }
            }
        }
        // Still alive: a valid packet crosses.
        let before = pair.tunB.written.count
        pair.tunA.injectPlain(valid)
        #expect(waitUntil { pair.tunB.written.count > before })
        #expect(pair.a.counters().failedThreads == 0 && pair.b.counters().failedThreads == 0)
    }
}
