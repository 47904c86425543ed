import CTwillSystem
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// TUN -> UDP for one queue: reads packets (or TSO super-packets) from the TUN, validates and
/// routes each, decrements its TTL and sends it to the peer's PublicIP, one inner packet per
/// datagram. No peer: ICMP net unreachable back into the TUN, as flannel.
///
/// A super-packet is split in userspace (``TCPSegmenter``). With UDP GSO the payload is never
/// copied: the TUN is read into one of ``frameCount`` frames, each segment's headers are
/// written beside it, and one UDP_SEGMENT message gathers header and payload pieces
/// (``ScatterBatch``); without GSO each segment is copied into a datagram of its own.
/// Messages go out in one sendmmsg per sending socket and batch.
///
/// With WireGuard (``EngineConfiguration/wireGuard``) each datagram is a transport
/// message sealed in place: the packet is read (or split) 16 bytes into its slot, so the
/// header goes before it and the padding and tag after it, with no copy and no allocation.
/// It leaves from the listening socket, as WireGuard peers expect. Gathered GSO sends are
/// off then (each segment is sealed on its own, in its own slot).
///
/// Owned by the one thread that calls ``run(budget:)``; every buffer is allocated here, once.
final class OutboundPump {
    private let engine: PacketEngine
    private let queue: EngineQueue
    /// The TUN queue's descriptor (non-blocking): poll it for POLLIN.
    let fileDescriptor: Int32
    private let tun: any PacketDevice
    private let virtio: Bool
    private let senderCount: Int
    /// The sending sockets, and which one (an index) each queued message leaves by.
    private let senders: [any DatagramSocket]
    private let slotSender: UnsafeMutablePointer<Int32>
    /// UDP_SEGMENT in use; cleared for good (on this queue) once a send is refused with
    /// EIO, the sign of a route whose device cannot segment UDP.
    private var gso: Bool
    private let capacity: Int
    /// Plain TUN, or virtio without GSO: one datagram per slot.
    private let batch: DatagramBatch
    /// Virtio with GSO: gathered messages over the TUN read frames.
    private let scatter: ScatterBatch?
    private let frames: UnsafeMutableRawPointer?
    /// TUN reads (frames) between two sends in the gathered mode.
    static let frameCount = 16
    /// ICMP answers go back into the TUN; with a virtio header they need one (all zero) first.
    private let icmpFrame: UnsafeMutableRawBufferPointer
    /// A super-packet from a TSO read lands here (virtio header at 6, IP header at 16).
    private let superFrame: UnsafeMutableRawPointer
    private static let superSize = 16 + 65536
    /// How long one ``run(budget:)`` may wait in all for room in a full socket buffer before
    /// it drops what is left: the same thread may be needed for the other direction.
    static let stallMilliseconds: Int32 = 50
    private let lengths: UnsafeMutablePointer<Int>
    /// WireGuard: the room for the message header before each packet (16, else 0), and the
    /// cipher context this thread seals with.
    private let headroom: Int
    private let aead: AEADContext?
    /// WireGuard with UDP_SEGMENT: a TSO super-packet's sealed segments go back to back in
    /// one message. Cleared for good (on this queue) once the kernel refuses one with EIO.
    private var wireGuardGSO: Bool
    /// Datagrams go to the peers' PublicIPv6 (an IPv6 underlay).
    private let ipv6Underlay: Bool

