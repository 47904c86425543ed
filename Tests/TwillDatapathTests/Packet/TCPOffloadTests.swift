import Testing
import TwillAddress

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

/// A TCP/IPv4 packet for the offload tests: IP ID 0x0100, DF, TTL 64; TCP with a 12-byte
/// timestamp option block, ACK plus `flags`.
func tcpPacket(
    payload: [UInt8], seq: UInt32 = 1_000_000, flags: UInt8 = 0x10, sourcePort: UInt16 = 40000,
    window: UInt16 = 512, ttl: UInt8 = 64, destinationPort: UInt16 = 5201,
    source: IPv4Address = IPv4Address(198, 18, 1, 1), destination: IPv4Address = IPv4Address(198, 18, 2, 1)
) -> [UInt8] {
    let options: [UInt8] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
    var tcp: [UInt8] = [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8), UInt8(destinationPort & 0xFF)]
    tcp += [UInt8(seq >> 24), UInt8(seq >> 16 & 0xFF), UInt8(seq >> 8 & 0xFF), UInt8(seq & 0xFF)]
    tcp += [0, 0, 0x30, 0x39, UInt8((20 + options.count) / 4) << 4, flags, UInt8(window >> 8), UInt8(window & 0xFF), 0, 0, 0, 0]
    tcp += options
    var ip = Packets.ipv4(
        source: source, destination: destination, ttl: ttl,
        protocolNumber: 6, payload: tcp + payload, identification: 0x0100)
    ip[6] = 0x40 // DF
    ip[10] = 0
    ip[11] = 0
    let ipSum = ip[0..<20].withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
    ip[10] = UInt8(ipSum >> 8)
    ip[11] = UInt8(ipSum & 0xFF)
    let tcpSum = tcpChecksum(ip)
    ip[36] = UInt8(tcpSum >> 8)
    ip[37] = UInt8(tcpSum & 0xFF)
    return ip
}

/// The TCP checksum of an IPv4 packet computed from scratch (checksum field taken as 0).
func tcpChecksum(_ packet: [UInt8]) -> UInt16 {
    let ihl = Int(packet[0] & 0x0F) * 4
    var segment = Array(packet[ihl...])
    segment[16] = 0
    segment[17] = 0
    let pseudo = Array(packet[12..<20]) + [0, 6, UInt8(segment.count >> 8), UInt8(segment.count & 0xFF)]
    return (pseudo + segment).withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
}

/// The bytes a writev of `pieces` would write, checked against the byte count given with them.
func gathered(_ take: (pieces: UnsafeMutablePointer<iovec>, count: Int, bytes: Int)) -> [UInt8] {
    var bytes: [UInt8] = []
    for i in 0..<take.count {
        bytes += UnsafeRawBufferPointer(start: take.pieces[i].iov_base, count: take.pieces[i].iov_len)
    }
    #expect(bytes.count == take.bytes)
    return bytes
}

@Suite("TCP offloads (segmenter, coalescer)")
struct TCPOffloadTests {
    func split(_ packet: [UInt8], mss: Int, first: Int = 0, max: Int = 128, backToBack: Bool = false) -> [[UInt8]] {
        let stride = backToBack ? 20 + 32 + mss : 2048
        let out = UnsafeMutableRawPointer.allocate(byteCount: stride * 128, alignment: 16)
        defer { out.deallocate() }
        let lengths = UnsafeMutablePointer<Int>.allocate(capacity: 128)
        defer { lengths.deallocate() }
        let n = packet.withUnsafeBytes {
            TCPSegmenter.split($0, segmentSize: mss, first: first, output: out, stride: stride, maxSegments: max, lengths: lengths)
        }
        return (0..<n).map { Array(UnsafeRawBufferPointer(start: out + $0 * stride, count: lengths[$0])) }
    }

