import CTwillSystem
import Synchronization
import TwillAddress
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// Settings of a ``PacketEngine``.
public struct EngineConfiguration: Sendable, Equatable {
    /// This node's leased IPv4 subnet: received IPv4 packets must be addressed inside it;
    /// nil on an IPv6-only node, which carries no IPv4 at all.
    public var localSubnet: IPv4Network?
    /// The TUN's address, the source of ICMP net unreachable messages (flannel: the
    /// subnet's network address); nil with `localSubnet`.
    public var tunAddress: IPv4Address?
    /// This node's IPv6 subnet, for a dual-stack network: IPv6 packets are carried (inside
    /// the same IPv4 datagrams) to peers' IPv6 subnets; nil: IPv6 packets are dropped.
    public var localSubnet6: IPv6Network?
    /// The TUN's IPv6 address (the IPv6 subnet's network address), the source of ICMPv6
    /// unreachable messages.
    public var tunAddress6: IPv6Address?
    /// Datagrams go over IPv6 (a node without IPv4, in an IPv6-only network): sockets are
    /// IPv6, peers are found and reached by their PublicIPv6.
    public var ipv6Underlay: Bool = false
    /// The UDP port peers listen on (flannel: every node uses the same `Backend.Port`).
    public var peerPort: UInt16
    /// Check that a datagram's outer source is a peer's PublicIP and its inner source lies in
    /// that peer's subnet. Turn off only for unusual routing (NAT between nodes); the engine
    /// then accepts any sender, as flannel does.
    public var checkSources: Bool
    /// Datagrams per recvmmsg/sendmmsg call.
    public var batchSize: Int
    /// Bytes per packet buffer; larger datagrams are dropped as ``DropReason/oversize``.
    public var maxPacketSize: Int
    /// Use UDP segmentation offload for sending (UDP_SEGMENT) and receive coalescing
    /// (UDP_GRO) where the kernel has them. The wire carries the same datagrams either way.
    public var udpOffloads: Bool
    /// Answer ICMP queries (ping) for unrouted destinations with net unreachable. flannel
    /// answers no ICMP packet at all; see ``ICMPUnreachable/shouldAnswer(_:packet:answeringQueries:)``.
    public var answerICMPQueries: Bool
    /// Queues (TUN queue, socket and worker thread) ``PacketEngine/open(tunName:tunOffloads:address:address6:configuration:)``
    /// asks for; fewer are used when the kernel refuses a multi-queue TUN. Default:
    /// ``defaultQueues``.
    public var queues: Int
    /// Threads per queue: 1 (default) serves both directions in one poll loop; 2 gives each
    /// direction its own thread, which pays only with more idle cores than queues.
    public var threadsPerQueue: Int
    /// WireGuard transport instead of flannel's plain udp: every datagram a sealed
    /// WireGuard message, handshakes to the control thread. Nil: flannel's wire.
    public var wireGuard: WireGuardEngineOptions?

    /// The number of online CPUs (at least 1).
    public static var onlineCPUs: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// Half the online CPUs, at least 1. A queue's thread at full rate keeps one CPU busy,
    /// and the kernel's TCP stacks and the workloads on both ends need at least as much
    /// again: on a 2-CPU node one queue carried as much as two or more (docs/performance.md).
    public static var defaultQueues: Int { max(1, onlineCPUs / 2) }

    public init(
        localSubnet: IPv4Network?, tunAddress: IPv4Address? = nil,
        peerPort: UInt16 = UDPSocket.defaultPort, checkSources: Bool = true,
        batchSize: Int = 64, maxPacketSize: Int = 9216, udpOffloads: Bool = true,
        answerICMPQueries: Bool = true, queues: Int? = nil, threadsPerQueue: Int = 1,
        localSubnet6: IPv6Network? = nil
    ) {
        self.localSubnet6 = localSubnet6
        self.tunAddress6 = localSubnet6?.address
        self.queues = max(1, queues ?? Self.defaultQueues)
        self.threadsPerQueue = min(2, max(1, threadsPerQueue))
        self.localSubnet = localSubnet
        self.tunAddress = tunAddress ?? localSubnet?.address
        self.peerPort = peerPort
        self.checkSources = checkSources
        self.batchSize = max(1, batchSize)
        self.maxPacketSize = max(576, maxPacketSize)
        self.udpOffloads = udpOffloads
        self.answerICMPQueries = answerICMPQueries
    }
}