    init(engine: PacketEngine, queue: EngineQueue) {
        self.engine = engine
        self.queue = queue
        let configuration = engine.configuration
        let wireGuard = configuration.wireGuard != nil
        // WireGuard peers answer (and roam) to the port a message came from: the listening one.
        let sockets = wireGuard ? [queue.socket] : engine.sendSockets
        headroom = wireGuard ? WireGuardMessage.transportHeaderSize : 0
        aead = wireGuard ? AEADContext() : nil
        fileDescriptor = queue.tun.fileDescriptor
        tun = queue.tun
        virtio = queue.tun.hasVirtioHeader
        senderCount = sockets.count
        senders = sockets
        gso = !wireGuard && virtio && configuration.udpOffloads && sockets[0].supportsSegmentationOffload
        wireGuardGSO = wireGuard && virtio && configuration.udpOffloads && sockets[0].supportsSegmentationOffload
        // Without GSO a TSO read becomes ~45 messages (more with a small MSS): room for two.
        capacity = virtio ? max(configuration.batchSize, 128) : configuration.batchSize
        // WireGuard: header before, at most 15 bytes of padding and the tag after.
        ipv6Underlay = configuration.ipv6Underlay
        batch = DatagramBatch(
            capacity: capacity, slotSize: configuration.maxPacketSize + (wireGuard ? 48 : 0), port: configuration.peerPort,
            ipv6: ipv6Underlay)
        if gso {
            scatter = ScatterBatch(capacity: configuration.batchSize, port: configuration.peerPort, ipv6: ipv6Underlay)
            frames = ZeroedMemory.allocate(byteCount: Self.frameCount * Self.superSize)
        } else {
            scatter = nil
            frames = nil
        }
        icmpFrame = .allocate(byteCount: 16 + max(ICMPUnreachable.maximumLength, ICMPv6Unreachable.maximumLength), alignment: 16)
        icmpFrame.initializeMemory(as: UInt8.self, repeating: 0)
        superFrame = ZeroedMemory.allocate(byteCount: Self.superSize)
        lengths = .allocate(capacity: max(capacity, 128))
        slotSender = .allocate(capacity: capacity)
        slotSender.initialize(repeating: 0, count: capacity)
    }

    deinit {
        slotSender.deallocate()
        icmpFrame.deallocate()
        ZeroedMemory.deallocate(superFrame)
        lengths.deallocate()
        if let frames { ZeroedMemory.deallocate(frames) }
    }

    /// What happens to one packet read from the TUN.
    private enum Verdict {
        case drop(DropReason)
        /// Answered with an ICMP message of this length, already in the ICMP buffer.
        case answer(Int)
        case forward(peer: Int)
    }

    /// Validates, routes and TTL-decrements one packet from the TUN.
    @inline(__always)
    private func classify(
        _ packet: UnsafeMutableRawBufferPointer, _ snapshot: EngineSnapshot,
        icmp: UnsafeMutableRawBufferPointer
    ) -> Verdict {
        if packet.count > 0, packet[0] >> 4 == 6 { return classify6(packet, snapshot, icmp: icmp) }
        // An IPv6-only node carries no IPv4 (and has no IPv4 address to answer from).
        guard let tunAddress = engine.configuration.tunAddress else { return .drop(.wrongFamily) }
        let header: IPv4Header
        do {
            header = try IPv4Header(parsing: UnsafeRawBufferPointer(packet))
        } catch {
            return .drop(packet.count > 0 && packet[0] >> 4 != 4 ? .wrongFamily : .malformed)
        }
        guard let peer = snapshot.table.lookup(header.destination) else {
            let n = ICMPUnreachable.build(
                offending: UnsafeRawBufferPointer(packet), header: header,
                source: tunAddress, into: icmp,
                answeringQueries: engine.configuration.answerICMPQueries)
            return n > 0 ? .answer(n) : .drop(.noRoute)
        }
        guard IPv4Header.decrementTTL(packet.baseAddress!) else { return .drop(.ttlExpired) }
        return .forward(peer: peer)
    }

    /// ``classify(_:_:icmp:)`` for an IPv6 packet: routed by the peers' IPv6 subnets on a
    /// dual-stack node, dropped as not IPv4 otherwise.
    @inline(__always)
    private func classify6(
        _ packet: UnsafeMutableRawBufferPointer, _ snapshot: EngineSnapshot,
        icmp: UnsafeMutableRawBufferPointer
    ) -> Verdict {
        let configuration = engine.configuration
        guard let tunAddress6 = configuration.tunAddress6 else { return .drop(.wrongFamily) }
        let header: IPv6Header
        do { header = try IPv6Header(parsing: UnsafeRawBufferPointer(packet)) } catch { return .drop(.malformed) }
        guard let peer = snapshot.table.lookup(header.destination) else {
            let n = ICMPv6Unreachable.build(
                offending: UnsafeRawBufferPointer(packet), header: header, source: tunAddress6,
                into: icmp, answeringQueries: configuration.answerICMPQueries)
            return n > 0 ? .answer(n) : .drop(.noRoute)
        }
        guard IPv6Header.decrementHopLimit(packet.baseAddress!) else { return .drop(.ttlExpired) }
        return .forward(peer: peer)
    }

