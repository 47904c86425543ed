import TwillAddress

/// The fields of an IPv6 header the udp engine needs, read from a packet after validation.
///
/// As ``IPv4Header``: version 6, the 40-byte fixed header inside the buffer, and a payload
/// length that accounts for the buffer exactly (one packet per TUN read or datagram; a
/// jumbogram's zero payload length is refused).
public struct IPv6Header: Sendable, Equatable {
    /// Why a buffer is not a well-formed IPv6 packet.
    public enum Rejection: Error, Sendable, Equatable, CaseIterable, CustomStringConvertible {
        /// Fewer than 40 bytes.
        case tooShort
        /// The version nibble is not 6.
        case notVersion6
        /// The payload length field differs from what follows the header.
        case payloadLengthMismatch

        public var description: String {
            switch self {
            case .tooShort: "shorter than an IPv6 header"
            case .notVersion6: "version is not 6"
            case .payloadLengthMismatch: "payload length does not match the packet"
            }
        }
    }

    public static let length = 40
    /// Offset of the hop limit byte.
    public static let hopLimitOffset = 7
    /// Next header numbers the engine looks at.
    public static let nextHeaderTCP: UInt8 = 6
    public static let nextHeaderFragment: UInt8 = 44
    public static let nextHeaderICMPv6: UInt8 = 58

    public var payloadLength: Int
    public var nextHeader: UInt8
    public var hopLimit: UInt8
    public var source: IPv6Address
    public var destination: IPv6Address

    @inlinable
    public init(parsing packet: UnsafeRawBufferPointer) throws(Rejection) {
        guard packet.count >= Self.length, let p = packet.baseAddress else { throw .tooShort }
        guard p.load(as: UInt8.self) >> 4 == 6 else { throw .notVersion6 }
        let payload = Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
        guard payload + Self.length == packet.count else { throw .payloadLengthMismatch }
        payloadLength = payload
        nextHeader = p.load(fromByteOffset: 6, as: UInt8.self)
        hopLimit = p.load(fromByteOffset: 7, as: UInt8.self)
        source = Self.address(p + 8)
        destination = Self.address(p + 24)
    }

    /// The address stored (network order) at `p`.
    @inlinable @inline(__always)
    public static func address(_ p: UnsafeRawPointer) -> IPv6Address {
        IPv6Address(
            high: UInt64(bigEndian: p.loadUnaligned(as: UInt64.self)),
            low: UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
    }

    /// Stores `address` (network order) at `p`.
    @inlinable @inline(__always)
    public static func store(_ address: IPv6Address, _ p: UnsafeMutableRawPointer) {
        p.storeBytes(of: address.high.bigEndian, as: UInt64.self)
        p.storeBytes(of: address.low.bigEndian, toByteOffset: 8, as: UInt64.self)
    }

    /// Decrements the hop limit, as a router does (IPv6 has no header checksum to patch).
    ///
    /// - Returns: false, leaving the packet untouched, when the hop limit is 0 or 1.
    @inlinable @inline(__always)
    public static func decrementHopLimit(_ packet: UnsafeMutableRawPointer) -> Bool {
        let hops = packet.load(fromByteOffset: hopLimitOffset, as: UInt8.self)
        guard hops > 1 else { return false }
        packet.storeBytes(of: hops - 1, toByteOffset: hopLimitOffset, as: UInt8.self)
        return true
    }

    /// The sum (not inverted) of the IPv6 pseudo-header: addresses of the packet at `p`,
    /// `upperLength` and `nextHeader` (RFC 8200 8.1).
    @inlinable @inline(__always)
    public static func pseudoHeaderSum(_ p: UnsafeRawPointer, upperLength: Int, nextHeader: UInt8) -> UInt16 {
        var sum = InternetChecksum.sum(UnsafeRawBufferPointer(start: p + 8, count: 32))
        sum = InternetChecksum.add(sum, UInt16(truncatingIfNeeded: upperLength >> 16))
        sum = InternetChecksum.add(sum, UInt16(truncatingIfNeeded: upperLength))
        return InternetChecksum.add(sum, UInt16(nextHeader))
    }
}
