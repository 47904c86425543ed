import TwillAddress

/// The ICMPv6 "destination unreachable, no route to destination" (type 1, code 0) the udp
/// engine writes back into the TUN when no peer's IPv6 subnet covers a destination: what
/// ``ICMPUnreachable`` is for IPv4 (flannel's udp has no IPv6; this is Twill's own).
///
/// Layout (RFC 4443 3.1): an IPv6 header (hop limit 8 as for IPv4, source the TUN's IPv6
/// address, destination the offender's source), the 8-byte ICMPv6 header, then as much of
/// the offending packet as keeps the message within the minimum IPv6 MTU, 1280 bytes.
public enum ICMPv6Unreachable {
    public static let type: UInt8 = 1
    public static let code: UInt8 = 0
    public static let hopLimit: UInt8 = 8
    /// The largest message (the IPv6 minimum MTU).
    public static let maximumLength = 1280

    /// Whether an offending packet may be answered: never an ICMPv6 error message (types
    /// below 128; no errors about errors, RFC 4443 2.4(e)), an ICMPv6 message too short to
    /// tell, nor a fragment other than the first. ICMPv6 informational messages (ping) are
    /// answered only with `answeringQueries`, as for IPv4. Packets from the unspecified or a
    /// multicast source are never answered.
    @inlinable
    public static func shouldAnswer(_ header: IPv6Header, packet: UnsafeRawBufferPointer, answeringQueries: Bool = true) -> Bool {
        // Nor packets to a multicast group (the kernel's own MLD and router solicitations on
        // the TUN, RFC 4443 2.4(e.3)).
        if header.source.isUnspecified || header.source.isMulticast || header.destination.isMulticast { return false }
        switch header.nextHeader {
        case IPv6Header.nextHeaderICMPv6:
            guard answeringQueries, packet.count > IPv6Header.length else { return false }
            return packet[IPv6Header.length] >= 128
        case IPv6Header.nextHeaderFragment:
            guard packet.count >= IPv6Header.length + 8 else { return false }
            let offset = UInt16(packet[IPv6Header.length + 2]) << 8 | UInt16(packet[IPv6Header.length + 3])
            return offset & 0xFFF8 == 0
        default:
            return true
        }
    }

    /// Writes the message about `offending` (already validated as `header`) into `output`.
    ///
    /// - Returns: the message length, or 0 when it is not to be answered or `output` is too short.
    @inlinable
    public static func build(
        offending: UnsafeRawBufferPointer, header: IPv6Header, source: IPv6Address,
        into output: UnsafeMutableRawBufferPointer, answeringQueries: Bool = true
    ) -> Int {
        guard shouldAnswer(header, packet: offending, answeringQueries: answeringQueries),
            let out = output.baseAddress, let inPtr = offending.baseAddress
        else { return 0 }
        let quoted = min(offending.count, maximumLength - IPv6Header.length - 8)
        let length = IPv6Header.length + 8 + quoted
        guard output.count >= length else { return 0 }
        out.storeBytes(of: UInt32(0x6000_0000).bigEndian, as: UInt32.self) // version 6, class 0, flow 0
        out.storeBytes(of: UInt16(8 + quoted).bigEndian, toByteOffset: 4, as: UInt16.self)
        out.storeBytes(of: IPv6Header.nextHeaderICMPv6, toByteOffset: 6, as: UInt8.self)
        out.storeBytes(of: hopLimit, toByteOffset: 7, as: UInt8.self)
        IPv6Header.store(source, out + 8)
        IPv6Header.store(header.source, out + 24)
        let icmp = out + IPv6Header.length
        icmp.storeBytes(of: type, as: UInt8.self)
        icmp.storeBytes(of: code, toByteOffset: 1, as: UInt8.self)
        icmp.storeBytes(of: 0, toByteOffset: 2, as: UInt16.self)
        icmp.storeBytes(of: 0, toByteOffset: 4, as: UInt32.self)
        (icmp + 8).copyMemory(from: inPtr, byteCount: quoted)
        let sum = InternetChecksum.add(
            IPv6Header.pseudoHeaderSum(out, upperLength: 8 + quoted, nextHeader: IPv6Header.nextHeaderICMPv6),
            InternetChecksum.sum(UnsafeRawBufferPointer(start: icmp, count: 8 + quoted)))
        icmp.storeBytes(of: (~sum).bigEndian, toByteOffset: 2, as: UInt16.self)
        return length
    }
}