    /// The peer index for one packet read from the TUN, or nil once it has been dropped
    /// (and counted) or answered with ICMP net unreachable.
    @inline(__always)
    private func route(_ packet: UnsafeMutableRawBufferPointer, _ snapshot: EngineSnapshot, _ counters: CounterBlock) -> Int? {
        let icmp = UnsafeMutableRawBufferPointer(rebasing: icmpFrame[16...])
        switch classify(packet, snapshot, icmp: icmp) {
        case .drop(let reason):
            counters.add(reason.rawValue)
            return nil
        case .answer(let n):
            counters.add(DropReason.noRoute.rawValue)
            let prefix = virtio ? VirtioNetHeader.size : 0
            if tun.writePacket(icmp.baseAddress! - prefix, length: n + prefix) == n + prefix {
                counters.add(ThreadCounter.icmpSent)
            }
            return nil
        case .forward(let peer):
            return peer
        }
    }

    /// The socket (an index into ``senders``) all datagrams of this packet (or super-packet)
    /// leave by: its flow's.
    @inline(__always)
    private func sendingSocket(_ packet: UnsafeMutableRawBufferPointer) -> Int32 {
        senderCount == 1 ? 0 : Int32(FlowHash.index(of: UnsafeRawBufferPointer(packet), count: senderCount))
    }

    /// Readies a packet the TUN handed over whole (no GSO): finishes a partial checksum and
    /// checks its size. False once it has been dropped and counted.
    @inline(__always)
    private func finishSingle(
        _ packet: UnsafeMutableRawBufferPointer, _ header: VirtioNetHeader, limit: Int,
        _ counters: CounterBlock
    ) -> Bool {
        if header.flags & VirtioNetHeader.needsChecksum != 0,
            !TCPSegmenter.finishChecksum(packet, start: Int(header.checksumStart), offset: Int(header.checksumOffset))
        {
            counters.add(DropReason.malformed.rawValue)
            return false
        }
        guard packet.count <= limit else {
            counters.add(DropReason.oversize.rawValue)
            return false
        }
        return true
    }

    /// Publishes the snapshot generation this pump holds (see ``PacketEngine``): call when idle.
    func refreshSnapshot() { _ = engine.loadSnapshot(queue.seenByTx) }

