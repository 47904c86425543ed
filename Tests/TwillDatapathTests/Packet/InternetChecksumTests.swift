import Testing
import TwillAddress

@testable import TwillDatapath

@Suite("InternetChecksum")
struct InternetChecksumTests {
    @Test("RFC 1071 section 3 example sums to 0xDDF2")
    func rfc1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        bytes.withUnsafeBytes { raw in
            #expect(InternetChecksum.sum(raw) == 0xDDF2)
            #expect(InternetChecksum.checksum(raw) == 0x220D)
            #expect(InternetChecksum.referenceChecksum(raw) == 0x220D)
        }
    }

    @Test("a known IPv4 header has checksum 0xB861 and verifies to zero")
    func knownHeader() {
        var header: [UInt8] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
            0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0xC7,
        ]
        #expect(header.withUnsafeBytes { InternetChecksum.checksum($0) } == 0xB861)
        header[10] = 0xB8
        header[11] = 0x61
        #expect(header.withUnsafeBytes { InternetChecksum.checksum($0) } == 0)
    }

    @Test("odd lengths pad the last byte as a high-order byte")
    func oddLength() {
        #expect([UInt8(0xAB)].withUnsafeBytes { InternetChecksum.sum($0) } == 0xAB00)
        #expect([UInt8]([0x01, 0x02, 0x03]).withUnsafeBytes { InternetChecksum.sum($0) } == 0x0402)
        #expect([UInt8]().withUnsafeBytes { InternetChecksum.checksum($0) } == 0xFFFF)
    }

    @Test("the SIMD and 64-bit sums equal the reference on random inputs, lengths and alignments")
    func randomAgainstReference() {
        var rng = SplitMix64(seed: 0x7157_1071)
        for round in 0..<3000 {
            let length = round < 200 ? round : Int.random(in: 0...3000, using: &rng)
            let offset = Int.random(in: 0...7, using: &rng)
            var bytes = [UInt8].random(count: length + offset, using: &rng)
            if round % 7 == 0 { for i in bytes.indices { bytes[i] = 0xFF } } // carry-heavy
            bytes.withUnsafeBytes { all in
                let slice = UnsafeRawBufferPointer(rebasing: all[offset...])
                #expect(
                    InternetChecksum.checksum(slice) == InternetChecksum.referenceChecksum(slice),
                    "length \(length) offset \(offset)")
            }
        }
    }

    @Test("SIMD lanes are folded before they can overflow: long all-ones and random buffers")
    func longBuffers() {
        // All 0xFF grows every 32-bit lane fastest; past simdBlockLimit steps a lane would wrap.
        let limitBytes = InternetChecksum.simdBlockLimit * 64
        var rng = SplitMix64(seed: 0x5EED_0064)
        for length in [limitBytes - 1, limitBytes, limitBytes + 1, 2 * limitBytes + 64 * 3 + 5] {
            let ones = [UInt8](repeating: 0xFF, count: length)
            ones.withUnsafeBytes { #expect(InternetChecksum.checksum($0) == InternetChecksum.referenceChecksum($0), "ones \(length)") }
            let random = [UInt8].random(count: length, using: &rng)
            random.withUnsafeBytes { #expect(InternetChecksum.checksum($0) == InternetChecksum.referenceChecksum($0), "random \(length)") }
        }
    }

    @Test("RFC 1624 incremental update equals full recomputation for a TTL decrement (known vectors)")
    func incrementalKnownVectors() {
        // (header with correct checksum, expected checksum after TTL-1)
        for ttl: UInt8 in [64, 2, 255, 128, 1 + 1] {
            var packet = Packets.ipv4(source: IPv4Address(198, 18, 1, 1), destination: IPv4Address(198, 18, 2, 1), ttl: ttl)
            var expected = packet
            expected[8] = ttl - 1
            expected[10] = 0
            expected[11] = 0
            let full = expected[0..<20].withUnsafeBytes { InternetChecksum.checksum($0) }
            let ok = packet.withUnsafeMutableBytes { IPv4Header.decrementTTL($0.baseAddress!) }
            #expect(ok)
            #expect(packet[8] == ttl - 1)
            #expect(UInt16(packet[10]) << 8 | UInt16(packet[11]) == full)
            #expect(packet[0..<20].withUnsafeBytes { InternetChecksum.checksum($0) } == 0)
        }
        // RFC 1624 section 4 example: HC 0xDD2F, m 0x5555 -> m' 0x3285 gives 0x0000.
        #expect(InternetChecksum.update(0xDD2F, old: 0x5555, new: 0x3285) == 0x0000)
    }

    @Test("RFC 1624 incremental update equals full recomputation on random headers")
    func incrementalRandom() {
        var rng = SplitMix64(seed: 1624)
        for _ in 0..<20000 {
            var header = [UInt8].random(count: 20, using: &rng)
            header[0] = 0x45
            header[8] = UInt8.random(in: 2...255, using: &rng)
            header[10] = 0
            header[11] = 0
            let sum = header.withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
            header[10] = UInt8(sum >> 8)
            header[11] = UInt8(sum & 0xFF)
            var recomputed = header
            recomputed[8] -= 1
            recomputed[10] = 0
            recomputed[11] = 0
            let full = recomputed.withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
            #expect(header.withUnsafeMutableBytes { IPv4Header.decrementTTL($0.baseAddress!) })
            #expect(UInt16(header[10]) << 8 | UInt16(header[11]) == full)
        }
    }
}
