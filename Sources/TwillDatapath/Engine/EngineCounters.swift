import CTwillSystem
import TwillAddress

/// A block of UInt64 counters each written by a single thread and read by any, without
/// locked instructions: the writer does a relaxed load and store, readers a relaxed load.
final class CounterBlock: @unchecked Sendable { // every access goes through the C atomics
    let base: UnsafeMutablePointer<UInt64>
    let count: Int

    init(count: Int) {
        self.count = count
        base = .allocate(capacity: count)
        base.initialize(repeating: 0, count: count)
    }

    deinit { base.deallocate() }

    /// Adds `n` to counter `i`; only the owning thread may call this.
    @inline(__always)
    func add(_ i: Int, _ n: UInt64 = 1) { twill_counter_add(base + i, n) }

    /// Reads counter `i` from any thread.
    func load(_ i: Int) -> UInt64 { twill_counter_load(base + i) }
}

/// Slots of an engine thread's ``CounterBlock``: drop reasons first, then these.
enum ThreadCounter {
    static let dropCount = DropReason.allCases.count
    static let packets = dropCount // outbound: datagrams queued; inbound: packets written to the TUN
    static let bytes = dropCount + 1
    static let icmpSent = dropCount + 2
    static let size = dropCount + 3
}

/// Slots of a peer's ``CounterBlock``. tx is written by the queue's OutboundPump, rx by its InboundPump.
enum PeerCounter {
    static let txPackets = 0
    static let txBytes = 1
    static let rxPackets = 2
    static let rxBytes = 3
    /// Datagrams from the peer dropped on the way in, by reason: those a peer can be blamed for.
    static let rxSpoofed = 4
    static let rxWrongDestination = 5
    static let rxTTLExpired = 6
    static let size = 7
    static let rxDrops: [(DropReason, Int)] = [
        (.spoofedInnerSource, rxSpoofed), (.wrongInnerDestination, rxWrongDestination), (.ttlExpired, rxTTLExpired),
    ]
}

/// A value snapshot of a ``PacketEngine``'s counters (monotonic since the engine was made).
public struct EngineCounterSnapshot: Sendable, Equatable {
    /// Traffic with one peer lease.
    public struct Peer: Sendable, Equatable {
        public var subnet: IPv4Network
        public var publicIP: IPv4Address
        /// Datagrams (and their bytes) queued for sending to the peer.
        public var txPackets: UInt64
        public var txBytes: UInt64
        /// Packets (and bytes) received from the peer and passed to the TUN.
        public var rxPackets: UInt64
        public var rxBytes: UInt64
        /// Datagrams from the peer dropped on the way in, by reason (reasons that happened):
        /// inner sources outside its subnet, inner destinations outside this node's, TTL 0.
        public var drops: [DropReason: UInt64] = [:]
        /// The peer's IPv6 subnet and address (a dual-stack or IPv6-only lease).
        public var subnet6: IPv6Network? = nil
        public var publicIPv6: IPv6Address? = nil

        /// The IPv4 subnet; nil for an IPv6-only peer (as ``PeerLease/ipv4Subnet``).
        public var ipv4Subnet: IPv4Network? { subnet.prefixLength == 0 ? nil : subnet }

        /// How the peer is named in metrics and the status: its IPv4 subnet and address, or
        /// for an IPv6-only peer (IPv4 part 0.0.0.0/0) its IPv6 ones.
        public var label: (subnet: String, publicIP: String) {
            if ipv4Subnet == nil, let subnet6 {
                return ("\(subnet6)", publicIPv6.map { "\($0)" } ?? "\(publicIP)")
            }
            return ("\(subnet)", "\(publicIP)")
        }
    }

    /// Dropped packets by reason (every reason present, zero or not).
    public var drops: [DropReason: UInt64]
    /// Packets read from the TUN and queued for a peer, and their bytes.
    public var txPackets: UInt64
    public var txBytes: UInt64
    /// Packets received from peers and passed to the TUN, and their bytes (a failed TUN
    /// write is counted as ``DropReason/tunWriteFailed`` once per write, which may carry
    /// several merged packets).
    public var rxPackets: UInt64
    public var rxBytes: UInt64
    /// ICMP net unreachable messages written back into the TUN.
    public var icmpUnreachableSent: UInt64
    /// Current peers, in the engine's table order. Counters of a removed lease go with it.
    public var peers: [Peer]
    /// Packet threads that ended on an error while the engine ran (poll failed, the TUN
    /// queue or socket closed under it): their queue carries no traffic. Should stay 0.
    public var failedThreads: UInt64

    /// Drops for one reason.
    public subscript(drop reason: DropReason) -> UInt64 { drops[reason] ?? 0 }

    /// All drops.
    public var totalDrops: UInt64 { drops.values.reduce(0, +) }

    /// The counters of the peer with this subnet, if it is current.
    public func peer(_ subnet: IPv4Network) -> Peer? { peers.first { $0.subnet == subnet } }
}