/// What the engine needs for WireGuard transport (see ``EngineConfiguration/wireGuard``).
public struct WireGuardEngineOptions: Sendable, Equatable {
    /// Where the packet threads hand handshake messages to the control thread.
    public var control: WireGuardControlQueue
    /// Keypairs older than this are not used (RejectAfterTime).
    public var rejectAfter: Duration
    /// The TUN MTU: plaintext is padded to 16 bytes but not past it.
    public var mtu: Int

    public init(control: WireGuardControlQueue, rejectAfter: Duration, mtu: Int) {
        self.control = control
        self.rejectAfter = rejectAfter
        self.mtu = mtu
    }

    public static func == (a: Self, b: Self) -> Bool { a.control === b.control && a.rejectAfter == b.rejectAfter && a.mtu == b.mtu }
}

/// The routes and per-peer counters the packet threads see: immutable, replaced whole.
final class EngineSnapshot: @unchecked Sendable { // immutable after init; counters are atomics
    let generation: UInt64
    let table: RouteTable
    /// Per peer index: its counters and its PublicIP in network order (ready for sockaddr).
    let counters: [CounterBlock]
    let destinations: [UInt32]
    /// Per peer index: its PublicIPv6 (for an IPv6 underlay; unspecified when it has none).
    let destinations6: [IPv6Address]
    /// WireGuard's keys, when the engine carries WireGuard.
    let wireGuard: WireGuardPlane?

    init(generation: UInt64, table: RouteTable, counters: [CounterBlock], wireGuard: WireGuardPlane? = nil) {
        self.generation = generation
        self.table = table
        self.counters = counters
        self.destinations = table.peers.map { $0.publicIP.rawValue.bigEndian }
        self.destinations6 = table.peers.map { $0.publicIPv6 ?? .any }
        self.wireGuard = wireGuard
    }
}

/// One queue of a ``PacketEngine``: a TUN queue and the socket that receives for it (with
/// several queues, a member of the `SO_REUSEPORT` group on the service port).
public struct QueueIO: Sendable {
    public var tun: any PacketDevice
    public var socket: any DatagramSocket

    public init(tun: any PacketDevice, socket: any DatagramSocket) {
        self.tun = tun
        self.socket = socket
    }
}

/// A queue's descriptors and what its pumps publish (outbound: the tx slots, inbound: rx).
final class EngineQueue: Sendable {
    let index: Int
    let tun: any PacketDevice
    let socket: any DatagramSocket
    /// The snapshot generation each thread holds (QSBR-style reclamation).
    let seenByTx = Atomic<UInt64>(0)
    let seenByRx = Atomic<UInt64>(0)
    let txCounters = CounterBlock(count: ThreadCounter.size)
    let rxCounters = CounterBlock(count: ThreadCounter.size)
    /// This queue's slice of every peer's ``CounterBlock`` (one writer per slot).
    var peerOffset: Int { index * PeerCounter.size }

    init(index: Int, tun: any PacketDevice, socket: any DatagramSocket) {
        self.index = index
        self.tun = tun
        self.socket = socket
    }
}

/// The udp backend's packet engine: moves packets between a TUN device and UDP sockets,
/// flannel wire-compatible (each datagram is one raw IP packet, IPv4 or IPv6), on one dedicated thread
/// per queue serving both directions (``QueueWorker``; two with
/// ``EngineConfiguration/threadsPerQueue``).
///
/// - TUN -> UDP (``OutboundPump``): drains the TUN; validates each packet, finds the peer by
///   longest-prefix match, decrements the TTL and queues it for one sendmmsg per batch. No
///   peer: ICMP net unreachable back into the TUN, as flannel.
/// - UDP -> TUN (``InboundPump``): recvmmsg in batches; drops (and counts) datagrams from
///   non-peers, with an inner source outside the sender's subnet or an inner destination
///   outside this node's subnet, malformed ones and expiring ones; writes the rest to the TUN.
///
/// Queues: with more than one, the TUN is an `IFF_MULTI_QUEUE` device (the kernel steers
/// each flow to one queue), each queue has its own `SO_REUSEPORT` socket on the service port
/// (the kernel spreads arriving datagrams by 4-tuple hash), and datagrams leave from a set
/// of sockets on ephemeral ports chosen per inner flow (``FlowHash``), so that one peer's
/// flows spread over the receiver's queues. Every datagram still goes to the peer's
/// `Backend.Port`, one inner packet each: flannel peers accept any source port. With one
/// queue the engine sends from the service socket itself, exactly as flannel.
///
/// Peers arrive through ``update(peers:)`` as an immutable snapshot swapped atomically; the
/// threads read it once per batch, with no lock. Old snapshots are freed once every thread
/// has moved past them (each publishes the generation it holds).
///
/// Offloads, used when available (the wire format never changes, each datagram is still
/// one inner packet of at most the TUN MTU):
/// - a TUN opened with `offloads: true` hands over TCP super-packets (TSO); they are split
///   in userspace (``TCPSegmenter``) and sent as one UDP_SEGMENT message per peer and 64 KiB;
/// - the socket coalesces arriving datagrams (UDP_GRO); consecutive segments of one TCP flow
///   are merged again (``TCPCoalescer``) into one TUN write with a GSO virtio header.
/// Without them the engine still batches: recvmmsg/sendmmsg, and the TUN drained per wakeup.
/// Either way the per-packet path neither allocates nor locks.
///
/// The engine owns the devices and sockets it is given: ``stop()`` closes them all.
public final class PacketEngine: Sendable {
    public let configuration: EngineConfiguration
    private let queues: [EngineQueue]
    /// The sockets datagrams leave by, chosen per inner flow (``FlowHash``).
    let sendSockets: [any DatagramSocket]