    /// Reads up to `budget` packets from the TUN and sends them; nothing is left queued.
    ///
    /// - Returns: true if the budget ran out (the TUN may hold more), false once a read
    ///   found it empty.
    func run(budget: Int) -> Bool {
        if gso, let scatter, let frames { return runGathered(budget: budget, scatter, frames) }
        let tun = self.tun
        let virtio = self.virtio
        let capacity = self.capacity
        let batch = self.batch
        let lengths = self.lengths
        let slotSender = self.slotSender
        let superFrame = self.superFrame
        let superSize = Self.superSize
        let counters = queue.txCounters
        let peerOffset = queue.peerOffset
        let headroom = self.headroom
        let packetCapacity = batch.slotSize - (headroom > 0 ? 48 : 0)
        var snapshot = engine.loadSnapshot(queue.seenByTx)
        // Messages queued, and slots of buffer they take (a sealed GSO message spans several).
        var queued = 0
        var slotsUsed = 0
        var reads = 0
        var stallBudget = Self.stallMilliseconds

        func flushQueued() {
            flushRuns(queued, counters, &stallBudget) { socket, start, count, budget in
                let (failed, refused) = DatagramBatch.sendMessages(socket, batch.messages + start, count: count, stallBudget: &budget)
                // The route's device cannot segment: one datagram per message from now on.
                if refused { wireGuardGSO = false }
                return failed
            }
            queued = 0
            slotsUsed = 0
            snapshot = engine.loadSnapshot(queue.seenByTx)
        }
        defer { if queued > 0 { flushQueued() } }

        drain: while reads < budget {
            if slotsUsed == capacity || queued == capacity { flushQueued() }
            let packet: UnsafeMutableRawBufferPointer
            var header = VirtioNetHeader.plain
            if virtio {
                let n = tun.readPacket(into: superFrame + 6, capacity: superSize - 6)
                if n < 0 { return false }
                reads += 1
                guard n >= VirtioNetHeader.size else {
                    counters.add(DropReason.malformed.rawValue)
                    continue
                }
                header = VirtioNetHeader(reading: superFrame + 6)
                packet = UnsafeMutableRawBufferPointer(start: superFrame + 16, count: n - VirtioNetHeader.size)
            } else {
                let n = tun.readPacket(into: batch.slot(slotsUsed) + headroom, capacity: packetCapacity)
                if n < 0 { return false }
                reads += 1
                packet = UnsafeMutableRawBufferPointer(start: batch.slot(slotsUsed) + headroom, count: n)
            }
            guard let peer = route(packet, snapshot, counters) else { continue drain }
            let destination = snapshot.destinations[peer]
            let peerCounters = snapshot.counters[peer]
            let sender = sendingSocket(packet)
            if !virtio {
                lengths[0] = packet.count
                slotSender[queued] = sender
                if finishQueued(queued, slotsUsed, 1, peer, snapshot, destination, peerCounters, peerOffset, counters) {
                    queued += 1
                    slotsUsed += 1
                }
                continue drain
            }
            let gsoType = header.gsoType & ~VirtioNetHeader.gsoECN
            if gsoType == VirtioNetHeader.gsoNone {
                guard finishSingle(packet, header, limit: packetCapacity, counters) else { continue drain }
                (batch.slot(slotsUsed) + headroom).copyMemory(from: packet.baseAddress!, byteCount: packet.count)
                lengths[0] = packet.count
                slotSender[queued] = sender
                if finishQueued(queued, slotsUsed, 1, peer, snapshot, destination, peerCounters, peerOffset, counters) {
                    queued += 1
                    slotsUsed += 1
                }
                continue drain
            }
            let segmentSize = Int(header.gsoSize)
            guard gsoType == VirtioNetHeader.gsoTCPv4 || gsoType == VirtioNetHeader.gsoTCPv6,
                let needed = TCPSegmenter.segmentCount(UnsafeRawBufferPointer(packet), segmentSize: segmentSize)
            else {
                counters.add(DropReason.malformed.rawValue)
                continue drain
            }
            if wireGuardGSO, let plane = snapshot.wireGuard, let aead,
                let headerLengths = TCPSegmenter.headerLengths(UnsafeRawBufferPointer(packet))
            {
                // Sealed datagrams back to back, one UDP_SEGMENT message per run of them.
                let full = headerLengths.ip + headerLengths.tcp + segmentSize
                let stride = WireGuardMessage.keepaliveSize + WireGuardMessage.paddedLength(full, mtu: plane.mtu)
                guard full <= packetCapacity else {
                    counters.add(DropReason.oversize.rawValue)
                    continue drain
                }
                let perMessage = max(1, min(ScatterBatch.maximumSegments, 65507 / stride, (capacity * batch.slotSize) / stride))
                var first = 0
                while first < needed {
                    let room = (capacity - slotsUsed) * batch.slotSize / stride
                    if queued == capacity || room < min(perMessage, needed - first) { flushQueued() }
                    let base = batch.slot(slotsUsed)
                    let made = TCPSegmenter.split(
                        UnsafeRawBufferPointer(packet), segmentSize: segmentSize, first: first,
                        output: base + WireGuardMessage.transportHeaderSize,
                        stride: stride, room: stride - WireGuardMessage.keepaliveSize, maxSegments: perMessage, lengths: lengths)
                    guard made > 0 else {
                        counters.add(DropReason.malformed.rawValue)
                        continue drain
                    }
                    slotSender[queued] = sender
                    guard
                        let bytes = sealRun(queued, base, stride, made, peer, plane, aead, destination, peerCounters, peerOffset, counters)
                    else {
                        // Staged for after the handshake; the next segments reuse the place.
                        first += made
                        continue
                    }
                    queued += 1
                    slotsUsed += (bytes + batch.slotSize - 1) / batch.slotSize
                    first += made
                }
                continue drain
            }
            // One datagram per slot, in as many batches as it takes.
            var first = 0
            while first < needed {
                if slotsUsed == capacity { flushQueued() }
                let made = TCPSegmenter.split(
                    UnsafeRawBufferPointer(packet), segmentSize: segmentSize, first: first, output: batch.slot(slotsUsed) + headroom,
                    stride: batch.slotSize, room: packetCapacity, maxSegments: capacity - slotsUsed, lengths: lengths)
                guard made > 0 else {
                    counters.add(DropReason.malformed.rawValue)
                    continue drain
                }
                for k in 0..<made { slotSender[queued + k] = sender }
                guard finishQueued(queued, slotsUsed, made, peer, snapshot, destination, peerCounters, peerOffset, counters) else {
                    // WireGuard staged them for after the handshake; the next segments reuse the slots.
                    first += made
                    continue
                }
                queued += made
                slotsUsed += made
                first += made
            }
        }
        return true
    }

