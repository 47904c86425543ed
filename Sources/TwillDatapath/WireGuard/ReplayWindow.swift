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

    /// A window that has seen every counter up to `highest` and no later one: a session
    /// resumed by the next run of the agent accepts only newer counters (late packets of the
    /// old run are refused rather than risk a replay).
    public init(resumingAfter highest: UInt64) {
        last = highest
        ring = [UInt64](repeating: .max, count: Int(Self.ringBlocks))
        let bit = highest % Self.blockBits
        ring[Int((highest / Self.blockBits) % Self.ringBlocks)] = bit == Self.blockBits - 1 ? .max : (UInt64(1) << (bit + 1)) - 1
    }

    /// The highest counter accepted so far, nil before the first.
    public var highestAccepted: UInt64? { last > 0 || ring.contains(where: { $0 != 0 }) ? last : nil }

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
