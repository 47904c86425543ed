/// The receive counter check of RFC 6479, as WireGuard sizes it: a ring of 128 64-bit words,
/// a window of 8128 counters behind the highest seen. A counter is accepted once; one too old
/// or at the rejection limit never.
///
/// Call only after the packet authenticated: an attacker's counter must not move the window.
public struct ReplayWindow: Sendable {
    static let blockBits: UInt64 = 64
    static let ringBlocks: UInt64 = 128
    /// Counters further than this behind the highest one are refused.
    public static let windowSize = (ringBlocks - 1) * blockBits

    private var last: UInt64 = 0
    private var ring = [UInt64](repeating: 0, count: Int(ringBlocks))

    public init() {}

    /// Accepts `counter` (and records it) unless it was seen, is too old, or is `limit` or above.
    public mutating func accept(_ counter: UInt64, limit: UInt64) -> Bool {
        guard counter < limit else { return false }
        var block = counter / Self.blockBits
        if counter > last {
            let current = last / Self.blockBits
            let diff = min(block - current, Self.ringBlocks)
            var i: UInt64 = 1
            while i <= diff {
                ring[Int((current + i) % Self.ringBlocks)] = 0
                i += 1
            }
            last = counter
        } else if last - counter > Self.windowSize {
            return false
        }
        block %= Self.ringBlocks
        let bit = UInt64(1) << (counter % Self.blockBits)
        let old = ring[Int(block)]
        ring[Int(block)] = old | bit
        return old & bit == 0
    }
}
