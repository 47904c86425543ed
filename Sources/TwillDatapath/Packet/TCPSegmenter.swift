/// Splits the TCP/IPv4 and TCP/IPv6 super-packets a TUN with TSO hands over into MTU-sized
/// segments, as the kernel's GSO would, and finishes partial checksums.
///
/// Each segment gets a copy of the IP and TCP headers with its own total length, IP ID
/// (+i), header checksum (IPv6: its payload length; it has neither ID nor checksum),
/// sequence number (+i * MSS) and a full TCP checksum; FIN and PSH
/// stay on the last segment only and CWR on the first only. The header length comes from
/// the packet itself (IHL and the TCP data offset), never from the virtio header's
/// `hdr_len`, which is unreliable for forwarded traffic.
public enum TCPSegmenter {
    static let protocolTCP: UInt8 = 6

    /// The number of segments `packet` splits into with payloads of `segmentSize`, or nil if
    /// it is not a TCP packet (over IPv4, or IPv6 without extension headers) with a payload.
    @inline(__always)
    public static func segmentCount(_ packet: UnsafeRawBufferPointer, segmentSize: Int) -> Int? {
        guard segmentSize > 0, let headers = headerLengths(packet) else { return nil }
        let payload = packet.count - headers.ip - headers.tcp
        guard payload > 0 else { return nil }
        return (payload + segmentSize - 1) / segmentSize
    }

    /// IP and TCP header lengths of a TCP/IPv4 packet, or of a TCP/IPv6 packet without
    /// extension headers, whose headers lie inside it.
    @inline(__always)
    static func headerLengths(_ packet: UnsafeRawBufferPointer) -> (ip: Int, tcp: Int)? {
        guard packet.count >= 40, let p = packet.baseAddress else { return nil }
        if p.load(as: UInt8.self) >> 4 == 6 {
            guard packet.count >= 60, p.load(fromByteOffset: 6, as: UInt8.self) == protocolTCP else { return nil }
            let tcp = Int(p.load(fromByteOffset: 52, as: UInt8.self) >> 4) * 4
            guard tcp >= 20, packet.count >= 40 + tcp else { return nil }
            return (40, tcp)
        }
        let ip = Int(p.load(as: UInt8.self) & 0x0F) * 4
        guard ip >= 20, p.load(fromByteOffset: 9, as: UInt8.self) == protocolTCP, packet.count >= ip + 20 else { return nil }
        let tcp = Int(p.load(fromByteOffset: ip + 12, as: UInt8.self) >> 4) * 4
        guard tcp >= 20, packet.count >= ip + tcp else { return nil }
        return (ip, tcp)
    }

    /// Splits `packet` (one TCP/IPv4 super-packet, its IPv4 total length equal to its size)
    /// into segments of at most `segmentSize` payload bytes: segments `first ..< first + n`
    /// (n at most `maxSegments`) are written at `output`, `output + stride`, ... and their
    /// lengths to `lengths[0 ..< n]`. With `stride` equal to the full segment length the
    /// segments lie back to back, ready for one UDP_SEGMENT send. `room` (default: `stride`)
    /// is the most a segment may take: less when the caller needs space around it.
    ///
    /// - Returns: n, the number of segments written; 0 if the packet is not splittable.
    public static func split(
        _ packet: UnsafeRawBufferPointer, segmentSize: Int, first: Int = 0,
        output: UnsafeMutableRawPointer, stride: Int, room: Int? = nil, maxSegments: Int, lengths: UnsafeMutablePointer<Int>
    ) -> Int {
        guard let plan = Plan(packet, segmentSize: segmentSize, first: first, room: room ?? stride) else { return 0 }
        let count = min(plan.total, first + maxSegments)
        for i in first..<count {
            let segment = output + (i - first) * stride
            let (payload, chunk) = plan.payload(i)
            plan.writeHeader(
                i, chunk: chunk, payloadSum: InternetChecksum.sum(UnsafeRawBufferPointer(start: payload, count: chunk)),
                into: segment)
            (segment + plan.headers).copyMemory(from: payload, byteCount: chunk)
            lengths[i - first] = plan.headers + chunk
        }
        return count - first
    }

    /// Like ``split(_:segmentSize:first:output:stride:maxSegments:lengths:)`` without copying
    /// the payload: only each segment's IP and TCP headers are written (at `headers`,
    /// `headers + headerStride`, ...), their checksums computed over the payload where it
    /// lies in `packet`. Segment `first + k` is its header (h = IP + TCP header length,
    /// ``headerLengths(_:)``) followed by `lengths[k] - h` bytes of `packet` from offset
    /// `h + (first + k) * segmentSize`: the pieces of one gathered (iovec) send.
    ///
    /// - Returns: the number of segments whose headers were written; 0 if the packet is not
    ///   splittable or a header does not fit `headerStride`.
    public static func segmentHeaders(
        _ packet: UnsafeRawBufferPointer, segmentSize: Int, first: Int = 0,
        headers: UnsafeMutableRawPointer, headerStride: Int, maxSegments: Int, lengths: UnsafeMutablePointer<Int>
    ) -> Int {
        guard let plan = Plan(packet, segmentSize: segmentSize, first: first, room: headerStride + segmentSize),
            plan.headers <= headerStride
        else { return 0 }
        let count = min(plan.total, first + maxSegments)
        for i in first..<count {
            let (payload, chunk) = plan.payload(i)
            plan.writeHeader(
                i, chunk: chunk, payloadSum: InternetChecksum.sum(UnsafeRawBufferPointer(start: payload, count: chunk)),
                into: headers + (i - first) * headerStride)
            lengths[i - first] = plan.headers + chunk
        }
        return count - first
    }