    /// ``run(budget:)`` with UDP GSO over a virtio TUN: no payload byte is copied in
    /// userspace. Each read lands in a frame of its own; a frame is reused only after the
    /// messages pointing into it have been sent.
    private func runGathered(budget: Int, _ scatter: ScatterBatch, _ frames: UnsafeMutableRawPointer) -> Bool {
        let tun = self.tun
        let frameSize = Self.superSize
        let frameCount = Self.frameCount
        let capacity = scatter.capacity
        let lengths = self.lengths
        let slotSender = self.slotSender
        let counters = queue.txCounters
        let peerOffset = queue.peerOffset
        let maxPacketSize = engine.configuration.maxPacketSize
        let headerRoom = ScatterBatch.headerRoom
        var snapshot = engine.loadSnapshot(queue.seenByTx)
        var queued = 0
        var framesUsed = 0
        var reads = 0
        var refused = false
        var stallBudget = Self.stallMilliseconds
        defer { if refused { gso = false } }

        /// Sends what is queued. Between packets every frame is free again; in the middle of
        /// one (`live` frame still being split) the frames up to it stay taken.
        func flushQueued(live: Int?) {
            flushRuns(queued, counters, &stallBudget) { scatter.send($0, from: $1, count: $2, stallBudget: &$3) }
            queued = 0
            framesUsed = live.map { $0 + 1 } ?? 0
            snapshot = engine.loadSnapshot(queue.seenByTx)
            // The device refused segmentation offload: segment into copies from now on.
            if scatter.sawSegmentationFailure { refused = true }
        }
        defer { if queued > 0 { flushQueued(live: nil) } }

        drain: while reads < budget && !refused {
            if framesUsed == frameCount || queued == capacity {
                flushQueued(live: nil)
                if refused { break } // read nothing more for this mode: the copy path takes over
            }
            let frameIndex = framesUsed
            let frame = frames + frameIndex * frameSize
            let n = tun.readPacket(into: frame + 6, capacity: frameSize - 6)
            if n < 0 { return false }
            reads += 1
            guard n >= VirtioNetHeader.size else {
                counters.add(DropReason.malformed.rawValue)
                continue
            }
            let header = VirtioNetHeader(reading: frame + 6)
            let packet = UnsafeMutableRawBufferPointer(start: frame + 16, count: n - VirtioNetHeader.size)
            guard let peer = route(packet, snapshot, counters) else { continue drain }
            let destination = snapshot.destinations[peer]
            let peerCounters = snapshot.counters[peer]
            let sender = sendingSocket(packet)
            let gsoType = header.gsoType & ~VirtioNetHeader.gsoECN
            if gsoType == VirtioNetHeader.gsoNone {
                guard finishSingle(packet, header, limit: maxPacketSize, counters) else { continue drain }
                scatter.setPiece(queued, 0, packet.baseAddress!, packet.count)
                if ipv6Underlay {
                    scatter.finish(queued, pieces: 1, length: packet.count, address6: snapshot.destinations6[peer], segmentSize: 0)
                } else {
                    scatter.finish(queued, pieces: 1, length: packet.count, addressNetworkOrder: destination, segmentSize: 0)
                }
                slotSender[queued] = sender
                peerCounters.add(peerOffset + PeerCounter.txPackets)
                peerCounters.add(peerOffset + PeerCounter.txBytes, UInt64(packet.count))
                counters.add(ThreadCounter.packets)
                counters.add(ThreadCounter.bytes, UInt64(packet.count))
                queued += 1
                framesUsed = frameIndex + 1
                continue drain
            }
            let segmentSize = Int(header.gsoSize)
            guard gsoType == VirtioNetHeader.gsoTCPv4 || gsoType == VirtioNetHeader.gsoTCPv6,
                let needed = TCPSegmenter.segmentCount(UnsafeRawBufferPointer(packet), segmentSize: segmentSize),
                let headerLengths = TCPSegmenter.headerLengths(UnsafeRawBufferPointer(packet))
            else {
                counters.add(DropReason.malformed.rawValue)
                continue drain
            }
            let headers = headerLengths.ip + headerLengths.tcp
            // At most 64 datagrams and 65507 bytes per message.
            let segmentLength = headers + segmentSize
            guard segmentLength <= maxPacketSize else {
                counters.add(DropReason.oversize.rawValue)
                continue drain
            }
            let perMessage = max(1, min(ScatterBatch.maximumSegments, 65507 / segmentLength))
            framesUsed = frameIndex + 1
            var first = 0
            while first < needed {
                if queued == capacity {
                    flushQueued(live: frameIndex)
                    if refused {
                        // The rest would be refused too; TCP resends it through the copy path.
                        counters.add(DropReason.sendFailed.rawValue, UInt64(needed - first))
                        continue drain
                    }
                }
                let area = scatter.headerArea(queued)
                let made = TCPSegmenter.segmentHeaders(
                    UnsafeRawBufferPointer(packet), segmentSize: segmentSize, first: first, headers: area,
                    headerStride: headerRoom, maxSegments: perMessage, lengths: lengths)
                guard made > 0 else {
                    counters.add(DropReason.malformed.rawValue)
                    continue drain
                }
                var bytes = 0
                var payload = UnsafeRawPointer(packet.baseAddress!) + headers + first * segmentSize
                for k in 0..<made {
                    scatter.setPiece(queued, 2 * k, area + k * headerRoom, headers)
                    scatter.setPiece(queued, 2 * k + 1, payload, lengths[k] - headers)
                    payload += segmentSize
                    bytes += lengths[k]
                }
                if ipv6Underlay {
                    scatter.finish(
                        queued, pieces: 2 * made, length: bytes, address6: snapshot.destinations6[peer], segmentSize: segmentLength)
                } else {
                    scatter.finish(
                        queued, pieces: 2 * made, length: bytes, addressNetworkOrder: destination,
                        segmentSize: segmentLength)
                }
                slotSender[queued] = sender
                peerCounters.add(peerOffset + PeerCounter.txPackets, UInt64(made))
                peerCounters.add(peerOffset + PeerCounter.txBytes, UInt64(bytes))
                counters.add(ThreadCounter.packets, UInt64(made))
                counters.add(ThreadCounter.bytes, UInt64(bytes))
                queued += 1
                first += made
            }
        }
        return true
    }

