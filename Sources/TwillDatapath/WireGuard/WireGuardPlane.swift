import CTwillSystem
import Synchronization
import TwillAddress
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// What the packet threads need of WireGuard, aligned with the engine's route table (peer
/// indices): the keypair to seal with and the activity to report per peer, the keypairs to
/// open with by receiver index, and the queue for handshake messages. Part of an
/// ``EngineSnapshot``: immutable, replaced whole.
final class WireGuardPlane: @unchecked Sendable { // immutable after init
    struct Receive {
        let keypair: Keypair
        /// The route-table index of its peer (-1 when the peer has no route any more).
        let peer: Int
        let subnet: IPv4Network
        let activity: PeerActivity
    }
    let send: [Keypair?]
    let activity: [PeerActivity?]
    /// Each peer's endpoint port, network order.
    let ports: [UInt16]
    let receive: [UInt32: Receive]
    let control: WireGuardControlQueue
    let rejectAfter: UInt64
    /// The TUN MTU, which caps the padding.
    let mtu: Int

    init(table: RouteTable, keys: WireGuardKeyTable, control: WireGuardControlQueue, rejectAfter: UInt64, mtu: Int, defaultPort: UInt16) {
        var index: [IPv4Network: Int] = [:]
        for (i, p) in table.peers.enumerated() { index[p.subnet] = i }
        send = table.peers.map { keys.send[$0.subnet]?.keypair }
        activity = table.peers.map { keys.send[$0.subnet]?.activity }
        ports = table.peers.map { (keys.send[$0.subnet]?.port ?? defaultPort).bigEndian }
        var receive: [UInt32: Receive] = [:]
        for (i, r) in keys.receive {
            receive[i] = Receive(keypair: r.keypair, peer: index[r.subnet] ?? -1, subnet: r.subnet, activity: r.activity)
        }
        self.receive = receive
        self.control = control
        self.rejectAfter = rejectAfter
        self.mtu = mtu
    }

    /// The keypair to send to peer `peer` with at `now`, or nil (and a handshake asked for)
    /// when there is none that may be used.
    @inline(__always)
    func sendKeypair(_ peer: Int, now: UInt64) -> Keypair? {
        if let k = send[peer], now &- k.created < rejectAfter, k.isLive, k.sentMessages < WireGuardTimers.rejectAfterMessages {
            return k
        }
        if let a = activity[peer], !a.handshakeWanted.exchange(true, ordering: .relaxed) { control.wakeUp() }
        return nil
    }
}

/// Handshake messages from the packet threads to the control thread: a fixed ring of
/// message-sized slots (no allocation), an eventfd to wake the control thread, and a count
/// of what did not fit (a flood: the rest is dropped, and the responder is "under load").
public final class WireGuardControlQueue: @unchecked Sendable { // the ring is guarded by the lock
    static let slotSize = 160
    public let capacity: Int
    private let slots: UnsafeMutableRawPointer
    private struct Ring {
        var head = 0
        var count = 0
        var lengths: [Int]
        var sources: [WireGuardEndpoint]
    }
    private let ring: Mutex<Ring>
    /// The control thread polls it; packet threads write to it.
    /// Wakes the control thread; it polls `wake.descriptor`.
    public let wake: EventFD
    private let overflowed = Atomic<UInt64>(0)

    public init(capacity: Int = 256) throws(SystemError) {
        self.capacity = capacity
        slots = ZeroedMemory.allocate(byteCount: capacity * Self.slotSize)
        ring = Mutex(
            Ring(
                lengths: Array(repeating: 0, count: capacity),
                sources: Array(repeating: WireGuardEndpoint(address: .any, port: 0), count: capacity)))
        do {
            wake = try EventFD.make()
        } catch {
            ZeroedMemory.deallocate(slots)
            throw SystemError("eventfd for the wireguard control thread", errno: error.errno.rawValue)
        }
    }

    deinit {
        wake.close()
        ZeroedMemory.deallocate(slots)
    }

    /// Wakes the control thread.
    @inline(__always)
    public func wakeUp() { wake.signal() }

    /// Copies a handshake message in (from a packet thread); false when the ring is full.
    @inline(__always)
    func push(_ message: UnsafeRawPointer, length: Int, source: WireGuardEndpoint) -> Bool {
        guard length <= Self.slotSize else { return false }
        let queued = ring.withLock { r -> Bool in
            guard r.count < capacity else { return false }
            let at = (r.head + r.count) % capacity
            (slots + at * Self.slotSize).copyMemory(from: message, byteCount: length)
            r.lengths[at] = length
            r.sources[at] = source
            r.count += 1
            return true
        }
        if queued { wakeUp() } else { overflowed.add(1, ordering: .relaxed) }
        return queued
    }

    /// Everything queued (for the control thread), and how many messages are still waiting
    /// behind it; clears the wakeup.
    public func drain(max: Int = 64) -> (messages: [(bytes: [UInt8], source: WireGuardEndpoint)], backlog: Int) {
        wake.drain()
        return ring.withLock { r in
            var out: [(bytes: [UInt8], source: WireGuardEndpoint)] = []
            while r.count > 0 && out.count < max {
                let at = r.head
                out.append((Array(UnsafeRawBufferPointer(start: slots + at * Self.slotSize, count: r.lengths[at])), r.sources[at]))
                r.head = (r.head + 1) % capacity
                r.count -= 1
            }
            return (out, r.count)
        }
    }

    /// Messages dropped because the ring was full.
    public var overflows: UInt64 { overflowed.load(ordering: .relaxed) }
}
