import TwillAddress
import TwillDatapath
import TwillTestSupport

/// Builders of test packets (plain byte arrays) shared by the unit and engine tests.
enum Packets {
    /// A valid IPv4 packet: 20-byte header (plus `options`), correct checksum, `payload` after it.
    static func ipv4(
        source: IPv4Address, destination: IPv4Address, ttl: UInt8 = 64, protocolNumber: UInt8 = 17,
        payload: [UInt8] = Array(repeating: 0xAB, count: 12), options: [UInt8] = [], fragmentOffset: UInt16 = 0,
        identification: UInt16 = 0x1234, moreFragments: Bool = false
    ) -> [UInt8] {
        precondition(options.count % 4 == 0 && options.count <= 40)
        let headerLength = 20 + options.count
        let total = headerLength + payload.count
        let flags: UInt16 = (moreFragments ? 0x2000 : 0) | fragmentOffset
        var bytes: [UInt8] = [
            0x40 | UInt8(headerLength / 4), 0, UInt8(total >> 8), UInt8(total & 0xFF),
            UInt8(identification >> 8), UInt8(identification & 0xFF), UInt8(flags >> 8), UInt8(flags & 0xFF),
            ttl, protocolNumber, 0, 0,
        ]
        bytes += source.octets + destination.octets + options
        let sum = bytes.withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
        bytes[10] = UInt8(sum >> 8)
        bytes[11] = UInt8(sum & 0xFF)
        return bytes + payload
    }

    /// A UDP payload (8-byte UDP header with zero checksum, then `data`).
    static func udp(sourcePort: UInt16 = 40000, destinationPort: UInt16 = 9, data: [UInt8]) -> [UInt8] {
        let length = 8 + data.count
        return [
            UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8), UInt8(destinationPort & 0xFF),
            UInt8(length >> 8), UInt8(length & 0xFF), 0, 0,
        ] + data
    }
}

/// The shared seeded generator, under the name these tests use.
typealias SplitMix64 = TwillTestSupport.SplitMix64

extension Array where Element == UInt8 {
    static func random(count: Int, using rng: inout SplitMix64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var i = 0
        while i < count { // 8 bytes per draw: debug builds make per-byte draws slow
            var word = rng.next()
            for _ in 0..<8 where i < count {
                bytes[i] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                i += 1
            }
        }
        return bytes
    }
}
