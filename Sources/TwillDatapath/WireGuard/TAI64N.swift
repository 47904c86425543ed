#if canImport(Glibc)
import Glibc
#endif

/// TAI64N timestamps for handshake initiations (12 bytes, big-endian): a responder accepts an
/// initiation only with a timestamp newer than the last one it took from that peer, which
/// defeats replayed initiations.
public enum TAI64N {
    static let base: UInt64 = 0x4000_0000_0000_000a
    /// Low bits of the nanoseconds cleared, as WireGuard does, so the timestamp does not leak
    /// a precise clock.
    static let whitener: UInt32 = 0x0100_0000 - 1

    /// The timestamp of `seconds` and `nanoseconds` since the Unix epoch.
    public static func encode(seconds: UInt64, nanoseconds: UInt32) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 12)
        let s = base &+ seconds
        for i in 0..<8 { out[i] = UInt8(truncatingIfNeeded: s >> (56 - 8 * UInt64(i))) }
        let n = nanoseconds & ~whitener
        for i in 0..<4 { out[8 + i] = UInt8(truncatingIfNeeded: n >> (24 - 8 * UInt32(i))) }
        return out
    }

    /// Now, from the realtime clock.
    public static func now() -> [UInt8] {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return encode(seconds: UInt64(max(0, ts.tv_sec)), nanoseconds: UInt32(ts.tv_nsec))
    }

    /// Whether `a` is later than `b` (big-endian byte order is time order).
    public static func isAfter(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        for i in 0..<12 where a[i] != b[i] { return a[i] > b[i] }
        return false
    }
}
