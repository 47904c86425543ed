import CTwillSystem
import TwillAddress

#if canImport(Glibc)
import Glibc
#endif

/// UDP -> TUN for one queue: receives datagrams in batches (recvmmsg, with UDP GRO when the
/// socket allows), drops and counts those from non-peers, with an inner source outside the
/// sender's subnet or an inner destination outside this node's subnet, malformed and
/// expiring ones, and writes the rest to the TUN. With a virtio TUN, consecutive segments of
/// one TCP flow are merged (``TCPCoalescer``) into one GSO write, gathered from the receive
/// buffers without a copy: the coalescer is flushed before the next receive reuses them.
///
/// With WireGuard each datagram is a WireGuard message: handshake messages go to the control
/// thread's queue; a transport message is found by its receiver index, opened in place,
/// checked against the replay window, and its inner packet must come from the peer's subnet
/// (allowed IPs); then it takes the same path as flannel's datagrams. The outer address is
/// not checked (WireGuard peers roam): authenticity and allowed IPs are the check.
///
/// Owned by the one thread that calls ``run(budget:)``; every buffer is allocated here, once.
final class InboundPump {
    private let engine: PacketEngine
    private let queue: EngineQueue
    /// The receiving socket's descriptor: poll it for POLLIN.
    let fileDescriptor: Int32
    private let socket: any DatagramSocket
    private let tun: any PacketDevice
    private let virtio: Bool
    private let gro: Bool
    private let batch: DatagramBatch
    private let coalescer = TCPCoalescer()
    /// A plain TUN write with a virtio header: [10 zero bytes][packet] through writev.
    private let zeroHeader: UnsafeMutableRawPointer
    private let plainIO: UnsafeMutablePointer<iovec>
    /// WireGuard: the cipher context this thread opens with.
    private let aead: AEADContext?
    /// Datagrams come over IPv6 (an IPv6 underlay): senders are known by their PublicIPv6.
    private let ipv6Underlay: Bool

    init(engine: PacketEngine, queue: EngineQueue) {
        self.engine = engine
        self.queue = queue
        let configuration = engine.configuration
        fileDescriptor = queue.socket.fileDescriptor
        socket = queue.socket
        tun = queue.tun
        virtio = queue.tun.hasVirtioHeader
        gro = configuration.udpOffloads && queue.socket.enableReceiveOffload()
        // With GRO one message can hold ~45 datagrams: 64 KiB slots.
        // WireGuard adds its header, padding and tag to each datagram.
        let overhead = configuration.wireGuard != nil ? 48 : 0
        ipv6Underlay = configuration.ipv6Underlay
        batch = DatagramBatch(
            capacity: configuration.batchSize, slotSize: gro ? 65536 : configuration.maxPacketSize + overhead,
            port: configuration.peerPort, ipv6: ipv6Underlay)
        zeroHeader = .allocate(byteCount: 16, alignment: 16)
        zeroHeader.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
        aead = configuration.wireGuard != nil ? AEADContext() : nil
        plainIO = .allocate(capacity: 2)
        plainIO.initialize(repeating: iovec(iov_base: zeroHeader, iov_len: VirtioNetHeader.size), count: 2)
    }

    deinit {
        zeroHeader.deallocate()
        plainIO.deallocate()
    }

    /// Publishes the snapshot generation this pump holds (see ``PacketEngine``): call when idle.
    func refreshSnapshot() { _ = engine.loadSnapshot(queue.seenByRx) }

    @inline(__always)
    private func writeFrame(_ frame: UnsafeRawPointer, _ length: Int, _ counters: CounterBlock) {
        if tun.writePacket(frame, length: length) != length { counters.add(DropReason.tunWriteFailed.rawValue) }
    }

    @inline(__always)
    private func writePlain(_ packet: UnsafeMutableRawPointer, _ length: Int, _ counters: CounterBlock) {
        guard virtio else { return writeFrame(packet, length, counters) }
        plainIO[1] = iovec(iov_base: packet, iov_len: length)
        if tun.writePacket(pieces: plainIO, count: 2) != length + VirtioNetHeader.size { counters.add(DropReason.tunWriteFailed.rawValue) }
    }

    @inline(__always)
    private func flushCoalesced(_ counters: CounterBlock) {
        if coalescer.count > 0 {
            let (pieces, count, bytes) = coalescer.take()
            if tun.writePacket(pieces: pieces, count: count) != bytes { counters.add(DropReason.tunWriteFailed.rawValue) }
        }
    }

