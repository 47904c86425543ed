import CDatapath
import Synchronization
import TwillAddress
#if canImport(Glibc)
import Glibc
#endif

/// Settings of a ``UDPEngine``.
public struct UDPEngineConfiguration: Sendable, Equatable {
    /// This node's leased subnet: received packets must be addressed inside it.
    public var localSubnet: IPv4Network
    /// The TUN's address, the source of ICMP net unreachable messages (flannel: the
    /// subnet's network address).
    public var tunAddress: IPv4Address
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

    public init(localSubnet: IPv4Network, tunAddress: IPv4Address? = nil,
                peerPort: UInt16 = UDPSocket.defaultPort, checkSources: Bool = true,
                batchSize: Int = 64, maxPacketSize: Int = 9216, udpOffloads: Bool = true,
                answerICMPQueries: Bool = true) {
        self.localSubnet = localSubnet
        self.tunAddress = tunAddress ?? localSubnet.address
        self.peerPort = peerPort
        self.checkSources = checkSources
        self.batchSize = max(1, batchSize)
        self.maxPacketSize = max(576, maxPacketSize)
        self.udpOffloads = udpOffloads
        self.answerICMPQueries = answerICMPQueries
    }
}

/// The routes and per-peer counters the packet threads see: immutable, replaced whole.
final class EngineSnapshot: @unchecked Sendable {  // immutable after init; counters are atomics
    let generation: UInt64
    let table: RouteTable
    /// Per peer index: its counters and its PublicIP in network order (ready for sockaddr).
    let counters: [CounterBlock]
    let destinations: [UInt32]

    init(generation: UInt64, table: RouteTable, counters: [CounterBlock]) {
        self.generation = generation
        self.table = table
        self.counters = counters
        self.destinations = table.peers.map { $0.publicIP.rawValue.bigEndian }
    }
}

/// The udp backend's packet engine: moves packets between a TUN device and a UDP socket,
/// flannel wire-compatible (each datagram is one raw IPv4 packet), on two dedicated threads.
///
/// - TUN -> UDP: drains the TUN after every wakeup; validates each packet, finds the peer by
///   longest-prefix match, decrements the TTL and queues it for one sendmmsg per batch. No
///   peer: ICMP net unreachable back into the TUN, as flannel.
/// - UDP -> TUN: recvmmsg in batches; drops (and counts) datagrams from non-peers, with an
///   inner source outside the sender's subnet or an inner destination outside this node's
///   subnet, malformed ones and expiring ones; writes the rest to the TUN.
///
/// Peers arrive through ``update(peers:)`` as an immutable snapshot swapped atomically; the
/// threads read it once per batch, with no lock. Old snapshots are freed once both threads
/// have moved past them (each publishes the generation it holds).
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
/// The engine owns the device and socket it is given: ``stop()`` closes both.
public final class UDPEngine: Sendable {
    public let configuration: UDPEngineConfiguration
    private let tun: TUNDevice
    private let socket: UDPSocket

    /// Bits of an `Unmanaged<EngineSnapshot>` holding a +1 reference.
    private let current: Atomic<UInt>
    /// The snapshot generation each thread holds (QSBR-style reclamation).
    private let seenByTx: Atomic<UInt64>
    private let seenByRx: Atomic<UInt64>
    private let txCounters = CounterBlock(count: ThreadCounter.size)
    private let rxCounters = CounterBlock(count: ThreadCounter.size)
    private let running = Atomic<Bool>(false)

    private struct PeerKey: Hashable { var subnet: IPv4Network; var publicIP: IPv4Address }
    private struct State {
        var generation: UInt64 = 0
        var peerCounters: [PeerKey: CounterBlock] = [:]
        var retired: [EngineSnapshot] = []
        var threads: [OSThread] = []
        var wakeFD: Int32 = -1
        var started = false
        var stopped = false
    }
    private let state = Mutex(State())

    /// Creates an engine over an open TUN device and a bound socket, with no peers yet.
    public init(tun: TUNDevice, socket: UDPSocket, configuration: UDPEngineConfiguration) {
        self.tun = tun
        self.socket = socket
        self.configuration = configuration
        let initial = EngineSnapshot(generation: 0, table: RouteTable(peers: []), counters: [])
        current = Atomic(UInt(bitPattern: Unmanaged.passRetained(initial).toOpaque()))
        seenByTx = Atomic(0)
        seenByRx = Atomic(0)
    }