    /// Bits of an `Unmanaged<EngineSnapshot>` holding a +1 reference.
    private let current: Atomic<UInt>
    private let running = Atomic<Bool>(false)
    /// Whether the packet threads should keep going.
    var isRunning: Bool { running.load(ordering: .relaxed) }
    /// Packet threads that ended while the engine was running (see ``QueueWorker``).
    private let failedThreads = Atomic<Int>(0)

    /// Packet threads that ended while the engine was running (one atomic load: cheap enough
    /// to ask every second).
    public var failedThreadCount: Int { failedThreads.load(ordering: .relaxed) }

    /// Counts a packet thread that ended on its own: its queue carries nothing any more.
    private func noteExit(_ stoppedCleanly: Bool) {
        if !stoppedCleanly && isRunning { failedThreads.add(1, ordering: .relaxed) }
    }

    private struct PeerKey: Hashable {
        var subnet: IPv4Network
        var publicIP: IPv4Address
        var subnet6: IPv6Network?
        var publicIPv6: IPv6Address?
    }
    private struct State {
        var generation: UInt64 = 0
        var peerCounters: [PeerKey: CounterBlock] = [:]
        var retired: [EngineSnapshot] = []
        var threads: [OSThread] = []
        var peers: [PeerLease] = []
        var keys = WireGuardKeyTable.empty
        var wake: EventFD?
        var started = false
        var stopped = false
    }
    private let state = Mutex(State())

    /// The number of queues the engine runs.
    public var queueCount: Int { queues.count }
    /// Whether the TUN hands over super-packets with a virtio header (TUN offloads granted).
    public var hasTUNOffloads: Bool { queues[0].tun.hasVirtioHeader }
    /// The TUN interface's name.
    public var tunName: String { queues[0].tun.name }
    /// Each queue's TUN and listening socket descriptors, for keeping across a restart.
    var queueDescriptors: [(tun: Int32, socket: Int32)] { queues.map { ($0.tun.fileDescriptor, $0.socket.fileDescriptor) } }
    /// The local ports datagrams leave from (the service port alone with one queue).
    public var sourcePorts: [UInt16] { sendSockets.map(\.port) }
    /// The first queue's socket, bound to the listening port (WireGuard's handshakes leave by it).
    var listeningSocket: (any DatagramSocket)? { queues.first?.socket }

    /// Sets the TUN's transmit queue length (see ``TUNDevice/setTransmitQueueLength(_:)``);
    /// call it from a thread in the device's network namespace.
    public func setTransmitQueueLength(_ length: Int32) throws(SystemError) {
        try queues[0].tun.setTransmitQueueLength(length)
    }

    /// Creates a one-queue engine over an open TUN device and a bound socket, with no peers
    /// yet. Datagrams leave from `socket` (flannel's behaviour).
    public convenience init(tun: any PacketDevice, socket: any DatagramSocket, configuration: EngineConfiguration) {
        self.init(queues: [QueueIO(tun: tun, socket: socket)], sendSockets: [], configuration: configuration)
    }

