/// Splits the TCP/IPv4 super-packets a TUN with TSO hands over into MTU-sized segments, as
/// the kernel's GSO would, and finishes partial checksums.
///
/// Each segment gets a copy of the IP and TCP headers with its own total length, IP ID
/// (+i), header checksum, sequence number (+i * MSS) and a full TCP checksum; FIN and PSH
/// stay on the last segment only and CWR on the first only. The header length comes from
/// the packet itself (IHL and the TCP data offset), never from the virtio header's
/// `hdr_len`, which is unreliable for forwarded traffic.
public enum TCPSegmenter {
    static let protocolTCP: UInt8 = 6

    /// The number of segments `packet` splits into with payloads of `segmentSize`, or nil if
    /// it is not a TCP/IPv4 packet with a payload.
    @inline(__always)
    public static func segmentCount(_ packet: UnsafeRawBufferPointer, segmentSize: Int) -> Int? {
        guard segmentSize > 0, let headers = headerLengths(packet) else { return nil }
        let payload = packet.count - headers.ip - headers.tcp
        guard payload > 0 else { return nil }
        return (payload + segmentSize - 1) / segmentSize
    }

    /// IP and TCP header lengths of a TCP/IPv4 packet whose headers lie inside it.
    @inline(__always)
    static func headerLengths(_ packet: UnsafeRawBufferPointer) -> (ip: Int, tcp: Int)? {
        guard packet.count >= 40, let p = packet.baseAddress else { return nil }
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
    /// segments lie back to back, ready for one UDP_SEGMENT send.
    ///
    /// - Returns: n, the number of segments written; 0 if the packet is not splittable.
    public static func split(
        _ packet: UnsafeRawBufferPointer, segmentSize: Int, first: Int = 0,
        output: UnsafeMutableRawPointer, stride: Int, maxSegments: Int, lengths: UnsafeMutablePointer<Int>
    ) -> Int {
        guard let (ipLength, tcpLength) = headerLengths(packet), let source = packet.baseAddress,
              let total = segmentCount(packet, segmentSize: segmentSize), first >= 0, first < total,
              ipLength + tcpLength + segmentSize <= stride else { return 0 }
        let count = min(total, first + maxSegments)
        let headers = ipLength + tcpLength
        let payload = packet.count - headers
        let firstID = UInt16(bigEndian: source.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        let firstSeq = UInt32(bigEndian: source.loadUnaligned(fromByteOffset: ipLength + 4, as: UInt32.self))
        let flags = source.load(fromByteOffset: ipLength + 13, as: UInt8.self)
        // Pseudo-header: source and destination addresses and the protocol; the TCP length
        // is added per segment.
        let pseudo = InternetChecksum.add(
            InternetChecksum.sum(UnsafeRawBufferPointer(start: source + 12, count: 8)), UInt16(protocolTCP))
        for i in first..<count {
            let segment = output + (i - first) * stride
            let offset = i * segmentSize
            let chunk = min(segmentSize, payload - offset)
            segment.copyMemory(from: source, byteCount: headers)
            (segment + headers).copyMemory(from: source + headers + offset, byteCount: chunk)
            let segmentLength = headers + chunk
            lengths[i - first] = segmentLength
            // IPv4: length, ID, checksum.
            segment.storeBytes(of: UInt16(segmentLength).bigEndian, toByteOffset: 2, as: UInt16.self)
            segment.storeBytes(of: (firstID &+ UInt16(truncatingIfNeeded: i)).bigEndian, toByteOffset: 4, as: UInt16.self)
            segment.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)
            let ipSum = InternetChecksum.checksum(UnsafeRawBufferPointer(start: segment, count: ipLength))
            segment.storeBytes(of: ipSum.bigEndian, toByteOffset: 10, as: UInt16.self)
            // TCP: sequence, flags, checksum.
            let tcp = segment + ipLength
            tcp.storeBytes(of: (firstSeq &+ UInt32(truncatingIfNeeded: offset)).bigEndian, toByteOffset: 4, as: UInt32.self)
            var segmentFlags = flags
            if i != total - 1 { segmentFlags &= ~0x09 }  // FIN, PSH: last segment only
            if i != 0 { segmentFlags &= ~0x80 }  // CWR: first segment only
            tcp.storeBytes(of: segmentFlags, toByteOffset: 13, as: UInt8.self)
            tcp.storeBytes(of: 0, toByteOffset: 16, as: UInt16.self)
            let tcpSum = InternetChecksum.add(
                InternetChecksum.add(pseudo, UInt16(tcpLength + chunk)),
                InternetChecksum.sum(UnsafeRawBufferPointer(start: tcp, count: tcpLength + chunk)))
            tcp.storeBytes(of: (~tcpSum).bigEndian, toByteOffset: 16, as: UInt16.self)
        }
        return count - first
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