    deinit {
        stop()
        Unmanaged<EngineSnapshot>.fromOpaque(UnsafeRawPointer(bitPattern: current.load(ordering: .sequentiallyConsistent))!).release()
    }

    /// Replaces the peer set. Safe from any thread, at any time; takes effect at the
    /// threads' next batch. A peer's counters survive as long as its lease (subnet and
    /// PublicIP) stays in the set.
    public func update(peers: [PeerLease]) {
        let table = RouteTable(peers: peers)
        state.withLock { state in
            state.generation += 1
            var kept: [PeerKey: CounterBlock] = [:]
            let counters = table.peers.map { peer in
                let key = PeerKey(subnet: peer.subnet, publicIP: peer.publicIP)
                let block = state.peerCounters[key] ?? CounterBlock(count: PeerCounter.size)
                kept[key] = block
                return block
            }
            state.peerCounters = kept
            let snapshot = EngineSnapshot(generation: state.generation, table: table, counters: counters)
            let bits = UInt(bitPattern: Unmanaged.passRetained(snapshot).toOpaque())
            let old = current.exchange(bits, ordering: .sequentiallyConsistent)
            state.retired.append(Unmanaged<EngineSnapshot>.fromOpaque(UnsafeRawPointer(bitPattern: old)!).takeRetainedValue())
            reclaim(&state)
        }
    }

    /// Frees retired snapshots no thread can still be reading.
    private func reclaim(_ state: inout State) {
        guard state.started, !state.stopped else {
            state.retired.removeAll()
            return
        }
        let oldestInUse = min(seenByTx.load(ordering: .sequentiallyConsistent),
                              seenByRx.load(ordering: .sequentiallyConsistent))
        state.retired.removeAll { $0.generation < oldestInUse }
    }

    /// The current snapshot, for a packet thread: publishes the generation it now holds
    /// before the previous one is let go.
    @inline(__always)
    private func loadSnapshot(_ seen: borrowing Atomic<UInt64>) -> EngineSnapshot {
        let bits = current.load(ordering: .sequentiallyConsistent)
        let snapshot = Unmanaged<EngineSnapshot>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeUnretainedValue()
        seen.store(snapshot.generation, ordering: .sequentiallyConsistent)
        return snapshot
    }

    /// Starts the two packet threads.
    ///
    /// - Throws: ``SystemError`` if the engine was already started or stopped, or a thread
    ///   or the wakeup descriptor cannot be created.
    public func start() throws(SystemError) {
        try state.withLock { (state) throws(SystemError) in
            guard !state.started, !state.stopped else { throw SystemError("start: engine already started", errno: EINVAL) }
            let wake = twill_eventfd()
            guard wake >= 0 else { throw SystemError("eventfd") }
            state.wakeFD = wake
            // Both threads start past every snapshot retired so far.
            seenByTx.store(state.generation, ordering: .sequentiallyConsistent)
            seenByRx.store(state.generation, ordering: .sequentiallyConsistent)
            running.store(true, ordering: .sequentiallyConsistent)
            state.started = true
            let tunFD = tun.fileDescriptor, socketFD = socket.fileDescriptor
            do throws(SystemError) {
                state.threads.append(try OSThread.spawn(name: "twill-tun2udp") { [self] in
                    tunToUDP(tunFD: tunFD, socketFD: socketFD, wakeFD: wake)
                })
                state.threads.append(try OSThread.spawn(name: "twill-udp2tun") { [self] in
                    udpToTUN(tunFD: tunFD, socketFD: socketFD, wakeFD: wake)
                })
            } catch {
                running.store(false, ordering: .sequentiallyConsistent)
                var one: UInt64 = 1
                _ = Glibc.write(wake, &one, 8)
                for thread in state.threads { thread.join() }
                state.threads = []
                throw error
            }
        }
    }

    /// Stops the threads (they wake at once through an eventfd), waits for them, and closes
    /// the TUN device and the socket. Idempotent; the engine cannot be started again.
    public func stop() {
        let threads = state.withLock { state -> [OSThread] in
            guard !state.stopped else { return [] }
            state.stopped = true
            running.store(false, ordering: .sequentiallyConsistent)
            if state.wakeFD >= 0 {
                var one: UInt64 = 1
                _ = Glibc.write(state.wakeFD, &one, 8)
            }
            defer { state.threads = [] }
            return state.threads
        }
        for thread in threads { thread.join() }
        state.withLock { state in
            if state.wakeFD >= 0 { Glibc.close(state.wakeFD) }
            state.wakeFD = -1
            state.retired.removeAll()
        }
        tun.close()
        socket.close()
    }