    /// Creates an engine over queues of one TUN device (all opened with the same flags) and
    /// their receiving sockets, with no peers yet.
    ///
    /// - Parameter sendSockets: the sockets to send from, one chosen per inner flow; empty
    ///   to send everything from the first queue's socket.
    public init(queues: [QueueIO], sendSockets: [any DatagramSocket], configuration: EngineConfiguration) {
        precondition(!queues.isEmpty, "an engine needs at least one queue")
        self.queues = queues.enumerated().map { EngineQueue(index: $0.offset, tun: $0.element.tun, socket: $0.element.socket) }
        self.sendSockets = sendSockets.isEmpty ? [queues[0].socket] : sendSockets
        var configuration = configuration
        configuration.queues = queues.count // what runs, not what was asked for
        self.configuration = configuration
        let initial = EngineSnapshot(
            generation: 0, table: RouteTable(peers: []), counters: [],
            wireGuard: Self.plane(RouteTable(peers: []), .empty, configuration))
        current = Atomic(UInt(bitPattern: Unmanaged.passRetained(initial).toOpaque()))
    }

    /// Opens everything an engine needs, in the calling thread's network namespace: the TUN
    /// `tunName` with `configuration.queues` queues (fewer if the kernel refuses, see
    /// ``TUNDevice/openQueues(name:count:offloads:)``), one socket per queue bound to
    /// `address`:`configuration.peerPort` (`SO_REUSEPORT` when more than one), and with
    /// several queues the sending sockets on ephemeral ports of `address`
    /// (``FlowHash/sourcePortCount(queues:)``). The engine is not started.
    ///
    /// - Throws: ``SystemError`` when the TUN or a socket cannot be opened; whatever was
    ///   opened is closed.
    ///
    /// With `configuration.ipv6Underlay` the sockets are IPv6 ones bound to `address6`.
    public static func open(
        tunName: String, tunOffloads: Bool, address: IPv4Address, address6: IPv6Address? = nil,
        configuration: EngineConfiguration
    ) throws(SystemError) -> PacketEngine {
        func socket(port: UInt16, reusePort: Bool) throws(SystemError) -> UDPSocket {
            if configuration.ipv6Underlay {
                guard let address6 else { throw SystemError("an IPv6 underlay needs an IPv6 address to bind", errno: EINVAL) }
                return try UDPSocket(address6: address6, port: port, reusePort: reusePort)
            }
            return try UDPSocket(address: address, port: port, reusePort: reusePort)
        }
        let tuns = try TUNDevice.openQueues(name: tunName, count: configuration.queues, offloads: tunOffloads)
        var sockets: [any DatagramSocket] = []
        var senders: [any DatagramSocket] = []
        do throws(SystemError) {
            let shared = tuns.count > 1
            var port = configuration.peerPort
            for _ in tuns {
                let socket = try socket(port: port, reusePort: shared)
                port = socket.port // port 0 (tests): the others join the port the first got
                sockets.append(socket)
            }
            // WireGuard sends from the listening port (peers answer and roam to it).
            if shared && configuration.wireGuard == nil {
                for _ in 0..<FlowHash.sourcePortCount(queues: tuns.count) {
                    senders.append(try socket(port: 0, reusePort: false))
                }
            }
        } catch {
            for t in tuns { t.close() }
            for s in sockets + senders { s.close() }
            throw error
        }
        return PacketEngine(
            queues: zip(tuns, sockets).map { QueueIO(tun: $0, socket: $1) },
            sendSockets: senders, configuration: configuration)
    }

    deinit {
        stop()
        Unmanaged<EngineSnapshot>.fromOpaque(UnsafeRawPointer(bitPattern: current.load(ordering: .sequentiallyConsistent))!).release()
    }

    /// Replaces the peer set. Safe from any thread, at any time; takes effect at every
    /// queue's threads' next batch. A peer's counters survive as long as its lease (subnet
    /// and PublicIP) stays in the set.
    public func update(peers: [PeerLease]) {
        state.withLock { state in
            state.peers = peers
            publish(&state)
        }
    }

    /// Replaces the WireGuard keys (the control thread calls this whenever a keypair changes).
    public func update(keys: WireGuardKeyTable) {
        state.withLock { state in
            state.keys = keys
            publish(&state)
        }
    }

