import TwillAddress

/// Builds the ICMP "destination unreachable, net unreachable" (type 3, code 0) that
/// flannel's udp backend writes back into the TUN when no peer subnet covers a destination.
///
/// Layout as flannel: a 20-byte IPv4 header (TOS 0, ID 0, no fragment flags, TTL 8,
/// protocol ICMP, source = the TUN address, destination = the offender's source), an 8-byte
/// ICMP header (type 3, code 0, unused 0), then the offending packet's IP header and the
/// first 8 bytes of its payload (RFC 792), fewer if the packet is shorter.
public enum ICMPUnreachable {
    /// ICMP type: destination unreachable.
    public static let type: UInt8 = 3
    /// ICMP code: net unreachable.
    public static let code: UInt8 = 0
    /// The TTL flannel gives the message.
    public static let ttl: UInt8 = 8
    /// The largest message: 20 + 8 + a 60-byte offending header + 8.
    public static let maximumLength = 20 + 8 + 60 + 8

    /// Whether an offending packet may be answered.
    ///
    /// Never a non-first fragment (it has no transport header to quote) and never an ICMP
    /// error message or an ICMP packet too short to tell (no errors about errors, RFC 1122
    /// 3.2.2 / RFC 1812 4.3.2.7). flannel goes further and answers no ICMP packet at all, so
    /// a `ping` to a subnet nobody leases just times out; with `answeringQueries` (Twill's
    /// default) ICMP queries (echo, timestamp, information, address mask) are answered, so
    /// `ping` reports "Destination Net Unreachable". Pass false for flannel's exact rule.
    @inlinable
    public static func shouldAnswer(
        _ header: IPv4Header, packet: UnsafeRawBufferPointer,
        answeringQueries: Bool = true
    ) -> Bool {
        guard header.isFirstFragment else { return false }
        guard header.protocolNumber == IPv4Header.protocolICMP else { return true }
        guard answeringQueries, packet.count > header.headerLength else { return false }
        switch packet[header.headerLength] {
        case 0, 8, 13, 14, 15, 16, 17, 18: return true // echo reply/request, timestamp, info, mask
        default: return false
        }
    }

    /// Writes the message about `offending` (already validated as `header`) into `output`.
    ///
    /// - Returns: the message length, or 0 when ``shouldAnswer(_:packet:answeringQueries:)`` says no or `output` is
    ///   shorter than the message.
    @inlinable
    public static func build(
        offending: UnsafeRawBufferPointer, header: IPv4Header, source: IPv4Address,
        into output: UnsafeMutableRawBufferPointer, answeringQueries: Bool = true
    ) -> Int {
        guard shouldAnswer(header, packet: offending, answeringQueries: answeringQueries), let out = output.baseAddress,
            let inPtr = offending.baseAddress
        else { return 0 }
        let quoted = min(header.headerLength + 8, offending.count)
        let length = 28 + quoted
        guard output.count >= length else { return 0 }
        // IPv4 header.
        out.storeBytes(of: 0x45, toByteOffset: 0, as: UInt8.self)
        out.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
        out.storeBytes(of: UInt16(length).bigEndian, toByteOffset: 2, as: UInt16.self)
        out.storeBytes(of: 0, toByteOffset: 4, as: UInt32.self) // ID 0, flags/offset 0
        out.storeBytes(of: ttl, toByteOffset: 8, as: UInt8.self)
        out.storeBytes(of: IPv4Header.protocolICMP, toByteOffset: 9, as: UInt8.self)
        out.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)
        out.storeBytes(of: source.rawValue.bigEndian, toByteOffset: 12, as: UInt32.self)
        out.storeBytes(of: header.source.rawValue.bigEndian, toByteOffset: 16, as: UInt32.self)
        let ipSum = InternetChecksum.checksum(UnsafeRawBufferPointer(start: out, count: 20))
        out.storeBytes(of: ipSum.bigEndian, toByteOffset: 10, as: UInt16.self)
        // ICMP header and the quoted offender.
        let icmp = out + 20
        icmp.storeBytes(of: type, toByteOffset: 0, as: UInt8.self)
        icmp.storeBytes(of: code, toByteOffset: 1, as: UInt8.self)
        icmp.storeBytes(of: 0, toByteOffset: 2, as: UInt16.self)
        icmp.storeBytes(of: 0, toByteOffset: 4, as: UInt32.self)
        (icmp + 8).copyMemory(from: inPtr, byteCount: quoted)
        let icmpSum = InternetChecksum.checksum(UnsafeRawBufferPointer(start: icmp, count: 8 + quoted))
        icmp.storeBytes(of: icmpSum.bigEndian, toByteOffset: 2, as: UInt16.self)
        return length
    }
}