    /// A value snapshot of all counters.
    public func counters() -> UDPEngineCounters {
        var drops: [DropReason: UInt64] = [:]
        for reason in DropReason.allCases {
            drops[reason] = txCounters.load(reason.rawValue) + rxCounters.load(reason.rawValue)
        }
        let peers: [UDPEngineCounters.Peer] = state.withLock { state in
            // Under the lock no update can retire the current snapshot.
            let snapshot = Unmanaged<EngineSnapshot>.fromOpaque(UnsafeRawPointer(bitPattern: current.load(ordering: .sequentiallyConsistent))!).takeUnretainedValue()
            return zip(snapshot.table.peers, snapshot.counters).map { peer, block in
                UDPEngineCounters.Peer(
                    subnet: peer.subnet, publicIP: peer.publicIP,
                    txPackets: block.load(PeerCounter.txPackets), txBytes: block.load(PeerCounter.txBytes),
                    rxPackets: block.load(PeerCounter.rxPackets), rxBytes: block.load(PeerCounter.rxBytes))
            }
        }
        return UDPEngineCounters(
            drops: drops,
            txPackets: txCounters.load(ThreadCounter.packets), txBytes: txCounters.load(ThreadCounter.bytes),
            rxPackets: rxCounters.load(ThreadCounter.packets), rxBytes: rxCounters.load(ThreadCounter.bytes),
            icmpUnreachableSent: txCounters.load(ThreadCounter.icmpSent), peers: peers)
    }

    // MARK: - TUN -> UDP

    /// What the TUN -> UDP thread does with one packet read from the TUN.
    private enum Verdict {
        case drop(DropReason)
        /// Answered with an ICMP message of this length, already in the ICMP buffer.
        case answer(Int)
        case forward(peer: Int)
    }

    /// Validates, routes and TTL-decrements one packet from the TUN (the part both read
    /// modes share).
    @inline(__always)
    private func classifyOutgoing(_ packet: UnsafeMutableRawBufferPointer, _ snapshot: EngineSnapshot,
                                  icmp: UnsafeMutableRawBufferPointer) -> Verdict {
        let header: IPv4Header
        do {
            header = try IPv4Header(parsing: UnsafeRawBufferPointer(packet))
        } catch {
            return .drop(packet.count > 0 && packet[0] >> 4 != 4 ? .notIPv4 : .malformed)
        }
        guard let peer = snapshot.table.lookup(header.destination) else {
            let n = ICMPUnreachable.build(offending: UnsafeRawBufferPointer(packet), header: header,
                                          source: configuration.tunAddress, into: icmp,
                                          answeringQueries: configuration.answerICMPQueries)
            return n > 0 ? .answer(n) : .drop(.noRoute)
        }
        guard IPv4Header.decrementTTL(packet.baseAddress!) else { return .drop(.ttlExpired) }
        return .forward(peer: peer)
    }