    @Test("a super-packet splits into valid segments: lengths, IDs, sequence numbers, flags, checksums")
    func segmentation() throws {
        var rng = SplitMix64(seed: 6)
        let payload = [UInt8].random(count: 5000, using: &rng)
        let superPacket = tcpPacket(payload: payload, flags: 0x10 | 0x08 | 0x01 | 0x80) // ACK PSH FIN CWR
        #expect(superPacket.withUnsafeBytes { TCPSegmenter.segmentCount($0, segmentSize: 1400) } == 4)
        let segments = split(superPacket, mss: 1400)
        #expect(segments.map(\.count) == [1452, 1452, 1452, 852])
        var joined: [UInt8] = []
        for (i, segment) in segments.enumerated() {
            let header = try segment.withUnsafeBytes { try IPv4Header(parsing: $0, verifyChecksum: true) }
            #expect(header.totalLength == segment.count)
            #expect(UInt16(segment[4]) << 8 | UInt16(segment[5]) == 0x0100 + UInt16(i))
            let seq = UInt32(segment[24]) << 24 | UInt32(segment[25]) << 16 | UInt32(segment[26]) << 8 | UInt32(segment[27])
            #expect(seq == 1_000_000 + UInt32(i * 1400))
            let flags = segment[33]
            #expect(flags & 0x10 != 0)
            #expect((flags & 0x09 != 0) == (i == 3), "FIN/PSH on the last segment only")
            #expect((flags & 0x80 != 0) == (i == 0), "CWR on the first segment only")
            #expect(UInt16(segment[36]) << 8 | UInt16(segment[37]) == tcpChecksum(segment))
            #expect(
                Array(segment[20..<52].enumerated().filter { ![4, 5, 6, 7, 13, 16, 17].contains($0.offset) }.map(\.element))
                    == Array(superPacket[20..<52].enumerated().filter { ![4, 5, 6, 7, 13, 16, 17].contains($0.offset) }.map(\.element)))
            joined += segment[52...]
        }
        #expect(joined == payload)
    }

    @Test("back-to-back partial splits (for UDP_SEGMENT) equal the full split")
    func partialSplits() {
        var rng = SplitMix64(seed: 7)
        let superPacket = tcpPacket(payload: [UInt8].random(count: 20_000, using: &rng))
        let whole = split(superPacket, mss: 1420)
        #expect(whole.count == 15)
        let parts =
            split(superPacket, mss: 1420, first: 0, max: 6, backToBack: true)
            + split(superPacket, mss: 1420, first: 6, max: 6, backToBack: true)
            + split(superPacket, mss: 1420, first: 12, max: 6, backToBack: true)
        #expect(parts == whole)
        #expect(split(superPacket, mss: 1420, first: 15).isEmpty)
    }

    @Test("gathered segments (headers written, payload in place) equal the copied split, for many sizes")
    func gatheredSegments() {
        var rng = SplitMix64(seed: 10)
        let headerStride = 128
        let headers = UnsafeMutableRawPointer.allocate(byteCount: headerStride * 64, alignment: 16)
        defer { headers.deallocate() }
        let lengths = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        defer { lengths.deallocate() }
        for (payloadLength, mss) in [
            (1, 1400), (1399, 1400), (1400, 1400), (1401, 1400), (5000, 1400), (20_000, 1420),
            (9_999, 537), (64_000, 1448), (777, 1),
        ] {
            let superPacket = tcpPacket(payload: [UInt8].random(count: payloadLength, using: &rng), flags: 0x10 | 0x08 | 0x80)
            let copied = split(superPacket, mss: mss)
            var gathered: [[UInt8]] = []
            var first = 0
            while first < copied.count {
                let made = superPacket.withUnsafeBytes {
                    TCPSegmenter.segmentHeaders(
                        $0, segmentSize: mss, first: first, headers: headers,
                        headerStride: headerStride, maxSegments: 64, lengths: lengths)
                }
                #expect(made > 0)
                if made == 0 { break }
                for k in 0..<made {
                    let header = Array(UnsafeRawBufferPointer(start: headers + k * headerStride, count: 52))
                    let offset = 52 + (first + k) * mss
                    gathered.append(header + superPacket[offset..<(offset + lengths[k] - 52)])
                }
                first += made
            }
            #expect(gathered == copied, "payload \(payloadLength), MSS \(mss)")
        }
        // A header longer than the stride is refused, not overrun.
        let packet = tcpPacket(payload: [UInt8](repeating: 1, count: 3000))
        #expect(
            packet.withUnsafeBytes {
                TCPSegmenter.segmentHeaders($0, segmentSize: 1400, headers: headers, headerStride: 40, maxSegments: 64, lengths: lengths)
            } == 0)
    }

    @Test("non-TCP or empty packets do not split")
    func notSplittable() {
        let udp = Packets.ipv4(
            source: IPv4Address(198, 18, 1, 1), destination: IPv4Address(198, 18, 2, 1), payload: Array(repeating: 0, count: 3000))
        #expect(udp.withUnsafeBytes { TCPSegmenter.segmentCount($0, segmentSize: 1400) } == nil)
        let empty = tcpPacket(payload: [])
        #expect(empty.withUnsafeBytes { TCPSegmenter.segmentCount($0, segmentSize: 1400) } == nil)
        #expect(split(empty, mss: 1400).isEmpty)
    }

    @Test("a partial checksum (NEEDS_CSUM) is finished to the full checksum")
    func finishChecksum() {
        var rng = SplitMix64(seed: 8)
        for length in [1, 2, 17, 400, 1401] {
            var packet = tcpPacket(payload: [UInt8].random(count: length, using: &rng))
            let expected = tcpChecksum(packet)
            // The kernel leaves the pseudo-header sum (not inverted) in the field.
            let tcpLength = packet.count - 20
            let pseudo = (Array(packet[12..<20]) + [0, 6, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xFF)]).withUnsafeBytes {
                InternetChecksum.sum($0)
            }
            packet[36] = UInt8(pseudo >> 8)
            packet[37] = UInt8(pseudo & 0xFF)
            #expect(packet.withUnsafeMutableBytes { TCPSegmenter.finishChecksum($0, start: 20, offset: 16) })
            #expect(UInt16(packet[36]) << 8 | UInt16(packet[37]) == expected)
        }
        var short = [UInt8](repeating: 0, count: 30)
        #expect(!short.withUnsafeMutableBytes { TCPSegmenter.finishChecksum($0, start: 20, offset: 16) })
    }

    @Test("virtio header round-trips in native byte order")
    func virtioHeader() {
        let header = VirtioNetHeader(flags: 1, gsoType: 1, headerLength: 52, gsoSize: 1400, checksumStart: 20, checksumOffset: 16)
        var bytes = [UInt8](repeating: 0, count: 10)
        bytes.withUnsafeMutableBytes { header.write(to: $0.baseAddress!) }
        #expect(bytes == [1, 1, 52, 0, 0x78, 0x05, 20, 0, 16, 0])
        #expect(bytes.withUnsafeBytes { VirtioNetHeader(reading: $0.baseAddress!) } == header)
    }

    @Test("segments coalesce back into one GSO super-packet")
    func coalesceRoundTrip() throws {
        var rng = SplitMix64(seed: 9)
        let payload = [UInt8].random(count: 6000, using: &rng)
        let superPacket = tcpPacket(payload: payload, flags: 0x18)
        let segments = split(superPacket, mss: 1400)
        let coalescer = TCPCoalescer()
        for segment in segments {
            #expect(segment.withUnsafeBytes { coalescer.offer($0.baseAddress!, $0.count) })
        }
        #expect(coalescer.count == 5)
        let bytes = gathered(coalescer.take())
        let virtio = bytes.withUnsafeBytes { VirtioNetHeader(reading: $0.baseAddress!) }
        #expect(virtio == VirtioNetHeader(flags: 1, gsoType: 1, headerLength: 52, gsoSize: 1400, checksumStart: 20, checksumOffset: 16))
        let merged = Array(bytes[10...])
        #expect(merged.count == superPacket.count)
        let header = try merged.withUnsafeBytes { try IPv4Header(parsing: $0, verifyChecksum: true) }
        #expect(header.totalLength == superPacket.count)
        #expect(Array(merged[52...]) == payload)
        #expect(Array(merged[24..<28]) == Array(superPacket[24..<28]), "first sequence number")
        #expect(merged[33] == 0x18, "PSH from the last segment")
        // The checksum field holds the pseudo-header sum for the kernel to finish.
        let tcpLength = merged.count - 20
        let pseudo = (Array(merged[12..<20]) + [0, 6, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xFF)]).withUnsafeBytes {
            InternetChecksum.sum($0)
        }
        #expect(UInt16(merged[36]) << 8 | UInt16(merged[37]) == pseudo)
        #expect(coalescer.count == 0)
    }

    @Test("a lone segment is written as it is, with an all-zero virtio header")
    func loneSegment() {
        let packet = tcpPacket(payload: Array(repeating: 3, count: 100))
        let coalescer = TCPCoalescer()
        #expect(packet.withUnsafeBytes { coalescer.offer($0.baseAddress!, $0.count) })
        let bytes = gathered(coalescer.take())
        #expect(Array(bytes[0..<10]) == Array(repeating: 0, count: 10))
        #expect(Array(bytes[10...]) == packet)
    }

    @Test("what must not merge: other flows, gaps, after a short or PSH segment, other flags, IP options, fragments")
    func refusals() {
        func offers(_ packets: [[UInt8]]) -> [Bool] {
            let coalescer = TCPCoalescer()
            return packets.map { p in p.withUnsafeBytes { coalescer.offer($0.baseAddress!, $0.count) } }
        }
        let data = [UInt8](repeating: 1, count: 1000)
        let first = tcpPacket(payload: data, seq: 0)
        #expect(offers([first, tcpPacket(payload: data, seq: 1000)]) == [true, true])
        #expect(offers([first, tcpPacket(payload: data, seq: 1000, sourcePort: 40001)]) == [true, false])
        #expect(offers([first, tcpPacket(payload: data, seq: 1001)]) == [true, false])
        #expect(offers([first, tcpPacket(payload: data, seq: 1000, window: 513)]) == [true, false])
        #expect(offers([first, tcpPacket(payload: data, seq: 1000, ttl: 63)]) == [true, false])
        #expect(offers([first, tcpPacket(payload: data + [1], seq: 1000)]) == [true, false], "longer than the first")
        #expect(
            offers([
                tcpPacket(payload: Array(data[0..<500]), seq: 0), tcpPacket(payload: Array(data[0..<500]), seq: 500),
                tcpPacket(payload: Array(data[0..<400]), seq: 1000), tcpPacket(payload: Array(data[0..<400]), seq: 1400),
            ])
                == [true, true, true, false], "a short segment closes the packet")
        #expect(offers([tcpPacket(payload: data, seq: 0, flags: 0x18), tcpPacket(payload: data, seq: 1000)]) == [true, false])
        #expect(offers([tcpPacket(payload: data, flags: 0x02)]) == [false], "SYN")
        #expect(offers([tcpPacket(payload: data, flags: 0x11)]) == [false], "FIN")
        #expect(offers([tcpPacket(payload: [])]) == [false], "no payload")
        var withOptions = Packets.ipv4(
            source: IPv4Address(198, 18, 1, 1), destination: IPv4Address(198, 18, 2, 1), protocolNumber: 6,
            payload: Array(first[20...]), options: [1, 1, 1, 0])
        #expect(offers([withOptions]) == [false])
        withOptions = first
        withOptions[6] = 0x20 // MF
        #expect(offers([withOptions]) == [false])
    }
}