    /// Addresses `count` single-datagram messages (`first...`) over slots `slot...`
    /// (lengths in ``lengths``) to peer `peer` and counts them; with WireGuard, seals them
    /// first. False when they were dropped (and counted): WireGuard has no session keys for
    /// the peer yet.
    @inline(__always)
    private func finishQueued(
        _ first: Int, _ slot: Int, _ count: Int, _ peer: Int, _ snapshot: EngineSnapshot, _ destination: UInt32,
        _ peerCounters: CounterBlock, _ peerOffset: Int, _ counters: CounterBlock
    ) -> Bool {
        if let plane = snapshot.wireGuard, let aead {
            return sealQueued(first, slot, count, peer, plane, aead, destination, peerCounters, peerOffset, counters)
        }
        var bytes = 0
        if ipv6Underlay {
            let address6 = snapshot.destinations6[peer]
            for i in 0..<count {
                batch.setOutgoing(first + i, base: batch.slot(slot + i), length: lengths[i], address6: address6)
                bytes += lengths[i]
            }
        } else {
            for i in 0..<count {
                batch.setOutgoing(first + i, base: batch.slot(slot + i), length: lengths[i], addressNetworkOrder: destination)
                bytes += lengths[i]
            }
        }
        account(count, bytes, peerCounters, peerOffset, counters)
        return true
    }