    private func tunToUDP(tunFD: Int32, socketFD: Int32, wakeFD: Int32) {
        // A thread that is gone holds no snapshot: let reclamation ignore it.
        defer { seenByTx.store(.max, ordering: .sequentiallyConsistent) }
        let virtio = tun.hasVirtioHeader
        // UDP_SEGMENT: one message per TSO super-packet, its segments back to back.
        var gso = virtio && configuration.udpOffloads && socket.supportsSegmentationOffload
        // Without GSO a TSO read becomes ~45 messages (more with a small MSS): room for two.
        let capacity = virtio && !gso ? max(configuration.batchSize, 128) : configuration.batchSize
        let batch = DatagramBatch(capacity: capacity, slotSize: gso ? 65536 : configuration.maxPacketSize,
                                  port: configuration.peerPort)
        // ICMP answers go back into the TUN; with a virtio header they need one (all zero) first.
        let icmpFrame = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 + ICMPUnreachable.maximumLength, alignment: 16)
        icmpFrame.initializeMemory(as: UInt8.self, repeating: 0)
        defer { icmpFrame.deallocate() }
        let icmp = UnsafeMutableRawBufferPointer(rebasing: icmpFrame[16...])
        let icmpPrefix = virtio ? VirtioNetHeader.size : 0
        // A super-packet from a TSO read lands here (virtio header at 6, IP header at 16).
        let superSize = 16 + 65536
        let superFrame = UnsafeMutableRawPointer.allocate(byteCount: superSize, alignment: 64)
        defer { superFrame.deallocate() }
        let lengths = UnsafeMutablePointer<Int>.allocate(capacity: max(capacity, 128))
        defer { lengths.deallocate() }
        let counters = txCounters
        let packetCapacity = batch.packetCapacity
        var fds = [pollfd(fd: tunFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]

        // Declared outside the loop: `flushQueued` captures them, and a capture of
        // loop-local variables could cost a heap box per wakeup.
        var snapshot = loadSnapshot(seenByTx)
        var queued = 0
        while running.load(ordering: .relaxed) {
            let ready = poll(&fds, 2, 1000)
            if ready < 0 && errno != EINTR { break }
            if fds[1].revents != 0 || fds[0].revents & Int16(POLLERR | POLLNVAL | POLLHUP) != 0 { break }
            snapshot = loadSnapshot(seenByTx)
            if ready <= 0 { continue }
            queued = 0
            func flushQueued() {
                flush(batch, socketFD, queued, counters)
                queued = 0
                snapshot = loadSnapshot(seenByTx)
                // The device refused segmentation offload: segment in userspace from now on.
                if gso && batch.sawSegmentationFailure { gso = false }
            }
            drain: while true {
                if queued == capacity { flushQueued() }
                let packet: UnsafeMutableRawBufferPointer
                var header = VirtioNetHeader.plain
                if virtio {
                    let n = read(tunFD, superFrame + 6, superSize - 6)
                    if n < 0 {
                        if errno == EINTR { continue }
                        break drain
                    }
                    guard n >= VirtioNetHeader.size else { counters.add(DropReason.malformed.rawValue); continue }
                    header = VirtioNetHeader(reading: superFrame + 6)
                    packet = UnsafeMutableRawBufferPointer(start: superFrame + 16, count: n - VirtioNetHeader.size)
                } else {
                    let n = read(tunFD, batch.slot(queued), packetCapacity)
                    if n < 0 {
                        if errno == EINTR { continue }
                        break drain
                    }
                    packet = UnsafeMutableRawBufferPointer(start: batch.slot(queued), count: n)
                }
                let peer: Int
                switch classifyOutgoing(packet, snapshot, icmp: icmp) {
                case .drop(let reason):
                    counters.add(reason.rawValue)
                    continue drain
                case .answer(let n):
                    counters.add(DropReason.noRoute.rawValue)
                    if write(tunFD, icmp.baseAddress! - icmpPrefix, n + icmpPrefix) == n + icmpPrefix {
                        counters.add(ThreadCounter.icmpSent)
                    }
                    continue drain
                case .forward(let index):
                    peer = index
                }
                let destination = snapshot.destinations[peer]
                let peerCounters = snapshot.counters[peer]
                if !virtio {
                    lengths[0] = packet.count
                    finishQueued(batch, queued, 1, lengths, destination, peerCounters, counters)
                    queued += 1
                    continue drain
                }
                let gsoType = header.gsoType & ~VirtioNetHeader.gsoECN
                if gsoType == VirtioNetHeader.gsoNone {
                    if header.flags & VirtioNetHeader.needsChecksum != 0,
                       !TCPSegmenter.finishChecksum(packet, start: Int(header.checksumStart), offset: Int(header.checksumOffset)) {
                        counters.add(DropReason.malformed.rawValue)
                        continue drain
                    }
                    guard packet.count <= packetCapacity else {
                        counters.add(DropReason.oversize.rawValue)
                        continue drain
                    }
                    batch.slot(queued).copyMemory(from: packet.baseAddress!, byteCount: packet.count)
                    lengths[0] = packet.count
                    finishQueued(batch, queued, 1, lengths, destination, peerCounters, counters)
                    queued += 1
                    continue drain
                }
                let segmentSize = Int(header.gsoSize)
                guard gsoType == VirtioNetHeader.gsoTCPv4,
                      let needed = TCPSegmenter.segmentCount(UnsafeRawBufferPointer(packet), segmentSize: segmentSize),
                      let headers = TCPSegmenter.headerLengths(UnsafeRawBufferPointer(packet)) else {
                    counters.add(DropReason.malformed.rawValue)
                    continue drain
                }
                if gso {
                    // Back-to-back segments, at most 64 and 65507 bytes per message.
                    let segmentLength = headers.ip + headers.tcp + segmentSize
                    let perMessage = max(1, min(64, 65507 / segmentLength))
                    var first = 0
                    while first < needed {
                        if queued == capacity { flushQueued() }
                        let made = TCPSegmenter.split(
                            UnsafeRawBufferPointer(packet), segmentSize: segmentSize, first: first, output: batch.slot(queued),
                            stride: segmentLength, maxSegments: perMessage, lengths: lengths)
                        guard made > 0 else {
                            counters.add(DropReason.malformed.rawValue)
                            continue drain
                        }
                        var bytes = 0
                        for k in 0..<made { bytes += lengths[k] }
                        batch.setOutgoing(queued, length: bytes, addressNetworkOrder: destination, segmentSize: segmentLength)
                        peerCounters.add(PeerCounter.txPackets, UInt64(made))
                        peerCounters.add(PeerCounter.txBytes, UInt64(bytes))
                        counters.add(ThreadCounter.packets, UInt64(made))
                        counters.add(ThreadCounter.bytes, UInt64(bytes))
                        queued += 1
                        first += made
                    }
                    continue drain
                }
                // One datagram per slot, in as many batches as it takes.
                var first = 0
                while first < needed {
                    if queued == capacity { flushQueued() }
                    let made = TCPSegmenter.split(
                        UnsafeRawBufferPointer(packet), segmentSize: segmentSize, first: first, output: batch.slot(queued),
                        stride: batch.slotSize, maxSegments: capacity - queued, lengths: lengths)
                    guard made > 0 else {
                        counters.add(DropReason.malformed.rawValue)
                        continue drain
                    }
                    finishQueued(batch, queued, made, lengths, destination, peerCounters, counters)
                    queued += made
                    first += made
                }
            }
            if queued > 0 { flushQueued() }
        }
    }