    static func plane(_ table: RouteTable, _ keys: WireGuardKeyTable, _ configuration: EngineConfiguration) -> WireGuardPlane? {
        configuration.wireGuard.map {
            WireGuardPlane(
                table: table, keys: keys, control: $0.control, rejectAfter: $0.rejectAfter.nanoseconds, mtu: $0.mtu,
                defaultPort: configuration.peerPort)
        }
    }

    /// Builds and swaps in a snapshot of the current peers and keys.
    private func publish(_ state: inout State) {
        let table = RouteTable(peers: state.peers)
        let slots = PeerCounter.size * queues.count
        state.generation += 1
        var kept: [PeerKey: CounterBlock] = [:]
        let counters = table.peers.map { peer in
            let key = PeerKey(subnet: peer.subnet, publicIP: peer.publicIP, subnet6: peer.subnet6, publicIPv6: peer.publicIPv6)
            let block = state.peerCounters[key] ?? CounterBlock(count: slots)
            kept[key] = block
            return block
        }
        state.peerCounters = kept
        let snapshot = EngineSnapshot(
            generation: state.generation, table: table, counters: counters,
            wireGuard: Self.plane(table, state.keys, configuration))
        let bits = UInt(bitPattern: Unmanaged.passRetained(snapshot).toOpaque())
        let old = current.exchange(bits, ordering: .sequentiallyConsistent)
        state.retired.append(Unmanaged<EngineSnapshot>.fromOpaque(UnsafeRawPointer(bitPattern: old)!).takeRetainedValue())
        reclaim(&state)
    }

    /// Frees retired snapshots no thread can still be reading.
    private func reclaim(_ state: inout State) {
        guard state.started, !state.stopped else {
            state.retired.removeAll()
            return
        }
        var oldestInUse = UInt64.max
        for queue in queues {
            oldestInUse = min(
                oldestInUse, queue.seenByTx.load(ordering: .sequentiallyConsistent),
                queue.seenByRx.load(ordering: .sequentiallyConsistent))
        }
        state.retired.removeAll { $0.generation < oldestInUse }
    }

    /// The current snapshot, for a packet thread: publishes the generation it now holds
    /// before the previous one is let go.
    @inline(__always)
    func loadSnapshot(_ seen: borrowing Atomic<UInt64>) -> EngineSnapshot {
        let bits = current.load(ordering: .sequentiallyConsistent)
        let snapshot = Unmanaged<EngineSnapshot>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeUnretainedValue()
        seen.store(snapshot.generation, ordering: .sequentiallyConsistent)
        return snapshot
    }

    /// Starts the packet threads, ``EngineConfiguration/threadsPerQueue`` per queue.
    ///
    /// - Throws: ``SystemError`` if the engine was already started or stopped, or a thread
    ///   or the wakeup descriptor cannot be created.
    public func start() throws(SystemError) {
        try state.withLock { (state) throws(SystemError) in
            guard !state.started, !state.stopped else { throw SystemError("start: engine already started", errno: EINVAL) }
            let wake = try EventFD.make()
            state.wake = wake
            // Every thread starts past every snapshot retired so far.
            for queue in queues {
                queue.seenByTx.store(state.generation, ordering: .sequentiallyConsistent)
                queue.seenByRx.store(state.generation, ordering: .sequentiallyConsistent)
            }
            running.store(true, ordering: .sequentiallyConsistent)
            state.started = true
            do throws(SystemError) {
                let split = configuration.threadsPerQueue > 1
                // Each pump is made on the thread that runs it: it is that thread's alone.
                for queue in queues {
                    if split {
                        state.threads.append(
                            try OSThread.spawn(name: "twill-tx\(queue.index)") { [self] in
                                defer { queue.seenByTx.store(.max, ordering: .sequentiallyConsistent) }
                                noteExit(
                                    QueueWorker.serve(
                                        outbound: OutboundPump(engine: self, queue: queue), inbound: InboundPump?.none,
                                        wakeFD: wake.descriptor
                                    ) { isRunning })
                            })
                        state.threads.append(
                            try OSThread.spawn(name: "twill-rx\(queue.index)") { [self] in
                                defer { queue.seenByRx.store(.max, ordering: .sequentiallyConsistent) }
                                noteExit(
                                    QueueWorker.serve(
                                        outbound: OutboundPump?.none, inbound: InboundPump(engine: self, queue: queue),
                                        wakeFD: wake.descriptor
                                    ) { isRunning })
                            })
                    } else {
                        state.threads.append(
                            try OSThread.spawn(name: "twill-q\(queue.index)") { [self] in
                                // A thread that is gone holds no snapshot: let reclamation ignore it.
                                defer {
                                    queue.seenByTx.store(.max, ordering: .sequentiallyConsistent)
                                    queue.seenByRx.store(.max, ordering: .sequentiallyConsistent)
                                }
                                noteExit(
                                    QueueWorker.serve(
                                        outbound: OutboundPump(engine: self, queue: queue),
                                        inbound: InboundPump(engine: self, queue: queue), wakeFD: wake.descriptor
                                    ) { isRunning })
                            })
                    }
                }
            } catch {
                running.store(false, ordering: .sequentiallyConsistent)
                wake.signal()
                for thread in state.threads { thread.join() }
                state.threads = []
                throw error
            }
        }
    }

