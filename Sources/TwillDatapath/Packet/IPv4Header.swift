import TwillAddress

/// The fields of an IPv4 header the udp engine needs, read from a packet after validation.
///
/// Parsing checks exactly what makes the rest of the engine's reads safe and the packet
/// worth forwarding: version 4, a header length of at least 20 bytes that lies inside the
/// buffer, and a total length equal to the buffer's length (TUN reads and UDP datagrams both
/// carry exactly one packet, so anything else is corrupt or hostile).
public struct IPv4Header: Sendable, Equatable {
    /// Why a buffer is not a well-formed IPv4 packet.
    public enum Rejection: Error, Sendable, Equatable, CaseIterable, CustomStringConvertible {
        /// Fewer than 20 bytes: not even a minimal header.
        case tooShort
        /// The version nibble is not 4.
        case notVersion4
        /// IHL below 5 (a header shorter than 20 bytes).
        case headerLengthTooSmall
        /// IHL says the header extends past the end of the buffer.
        case headerBeyondBuffer
        /// The total length field differs from the buffer's length, or is below the header length.
        case totalLengthMismatch
        /// The header checksum is wrong (only checked when asked).
        case badHeaderChecksum

        public var description: String {
            switch self {
            case .tooShort: "shorter than an IPv4 header"
            case .notVersion4: "version is not 4"
            case .headerLengthTooSmall: "header length below 20 bytes"
            case .headerBeyondBuffer: "header extends past the packet"
            case .totalLengthMismatch: "total length does not match the packet"
            case .badHeaderChecksum: "bad header checksum"
            }
        }
    }

    /// Offset of the TTL byte; the TTL and protocol form the 16-bit word at offset 8.
    public static let ttlOffset = 8
    /// Offset of the header checksum.
    public static let checksumOffset = 10
    /// The IP protocol number of ICMP.
    public static let protocolICMP: UInt8 = 1

    /// Header length in bytes (IHL * 4).
    public var headerLength: Int
    /// The total length field: header plus payload, in bytes.
    public var totalLength: Int
    /// Time to live.
    public var ttl: UInt8
    /// The protocol number (1 ICMP, 6 TCP, 17 UDP...).
    public var protocolNumber: UInt8
    /// The fragment offset in 8-byte units (flags masked off).
    public var fragmentOffset: UInt16
    public var source: IPv4Address
    public var destination: IPv4Address

    /// Whether this is an unfragmented packet or the first fragment of one.
    public var isFirstFragment: Bool { fragmentOffset == 0 }

    /// Validates and reads the header at the start of `packet`, whose length must be the
    /// packet's exact length.
    ///
    /// - Parameter verifyChecksum: also reject a wrong header checksum (costs one sum over
    ///   the header; worth it for packets from the network, not for the kernel's own).
    @inlinable
    public init(parsing packet: UnsafeRawBufferPointer, verifyChecksum: Bool = false) throws(Rejection) {
        guard packet.count >= 20, let p = packet.baseAddress else { throw .tooShort }
        let first = p.load(as: UInt8.self)
        guard first >> 4 == 4 else { throw .notVersion4 }
        let ihl = Int(first & 0x0F) * 4
        guard ihl >= 20 else { throw .headerLengthTooSmall }
        guard ihl <= packet.count else { throw .headerBeyondBuffer }
        let total = Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
        guard total == packet.count, total >= ihl else { throw .totalLengthMismatch }
        if verifyChecksum,
            InternetChecksum.sum(UnsafeRawBufferPointer(start: p, count: ihl)) != 0xFFFF
        {
            throw .badHeaderChecksum
        }
        headerLength = ihl
        totalLength = total
        ttl = p.load(fromByteOffset: 8, as: UInt8.self)
        protocolNumber = p.load(fromByteOffset: 9, as: UInt8.self)
        fragmentOffset = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self)) & 0x1FFF
        source = IPv4Address(rawValue: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        destination = IPv4Address(rawValue: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
    }

    /// Decrements the TTL of the IPv4 packet at `packet` and patches the header checksum
    /// incrementally (RFC 1624), as a router does.
    ///
    /// - Returns: false, leaving the packet untouched, when the TTL is 0 or 1: decrementing
    ///   would reach 0 and the packet must be dropped (flannel drops at 0 too; a TTL of 0 on
    ///   arrival is treated the same instead of wrapping to 255).
    @inlinable @inline(__always)
    public static func decrementTTL(_ packet: UnsafeMutableRawPointer) -> Bool {
        let ttl = packet.load(fromByteOffset: ttlOffset, as: UInt8.self)
        guard ttl > 1 else { return false }
        let proto = packet.load(fromByteOffset: ttlOffset + 1, as: UInt8.self)
        let old = UInt16(ttl) << 8 | UInt16(proto)
        let checksum = UInt16(bigEndian: packet.loadUnaligned(fromByteOffset: checksumOffset, as: UInt16.self))
        packet.storeBytes(of: ttl - 1, toByteOffset: ttlOffset, as: UInt8.self)
        let updated = InternetChecksum.update(checksum, old: old, new: old &- 0x0100)
        packet.storeBytes(of: updated.bigEndian, toByteOffset: checksumOffset, as: UInt16.self)
        return true
    }
}