    /// Addresses `count` single-datagram messages already in slots `first...` to one peer
    /// and counts them.
    @inline(__always)
    private func finishQueued(_ batch: DatagramBatch, _ first: Int, _ count: Int, _ lengths: UnsafeMutablePointer<Int>,
                              _ destination: UInt32, _ peerCounters: CounterBlock, _ counters: CounterBlock) {
        var bytes = 0
        for i in 0..<count {
            batch.setOutgoing(first + i, length: lengths[i], addressNetworkOrder: destination)
            bytes += lengths[i]
        }
        peerCounters.add(PeerCounter.txPackets, UInt64(count))
        peerCounters.add(PeerCounter.txBytes, UInt64(bytes))
        counters.add(ThreadCounter.packets, UInt64(count))
        counters.add(ThreadCounter.bytes, UInt64(bytes))
    }

    @inline(__always)
    private func flush(_ batch: DatagramBatch, _ socketFD: Int32, _ count: Int, _ counters: CounterBlock) {
        let failed = batch.send(socketFD, count: count)
        if failed > 0 { counters.add(DropReason.sendFailed.rawValue, UInt64(failed)) }
    }

    // MARK: - UDP -> TUN

    private func udpToTUN(tunFD: Int32, socketFD: Int32, wakeFD: Int32) {
        defer { seenByRx.store(.max, ordering: .sequentiallyConsistent) }
        let virtio = tun.hasVirtioHeader
        let gro = configuration.udpOffloads && socket.enableReceiveOffload()
        // With GRO one message can hold ~45 datagrams: 64 KiB slots.
        let batch = DatagramBatch(capacity: configuration.batchSize, slotSize: gro ? 65536 : configuration.maxPacketSize,
                                  port: configuration.peerPort)
        let coalescer = TCPCoalescer()
        // A plain TUN write with a virtio header: [10 zero bytes][packet] through writev.
        let zeroHeader = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        zeroHeader.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
        defer { zeroHeader.deallocate() }
        var plainIO = [iovec(iov_base: zeroHeader, iov_len: VirtioNetHeader.size), iovec()]
        let counters = rxCounters
        let localSubnet = configuration.localSubnet
        let checkSources = configuration.checkSources
        let maxPacketSize = configuration.maxPacketSize
        let capacity = batch.capacity
        var fds = [pollfd(fd: socketFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]

        @inline(__always) func writeFrame(_ frame: UnsafeRawPointer, _ length: Int) {
            var written = write(tunFD, frame, length)
            while written < 0 && errno == EINTR { written = write(tunFD, frame, length) }
            if written != length { counters.add(DropReason.tunWriteFailed.rawValue) }
        }
        @inline(__always) func writePlain(_ packet: UnsafeMutableRawPointer, _ length: Int) {
            guard virtio else { return writeFrame(packet, length) }
            plainIO[1] = iovec(iov_base: packet, iov_len: length)
            var written = writev(tunFD, &plainIO, 2)
            while written < 0 && errno == EINTR { written = writev(tunFD, &plainIO, 2) }
            if written != length + VirtioNetHeader.size { counters.add(DropReason.tunWriteFailed.rawValue) }
        }
        @inline(__always) func flushCoalesced() {
            if coalescer.count > 0 {
                let (frame, length) = coalescer.take(virtio: true)
                writeFrame(frame, length)
            }
        }

        // Declared once, outside the loop: `deliver` captures it, and a capture of a
        // loop-local variable would cost a heap box per wakeup.
        var snapshot = loadSnapshot(seenByRx)
        while running.load(ordering: .relaxed) {
            let ready = poll(&fds, 2, 1000)
            if ready < 0 && errno != EINTR { break }
            if fds[1].revents != 0 || fds[0].revents & Int16(POLLNVAL) != 0 { break }
            snapshot = loadSnapshot(seenByRx)
            if ready <= 0 { continue }

            /// Checks one datagram and passes it on (merged or as it is).
            @inline(__always) func deliver(_ slot: UnsafeMutableRawPointer, _ length: Int, _ outer: IPv4Address) {
                if length > maxPacketSize {
                    counters.add(DropReason.oversize.rawValue)
                    return
                }
                if checkSources && snapshot.table.peer(publicIP: outer) == nil {
                    counters.add(DropReason.unknownSender.rawValue)
                    return
                }
                let header: IPv4Header
                do {
                    header = try IPv4Header(parsing: UnsafeRawBufferPointer(start: slot, count: length), verifyChecksum: true)
                } catch {
                    counters.add(DropReason.malformed.rawValue)
                    return
                }
                let peer: Int
                if checkSources {
                    switch snapshot.table.checkSender(outerSource: outer, innerSource: header.source) {
                    case .peer(let index): peer = index
                    case .unknownSender:
                        counters.add(DropReason.unknownSender.rawValue)
                        return
                    case .spoofedInnerSource:
                        counters.add(DropReason.spoofedInnerSource.rawValue)
                        return
                    }
                } else {
                    peer = snapshot.table.peer(publicIP: outer) ?? -1
                }
                guard localSubnet.contains(header.destination) else {
                    counters.add(DropReason.wrongInnerDestination.rawValue)
                    return
                }
                guard IPv4Header.decrementTTL(slot) else {
                    counters.add(DropReason.ttlExpired.rawValue)
                    return
                }
                counters.add(ThreadCounter.packets)
                counters.add(ThreadCounter.bytes, UInt64(length))
                if peer >= 0 {
                    let peerCounters = snapshot.counters[peer]
                    peerCounters.add(PeerCounter.rxPackets)
                    peerCounters.add(PeerCounter.rxBytes, UInt64(length))
                }
                if virtio {
                    if coalescer.offer(slot, length) { return }
                    flushCoalesced()
                    if coalescer.offer(slot, length) { return }
                }
                writePlain(slot, length)
            }

            while true {
                let received = batch.receive(socketFD, control: gro)
                if received == 0 { break }
                for i in 0..<received {
                    if batch.wasTruncated(i) {
                        counters.add(DropReason.oversize.rawValue)
                        continue
                    }
                    let length = batch.receivedLength(i)
                    let outer = IPv4Address(rawValue: batch.sourceAddress(i))
                    let slot = batch.slot(i)
                    let segment = gro ? batch.groSegmentSize(i) : 0
                    if segment <= 0 || segment >= length {
                        deliver(slot, length, outer)
                        continue
                    }
                    var offset = 0
                    while offset < length {
                        deliver(slot + offset, min(segment, length - offset), outer)
                        offset += segment
                    }
                }
                flushCoalesced()
                if received < capacity { break }
                snapshot = loadSnapshot(seenByRx)
            }
        }
    }
}
