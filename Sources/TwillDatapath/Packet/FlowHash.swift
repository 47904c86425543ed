/// The outer UDP source port of an inner flow, for a multi-queue engine.
///
/// A receiving node spreads datagrams over its `SO_REUSEPORT` sockets (one per queue) by a
/// hash of the outer 4-tuple. Between two nodes only the source port can vary (the
/// destination is always the peer's `Backend.Port`), so a sender that used one source port
/// would put all its flows on one receiving queue. Like the kernel's VXLAN, the engine
/// picks the source port from a hash of the inner flow instead: a sender owns
/// ``sourcePortCount(queues:)`` sockets bound to ephemeral ports, and each inner packet
/// leaves by the socket ``index(of:count:)`` names.
///
/// The hash is symmetric (A->B and B->A give the same value). That matters because a
/// multi-queue TUN steers a flow's outgoing packets to the queue on which its last reverse
/// packet was written: with a symmetric choice, a TCP flow's data and its ACKs use the
/// same outer port pair in both directions, so each node keeps the flow on one queue
/// instead of moving it (and reordering it) with every round trip.
///
/// Pure functions on a packet already validated as IPv4 (``IPv4Header``) or IPv6
/// (``IPv6Header``).
public enum FlowHash {
    /// Sending sockets for `queues` queues: one (the service socket itself, exactly as
    /// flannel) for a single queue; otherwise 8 per queue, at most 64, so that even with
    /// two receiving queues the chance that all of a peer's ports hash to one is small.
    public static func sourcePortCount(queues: Int) -> Int {
        queues <= 1 ? 1 : min(64, 8 * queues)
    }

    /// A symmetric hash of the packet's flow: addresses and protocol, plus the ports for
    /// TCP, UDP, SCTP and UDP-Lite when the packet is not a fragment (fragments of one
    /// datagram must stay together, and only the first carries ports).
    ///
    /// - Parameter packet: at least the IPv4 header (`headerLength` bytes) and, when
    ///   present, 4 bytes of ports after it.
    @inline(__always)
    public static func symmetric(_ packet: UnsafeRawBufferPointer) -> UInt32 {
        guard packet.count >= 20 else { return 0 }
        if packet[0] >> 4 == 6 { return symmetric6(packet) }
        let headerLength = Int(packet[0] & 0x0F) * 4
        let proto = packet[9]
        let a = packet.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
        let b = packet.loadUnaligned(fromByteOffset: 16, as: UInt32.self)
        // Flags MF (0x20 in byte 6) or a fragment offset: no ports.
        let fragment = packet[6] & 0x3F != 0 || packet[7] != 0
        var ports: UInt32 = 0
        if !fragment, proto == 6 || proto == 17 || proto == 132 || proto == 136,
            headerLength >= 20, packet.count >= headerLength + 4
        {
            let sp = UInt32(packet.loadUnaligned(fromByteOffset: headerLength, as: UInt16.self))
            let dp = UInt32(packet.loadUnaligned(fromByteOffset: headerLength + 2, as: UInt16.self))
            // Order-independent: (min, max) of the two ports.
            ports = min(sp, dp) << 16 | max(sp, dp)
        }
        return mix(UInt64(min(a, b)) << 32 | UInt64(max(a, b)), ports: ports, proto: proto)
    }

    /// The IPv6 flow: addresses (folded to 64 bits each, then ordered), the next header and,
    /// when it is TCP, UDP, SCTP or UDP-Lite right after the fixed header, the ports.
    @inline(__always)
    static func symmetric6(_ packet: UnsafeRawBufferPointer) -> UInt32 {
        guard packet.count >= 40 else { return 0 }
        let proto = packet[6]
        let a = packet.loadUnaligned(fromByteOffset: 8, as: UInt64.self) ^ packet.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        let b = packet.loadUnaligned(fromByteOffset: 24, as: UInt64.self) ^ packet.loadUnaligned(fromByteOffset: 32, as: UInt64.self)
        var ports: UInt32 = 0
        if proto == 6 || proto == 17 || proto == 132 || proto == 136, packet.count >= 44 {
            let sp = UInt32(packet.loadUnaligned(fromByteOffset: 40, as: UInt16.self))
            let dp = UInt32(packet.loadUnaligned(fromByteOffset: 42, as: UInt16.self))
            ports = min(sp, dp) << 16 | max(sp, dp)
        }
        let (lo, hi) = (min(a, b), max(a, b))
        return mix(lo ^ (hi << 1 | hi >> 63), ports: ports, proto: proto)
    }

    @inline(__always)
    private static func mix(_ addresses: UInt64, ports: UInt32, proto: UInt8) -> UInt32 {
        var h = addresses
        h ^= UInt64(ports) << 8 ^ UInt64(proto)
        // A 64-bit finalizer (splitmix64): every input bit reaches every output bit.
        h ^= h >> 30
        h &*= 0xBF58_476D_1CE4_E5B9
        h ^= h >> 27
        h &*= 0x94D0_49BB_1331_11EB
        h ^= h >> 31
        return UInt32(truncatingIfNeeded: h)
    }

    /// The sending socket for a packet, among `count`.
    @inline(__always)
    public static func index(of packet: UnsafeRawBufferPointer, count: Int) -> Int {
        count <= 1 ? 0 : Int((UInt64(symmetric(packet)) &* UInt64(count)) >> 32)
    }
}