    /// A packet for a peer without session keys (a handshake is under way): kept for the
    /// control thread to send once it completes; the oldest staged one is dropped (and
    /// counted) when too many wait.
    private func stage(
        _ packet: UnsafeRawBufferPointer, _ peer: Int, _ plane: WireGuardPlane, _ peerCounters: CounterBlock, _ peerOffset: Int,
        _ counters: CounterBlock
    ) {
        guard let activity = plane.activity[peer] else {
            counters.add(DropReason.noSessionKeys.rawValue)
            return
        }
        if !activity.stage(packet) { counters.add(DropReason.noSessionKeys.rawValue) }
        // Counted as sent now: the control thread sends it (or it was the oldest, dropped above).
        account(1, packet.count, peerCounters, peerOffset, counters)
    }

    /// Counts `count` datagrams of `bytes` (inner packets) sent to one peer.
    @inline(__always)
    private func account(_ count: Int, _ bytes: Int, _ peerCounters: CounterBlock, _ peerOffset: Int, _ counters: CounterBlock) {
        peerCounters.add(peerOffset + PeerCounter.txPackets, UInt64(count))
        peerCounters.add(peerOffset + PeerCounter.txBytes, UInt64(bytes))
        counters.add(ThreadCounter.packets, UInt64(count))
        counters.add(ThreadCounter.bytes, UInt64(bytes))
    }

    /// Seals one packet of `length` bytes whose transport message starts at `message` (the
    /// packet 16 bytes in): zero padding, header, tag. The message's length, or nil when the
    /// cipher failed.
    @inline(__always)
    private func seal(_ message: UnsafeMutableRawPointer, _ length: Int, _ keypair: Keypair, _ mtu: Int, _ aead: AEADContext) -> Int? {
        let padded = WireGuardMessage.paddedLength(length, mtu: mtu)
        let text = message + WireGuardMessage.transportHeaderSize
        (text + length).initializeMemory(as: UInt8.self, repeating: 0, count: padded - length)
        var piece = iovec(iov_base: text, iov_len: padded)
        guard
            TransportCrypto.seal(
                context: aead, keypair: keypair, counter: keypair.nextCounter(), header: message,
                pieces: &piece, count: 1, tag: text + padded)
        else { return nil }
        return WireGuardMessage.keepaliveSize + padded
    }