    /// What every segment of one super-packet shares: header lengths, the first IP ID and
    /// sequence number, flags and the pseudo-header sum.
    private struct Plan {
        let source: UnsafeRawPointer
        let ipLength: Int
        let tcpLength: Int
        var headers: Int { ipLength + tcpLength }
        let segmentSize: Int
        let payloadLength: Int
        let total: Int
        let firstID: UInt16
        let firstSequence: UInt32
        let flags: UInt8
        /// Source and destination addresses and the protocol; the TCP length is per segment.
        let pseudo: UInt16
        let ipv6: Bool

        /// Nil unless `packet` is splittable from segment `first` and a segment fits `room`.
        @inline(__always)
        init?(_ packet: UnsafeRawBufferPointer, segmentSize: Int, first: Int, room: Int) {
            guard let (ipLength, tcpLength) = headerLengths(packet), let source = packet.baseAddress,
                let total = segmentCount(packet, segmentSize: segmentSize), first >= 0, first < total,
                ipLength + tcpLength + segmentSize <= room
            else { return nil }
            self.source = source
            self.ipLength = ipLength
            self.tcpLength = tcpLength
            self.segmentSize = segmentSize
            payloadLength = packet.count - ipLength - tcpLength
            self.total = total
            ipv6 = source.load(as: UInt8.self) >> 4 == 6
            firstID = ipv6 ? 0 : UInt16(bigEndian: source.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
            firstSequence = UInt32(bigEndian: source.loadUnaligned(fromByteOffset: ipLength + 4, as: UInt32.self))
            flags = source.load(fromByteOffset: ipLength + 13, as: UInt8.self)
            let addresses =
                ipv6 ? UnsafeRawBufferPointer(start: source + 8, count: 32) : UnsafeRawBufferPointer(start: source + 12, count: 8)
            pseudo = InternetChecksum.add(InternetChecksum.sum(addresses), UInt16(protocolTCP))
        }

        /// Segment `i`'s payload in the super-packet and its length.
        @inline(__always)
        func payload(_ i: Int) -> (UnsafeRawPointer, Int) {
            let offset = i * segmentSize
            return (source + headers + offset, min(segmentSize, payloadLength - offset))
        }

        /// Writes segment `i`'s IP and TCP headers at `segment`, given the one's complement
        /// sum of its `chunk` payload bytes (the payload itself is not touched: the TCP
        /// header starts at an even offset, so the sums simply add).
        @inline(__always)
        func writeHeader(_ i: Int, chunk: Int, payloadSum: UInt16, into segment: UnsafeMutableRawPointer) {
            segment.copyMemory(from: source, byteCount: headers)
            if ipv6 {
                // IPv6: the payload length only.
                segment.storeBytes(of: UInt16(tcpLength + chunk).bigEndian, toByteOffset: 4, as: UInt16.self)
            } else {
                // IPv4: length, ID, checksum.
                segment.storeBytes(of: UInt16(headers + chunk).bigEndian, toByteOffset: 2, as: UInt16.self)
                segment.storeBytes(of: (firstID &+ UInt16(truncatingIfNeeded: i)).bigEndian, toByteOffset: 4, as: UInt16.self)
                segment.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)
                let ipSum = InternetChecksum.checksum(UnsafeRawBufferPointer(start: segment, count: ipLength))
                segment.storeBytes(of: ipSum.bigEndian, toByteOffset: 10, as: UInt16.self)
            }
            // TCP: sequence, flags, checksum.
            let tcp = segment + ipLength
            tcp.storeBytes(
                of: (firstSequence &+ UInt32(truncatingIfNeeded: i * segmentSize)).bigEndian,
                toByteOffset: 4, as: UInt32.self)
            var segmentFlags = flags
            if i != total - 1 { segmentFlags &= ~0x09 } // FIN, PSH: last segment only
            if i != 0 { segmentFlags &= ~0x80 } // CWR: first segment only
            tcp.storeBytes(of: segmentFlags, toByteOffset: 13, as: UInt8.self)
            tcp.storeBytes(of: 0, toByteOffset: 16, as: UInt16.self)
            let tcpSum = InternetChecksum.add(
                InternetChecksum.add(pseudo, UInt16(tcpLength + chunk)),
                InternetChecksum.add(InternetChecksum.sum(UnsafeRawBufferPointer(start: tcp, count: tcpLength)), payloadSum))
            tcp.storeBytes(of: (~tcpSum).bigEndian, toByteOffset: 16, as: UInt16.self)
        }
    }

    /// Finishes a partial transport checksum (virtio `NEEDS_CSUM`): the field at
    /// `start + offset` holds the pseudo-header sum; the checksum is the inverted sum of
    /// everything from `start` on.
    ///
    /// - Returns: false if the offsets lie outside the packet.
    @inline(__always)
    public static func finishChecksum(_ packet: UnsafeMutableRawBufferPointer, start: Int, offset: Int) -> Bool {
        guard let p = packet.baseAddress, start >= 0, start + offset + 2 <= packet.count else { return false }
        let sum = InternetChecksum.sum(UnsafeRawBufferPointer(start: p + start, count: packet.count - start))
        var checksum = ~sum
        // UDP (checksum at offset 6) sends a computed 0 as 0xFFFF: 0 means "no checksum".
        if checksum == 0 && offset == 6 { checksum = 0xFFFF }
        p.storeBytes(of: checksum.bigEndian, toByteOffset: start + offset, as: UInt16.self)
        return true
    }
}