    /// Stops the threads (they wake at once through an eventfd), waits for all of them, and
    /// closes the TUN queues and the sockets. Idempotent; the engine cannot be started again.
    public func stop() {
        stopThreads()
        for queue in queues {
            queue.tun.close()
            queue.socket.close()
        }
        for socket in sendSockets { socket.close() }
    }

    /// Stops the threads like ``stop()`` but hands the TUN queues and their listening sockets
    /// back open, for the engine that replaces this one: the TUN keeps its queues (and the
    /// packets waiting in them) and the sockets their port. Only the sending sockets close.
    public func stopHandingOver() -> [QueueIO] {
        stopThreads()
        let listening = Set(queues.map { ObjectIdentifier($0.socket) })
        for socket in sendSockets where !listening.contains(ObjectIdentifier(socket)) { socket.close() }
        return queues.map { QueueIO(tun: $0.tun, socket: $0.socket) }
    }

    private func stopThreads() {
        let threads = state.withLock { state -> [OSThread] in
            guard !state.stopped else { return [] }
            state.stopped = true
            running.store(false, ordering: .sequentiallyConsistent)
            state.wake?.signal()
            defer { state.threads = [] }
            return state.threads
        }
        for thread in threads { thread.join() }
        state.withLock { state in
            state.wake?.close()
            state.wake = nil
            state.retired.removeAll()
        }
    }

    /// A value snapshot of all counters, summed over the queues.
    public func counters() -> EngineCounterSnapshot {
        func total(_ i: Int, _ blocks: KeyPath<EngineQueue, CounterBlock>) -> UInt64 {
            queues.reduce(0) { $0 + $1[keyPath: blocks].load(i) }
        }
        var drops: [DropReason: UInt64] = [:]
        for reason in DropReason.allCases {
            drops[reason] = total(reason.rawValue, \.txCounters) + total(reason.rawValue, \.rxCounters)
        }
        let queueCount = queues.count
        let peers: [EngineCounterSnapshot.Peer] = state.withLock { state in
            // Under the lock no update can retire the current snapshot.
            let snapshot = Unmanaged<EngineSnapshot>.fromOpaque(
                UnsafeRawPointer(bitPattern: current.load(ordering: .sequentiallyConsistent))!
            ).takeUnretainedValue()
            return zip(snapshot.table.peers, snapshot.counters).map { peer, block in
                func sum(_ slot: Int) -> UInt64 {
                    (0..<queueCount).reduce(0) { $0 + block.load($1 * PeerCounter.size + slot) }
                }
                var drops: [DropReason: UInt64] = [:]
                for (reason, slot) in PeerCounter.rxDrops {
                    let n = sum(slot)
                    if n > 0 { drops[reason] = n }
                }
                return EngineCounterSnapshot.Peer(
                    subnet: peer.subnet, publicIP: peer.publicIP,
                    txPackets: sum(PeerCounter.txPackets), txBytes: sum(PeerCounter.txBytes),
                    rxPackets: sum(PeerCounter.rxPackets), rxBytes: sum(PeerCounter.rxBytes), drops: drops,
                    subnet6: peer.subnet6, publicIPv6: peer.publicIPv6)
            }
        }
        return EngineCounterSnapshot(
            drops: drops,
            txPackets: total(ThreadCounter.packets, \.txCounters), txBytes: total(ThreadCounter.bytes, \.txCounters),
            rxPackets: total(ThreadCounter.packets, \.rxCounters), rxBytes: total(ThreadCounter.bytes, \.rxCounters),
            icmpUnreachableSent: total(ThreadCounter.icmpSent, \.txCounters), peers: peers,
            failedThreads: UInt64(failedThreads.load(ordering: .relaxed)))
    }
}