    /// ``finishQueued`` for WireGuard: each packet (16 bytes into its slot) sealed in place
    /// under the peer's current keypair and a counter of its own. Counted as plaintext bytes.
    /// False when nothing was queued: the packets were staged for a handshake, or (a cipher
    /// failure, which only a broken libcrypto causes) dropped and counted.
    @inline(__always)
    private func sealQueued(
        _ first: Int, _ slot: Int, _ count: Int, _ peer: Int, _ plane: WireGuardPlane, _ aead: AEADContext,
        _ destination: UInt32, _ peerCounters: CounterBlock, _ peerOffset: Int, _ counters: CounterBlock
    ) -> Bool {
        let now = EngineClock.now()
        guard let keypair = plane.sendKeypair(peer, now: now) else {
            for i in 0..<count {
                stage(
                    UnsafeRawBufferPointer(start: batch.slot(slot + i) + WireGuardMessage.transportHeaderSize, count: lengths[i]), peer,
                    plane,
                    peerCounters, peerOffset, counters)
            }
            return false
        }
        let port = plane.ports[peer]
        let mtu = plane.mtu
        var bytes = 0
        for i in 0..<count {
            let base = batch.slot(slot + i)
            guard let length = seal(base, lengths[i], keypair, mtu, aead) else {
                // Messages are contiguous: none of this group is sent rather than a hole.
                counters.add(DropReason.sendFailed.rawValue, UInt64(count))
                return false
            }
            batch.setOutgoing(first + i, base: base, length: length, addressNetworkOrder: destination, portNetworkOrder: port)
            bytes += lengths[i]
        }
        plane.activity[peer]?.sentData(at: now)
        account(count, bytes, peerCounters, peerOffset, counters)
        return true
    }

    /// Seals `count` segments laid out `stride` bytes apart from `base` (each 16 bytes into
    /// its place, lengths in ``lengths``) and queues them as message `message`: one
    /// UDP_SEGMENT send cut every `stride` bytes. The message's length, or nil when nothing
    /// was queued (staged for a handshake, or a cipher failure on the first segment, counted).
    @inline(__always)
    private func sealRun(
        _ message: Int, _ base: UnsafeMutableRawPointer, _ stride: Int, _ count: Int, _ peer: Int, _ plane: WireGuardPlane,
        _ aead: AEADContext, _ destination: UInt32, _ peerCounters: CounterBlock, _ peerOffset: Int,
        _ counters: CounterBlock
    ) -> Int? {
        let now = EngineClock.now()
        guard let keypair = plane.sendKeypair(peer, now: now) else {
            for k in 0..<count {
                stage(
                    UnsafeRawBufferPointer(start: base + k * stride + WireGuardMessage.transportHeaderSize, count: lengths[k]), peer, plane,
                    peerCounters, peerOffset, counters)
            }
            return nil
        }
        var total = 0
        var bytes = 0
        var sealed = 0
        while sealed < count, let length = seal(base + sealed * stride, lengths[sealed], keypair, plane.mtu, aead) {
            total = sealed * stride + length
            bytes += lengths[sealed]
            sealed += 1
        }
        // A cipher failure: a hole would shift every later datagram, so what came before it goes.
        if sealed < count { counters.add(DropReason.sendFailed.rawValue, UInt64(count - sealed)) }
        guard sealed > 0 else { return nil }
        batch.setOutgoing(
            message, base: base, length: total, addressNetworkOrder: destination, portNetworkOrder: plane.ports[peer],
            segmentSize: stride)
        plane.activity[peer]?.sentData(at: now)
        account(sealed, bytes, peerCounters, peerOffset, counters)
        return total
    }

    /// Sends messages `0..<count` with `send(fd, start, n, stallBudget)` (returning how many
    /// failed), each run of messages with the same sending socket in one call (a flow's
    /// datagrams keep their order: they share a socket).
    @inline(__always)
    private func flushRuns(
        _ count: Int, _ counters: CounterBlock, _ stallBudget: inout Int32,
        _ send: (any DatagramSocket, Int, Int, inout Int32) -> Int
    ) {
        var start = 0
        while start < count {
            let index = slotSender[start]
            var end = start + 1
            while end < count && slotSender[end] == index { end += 1 }
            let failed = send(senders[Int(index)], start, end - start, &stallBudget)
            if failed > 0 { counters.add(DropReason.sendFailed.rawValue, UInt64(failed)) }
            start = end
        }
    }
}
