/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
///
/// Values are returned as the 16-bit number whose big-endian bytes go on the wire, so a
/// checksum of `0xB1E6` is stored as the bytes `B1 E6`.
public enum InternetChecksum {
    /// The one's complement sum of `bytes` (not inverted), folded to 16 bits.
    ///
    /// The one's complement sum is independent of byte order up to a final swap (RFC 1071
    /// section 2(B)), so words are loaded in native order. Long buffers (the TCP segmenter
    /// sums every payload) go 64 bytes per step through SIMD: 16-bit words added into 32-bit
    /// lanes, which cannot overflow within ``simdBlockLimit`` steps and need no carry chain
    /// (about 2.5x the scalar loop here). The rest, and short buffers such as 20-byte headers,
    /// load 8 bytes at a time and add with end-around carry into a 64-bit accumulator.
    @inlinable
    public static func sum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        guard let base = bytes.baseAddress else { return 0 }
        var count = bytes.count
        var p = base
        var acc: UInt64 = 0
        @inline(__always) func add(_ v: UInt64) {
            let (s, o) = acc.addingReportingOverflow(v)
            acc = s &+ (o ? 1 : 0)
        }
        while count >= 64 {
            // Each lane gains at most 2 * 0xFFFF per step: 32-bit lanes are safe for
            // simdBlockLimit steps, then the lanes are folded into the scalar accumulator.
            var lanes = SIMD16<UInt32>(repeating: 0)
            var steps = min(count / 64, simdBlockLimit)
            count -= steps * 64
            while steps > 0 {
                let a = p.loadUnaligned(as: SIMD16<UInt16>.self)
                let b = p.loadUnaligned(fromByteOffset: 32, as: SIMD16<UInt16>.self)
                lanes &+= SIMD16<UInt32>(truncatingIfNeeded: a) &+ SIMD16<UInt32>(truncatingIfNeeded: b)
                p += 64
                steps -= 1
            }
            let wide = SIMD8<UInt64>(truncatingIfNeeded: lanes.lowHalf) &+ SIMD8<UInt64>(truncatingIfNeeded: lanes.highHalf)
            add(wide.wrappedSum())
        }
        while count >= 32 {
            add(p.loadUnaligned(as: UInt64.self))
            add(p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            add(p.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
            add(p.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
            p += 32
            count -= 32
        }
        while count >= 8 {
            add(p.loadUnaligned(as: UInt64.self))
            p += 8
            count -= 8
        }
        if count >= 4 {
            add(UInt64(p.loadUnaligned(as: UInt32.self)))
            p += 4
            count -= 4
        }
        if count >= 2 {
            add(UInt64(p.loadUnaligned(as: UInt16.self)))
            p += 2
            count -= 2
        }
        if count == 1 {
            // An odd last byte is the high-order byte of a zero-padded big-endian word; every
            // load so far started at an even offset, so in native order it is the byte at
            // the word's first address.
            let byte = UInt64(p.load(as: UInt8.self))
            #if _endian(little)
            add(byte)
            #else
            add(byte << 8)
            #endif
        }
        return fold(acc)
    }

    /// SIMD steps (64 bytes each) before the 32-bit lanes must be folded: each lane holds at
    /// most 2 * 0xFFFF more per step.
    @usableFromInline static let simdBlockLimit = 32768

    /// Folds a 64-bit one's complement accumulator (of native-order words) to 16 bits and
    /// converts it to the wire's numeric value.
    @inlinable @inline(__always)
    static func fold(_ value: UInt64) -> UInt16 {
        var s = (value & 0xFFFF_FFFF) &+ (value >> 32)
        s = (s & 0xFFFF_FFFF) &+ (s >> 32)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: s).bigEndian
    }

    /// The Internet checksum of `bytes`: the inverted one's complement sum.
    ///
    /// Computing it over data that already contains a correct checksum gives 0.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        ~sum(bytes)
    }

    /// Adds two one's complement sums (e.g. a pseudo-header sum and a payload sum).
    @inlinable
    public static func add(_ a: UInt16, _ b: UInt16) -> UInt16 {
        let s = UInt32(a) + UInt32(b)
        return UInt16(truncatingIfNeeded: (s & 0xFFFF) + (s >> 16))
    }

    /// The straightforward RFC 1071 loop over big-endian 16-bit words: a reference the
    /// tests hold the fast ``checksum(_:)`` against. Not for the hot path.
    public static func referenceChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var sum: UInt64 = 0
        var i = 0
        while i + 1 < bytes.count {
            sum += UInt64(bytes[i]) << 8 | UInt64(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { sum += UInt64(bytes[i]) << 8 }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// RFC 1624 equation 3: the checksum after one 16-bit word of the covered data changes
    /// from `old` to `new`, `HC' = ~(~HC + ~m + m')`.
    ///
    /// Equation 3 rather than RFC 1141's `HC + m - m'` because it never produces the
    /// negative zero `0xFFFF` that a full recomputation cannot produce.
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        var s = UInt32(~checksum) &+ UInt32(~old) &+ UInt32(new)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        return ~UInt16(truncatingIfNeeded: s)
    }
}