    /// Receives up to `budget` batches and delivers them; nothing is left pending.
    ///
    /// - Returns: true if the budget ran out with the last batch full (more may be
    ///   waiting), false once a batch came back short or empty.
    func run(budget: Int) -> Bool {
        let socket = self.socket
        let gro = self.gro
        let virtio = self.virtio
        let batch = self.batch
        let coalescer = self.coalescer
        let counters = queue.rxCounters
        let peerOffset = queue.peerOffset
        let configuration = engine.configuration
        let localSubnet = configuration.localSubnet
        let localSubnet6 = configuration.localSubnet6
        let checkSources = configuration.checkSources
        let maxPacketSize = configuration.maxPacketSize
        let capacity = batch.capacity
        var snapshot = engine.loadSnapshot(queue.seenByRx)

        /// Checks one datagram and passes it on (merged or as it is).
        // The snapshot is a parameter, not a capture: a captured variable that the loop
        // reassigns would be boxed, with an exclusivity check on every access.
        @inline(__always) func deliver(
            _ slot: UnsafeMutableRawPointer, _ length: Int, _ outer: RouteTable.Sender,
            _ snapshot: EngineSnapshot
        ) {
            if length > maxPacketSize {
                counters.add(DropReason.oversize.rawValue)
                return
            }
            if checkSources && snapshot.table.peer(sender: outer) == nil {
                counters.add(DropReason.unknownSender.rawValue)
                return
            }
            if length > 0, slot.load(as: UInt8.self) >> 4 == 6 { return deliver6(slot, length, outer, snapshot) }
            let header: IPv4Header
            do {
                header = try IPv4Header(parsing: UnsafeRawBufferPointer(start: slot, count: length), verifyChecksum: true)
            } catch {
                counters.add(DropReason.malformed.rawValue)
                return
            }
            let check = checkSources ? snapshot.table.checkSender(outer, innerSource: header.source) : nil
            guard let peer = sender(check, outer, snapshot) else { return }
            forward(slot, length, header, peer, snapshot)
        }

        /// The peer index a datagram counts for after the sender check (`check`, nil when
        /// checks are off: any sender, -1 when it is no peer), or nil once dropped and counted.
        @inline(__always) func sender(_ check: RouteTable.SenderCheck?, _ outer: RouteTable.Sender, _ snapshot: EngineSnapshot) -> Int? {
            switch check {
            case .peer(let index)?: return index
            case .unknownSender?:
                counters.add(DropReason.unknownSender.rawValue)
                return nil
            case .spoofedInnerSource?:
                counters.add(DropReason.spoofedInnerSource.rawValue)
                if let p = snapshot.table.peer(sender: outer) { snapshot.counters[p].add(peerOffset + PeerCounter.rxSpoofed) }
                return nil
            case nil:
                return snapshot.table.peer(sender: outer) ?? -1
            }
        }

        /// ``deliver`` for an IPv6 inner packet (a dual-stack node): the same checks against
        /// the peers' and this node's IPv6 subnets, the hop limit for the TTL.
        @inline(__always) func deliver6(
            _ slot: UnsafeMutableRawPointer, _ length: Int, _ outer: RouteTable.Sender,
            _ snapshot: EngineSnapshot
        ) {
            guard let localSubnet6 else {
                counters.add(DropReason.wrongFamily.rawValue)
                return
            }
            let header: IPv6Header
            do {
                header = try IPv6Header(parsing: UnsafeRawBufferPointer(start: slot, count: length))
            } catch {
                counters.add(DropReason.malformed.rawValue)
                return
            }
            let check = checkSources ? snapshot.table.checkSender(outer, innerSource: header.source) : nil
            guard let peer = sender(check, outer, snapshot) else { return }
            guard localSubnet6.contains(header.destination) else {
                return reject(.wrongInnerDestination, PeerCounter.rxWrongDestination, peer, snapshot)
            }
            guard IPv6Header.decrementHopLimit(slot) else { return reject(.ttlExpired, PeerCounter.rxTTLExpired, peer, snapshot) }
            accept(slot, length, peer, snapshot)
        }

        /// Counts a checked packet dropped for `reason`, also against its peer (`slot`), if any.
        @inline(__always) func reject(_ reason: DropReason, _ slot: Int, _ peer: Int, _ snapshot: EngineSnapshot) {
            counters.add(reason.rawValue)
            if peer >= 0 { snapshot.counters[peer].add(peerOffset + slot) }
        }

        /// Counts one checked, routed inner packet and writes it (merged where it can be).
        @inline(__always) func accept(_ slot: UnsafeMutableRawPointer, _ length: Int, _ peer: Int, _ snapshot: EngineSnapshot) {
            counters.add(ThreadCounter.packets)
            counters.add(ThreadCounter.bytes, UInt64(length))
            if peer >= 0 {
                let peerCounters = snapshot.counters[peer]
                peerCounters.add(peerOffset + PeerCounter.rxPackets)
                peerCounters.add(peerOffset + PeerCounter.rxBytes, UInt64(length))
            }
            if virtio {
                if coalescer.offer(slot, length) { return }
                flushCoalesced(counters)
                if coalescer.offer(slot, length) { return }
            }
            writePlain(slot, length, counters)
        }

        /// Passes one checked inner packet (from peer index `peer`, -1 if none) on.
        @inline(__always) func forward(
            _ slot: UnsafeMutableRawPointer, _ length: Int, _ header: IPv4Header, _ peer: Int,
            _ snapshot: EngineSnapshot
        ) {
            // An IPv6-only node has no IPv4 subnet: it takes no IPv4 at all.
            guard let localSubnet, localSubnet.contains(header.destination) else {
                return reject(.wrongInnerDestination, PeerCounter.rxWrongDestination, peer, snapshot)
            }
            guard IPv4Header.decrementTTL(slot) else { return reject(.ttlExpired, PeerCounter.rxTTLExpired, peer, snapshot) }
            accept(slot, length, peer, snapshot)
        }

        /// One WireGuard datagram: a handshake message queued for the control thread, or a
        /// transport message opened in place and its inner packet forwarded.
        @inline(__always) func openWireGuard(
            _ slot: UnsafeMutableRawPointer, _ length: Int, _ outer: IPv4Address, _ port: UInt16,
            _ snapshot: EngineSnapshot, _ plane: WireGuardPlane, _ aead: AEADContext
        ) {
            guard let type = WireGuardMessage.type(of: UnsafeRawBufferPointer(start: slot, count: length)) else {
                counters.add(DropReason.malformed.rawValue)
                return
            }
            guard type == WireGuardMessage.transport else {
                if !plane.control.push(slot, length: length, source: WireGuardEndpoint(address: outer, port: port)) {
                    counters.add(DropReason.handshakeFlood.rawValue)
                }
                return
            }
            let receiver = UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            let now = EngineClock.now()
            guard let entry = plane.receive[receiver], entry.keypair.isLive, now &- entry.keypair.created < plane.rejectAfter else {
                counters.add(DropReason.unknownReceiver.rawValue)
                return
            }
            guard let counter = TransportCrypto.open(context: aead, keypair: entry.keypair, message: slot, length: length) else {
                counters.add(DropReason.notAuthentic.rawValue)
                return
            }
            guard entry.keypair.acceptReceived(counter) else {
                counters.add(DropReason.replayed.rawValue)
                return
            }
            let textLength = length - WireGuardMessage.keepaliveSize
            entry.activity.receivedAuthenticated(at: now, data: textLength > 0)
            if !entry.keypair.isInitiator, !entry.keypair.confirmed.load(ordering: .relaxed),
                !entry.keypair.confirmed.exchange(true, ordering: .relaxed)
            {
                // The initiator sends with the responder's new keypair: it may become current.
                entry.activity.confirmedIndex.store(receiver, ordering: .relaxed)
                plane.control.wakeUp()
            }
            if textLength == 0 { return } // a keepalive
            let text = slot + WireGuardMessage.transportHeaderSize
            // The padding goes: the inner packet is as long as its header says.
            var packetLength = textLength
            if textLength >= 20, text.load(as: UInt8.self) >> 4 == 4 {
                let total = Int(UInt16(bigEndian: text.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                if total <= textLength { packetLength = total }
            }
            if packetLength > maxPacketSize {
                counters.add(DropReason.oversize.rawValue)
                return
            }
            let header: IPv4Header
            do {
                header = try IPv4Header(parsing: UnsafeRawBufferPointer(start: text, count: packetLength), verifyChecksum: true)
            } catch {
                counters.add(text.load(as: UInt8.self) >> 4 != 4 ? DropReason.wrongFamily.rawValue : DropReason.malformed.rawValue)
                return
            }
            // Allowed IPs: the inner source must be in the subnet of the peer that sealed it.
            guard entry.subnet.contains(header.source) else {
                counters.add(DropReason.spoofedInnerSource.rawValue)
                if entry.peer >= 0 { snapshot.counters[entry.peer].add(peerOffset + PeerCounter.rxSpoofed) }
                return
            }
            forward(text, packetLength, header, entry.peer, snapshot)
        }

        for _ in 0..<budget {
            let received = batch.receive(socket, control: gro)
            if received == 0 { return false }
            for i in 0..<received {
                if batch.wasTruncated(i) {
                    counters.add(DropReason.oversize.rawValue)
                    continue
                }
                let length = batch.receivedLength(i)
                let outer4 = IPv4Address(rawValue: ipv6Underlay ? 0 : batch.sourceAddress(i))
                let outer: RouteTable.Sender = ipv6Underlay ? .v6(batch.sourceAddress6(i)) : .v4(outer4)
                let slot = batch.slot(i)
                let segment = gro ? batch.groSegmentSize(i) : 0
                if let plane = snapshot.wireGuard, let aead {
                    let port = batch.sourcePort(i)
                    if segment <= 0 || segment >= length {
                        openWireGuard(slot, length, outer4, port, snapshot, plane, aead)
                        continue
                    }
                    var offset = 0
                    while offset < length {
                        openWireGuard(slot + offset, min(segment, length - offset), outer4, port, snapshot, plane, aead)
                        offset += segment
                    }
                    continue
                }
                if segment <= 0 || segment >= length {
                    deliver(slot, length, outer, snapshot)
                    continue
                }
                var offset = 0
                while offset < length {
                    deliver(slot + offset, min(segment, length - offset), outer, snapshot)
                    offset += segment
                }
            }
            flushCoalesced(counters)
            if received < capacity { return false }
            snapshot = engine.loadSnapshot(queue.seenByRx)
        }
        return true
    }
}
