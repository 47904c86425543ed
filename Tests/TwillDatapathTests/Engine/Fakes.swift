import CTwillSystem
import Synchronization
import TwillAddress
import TwillSystem

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

/// An in-memory TUN: the test plays the kernel. Packets the test ``inject(_:)``s are what the
/// engine reads; what the engine writes lands in ``written``. Readiness for the engine's poll
/// is a real pipe holding one byte per waiting packet; ``close()`` closes its write end, so
/// the engine's poll sees POLLHUP, as when a TUN is deleted under it.
final class FakeTUN: PacketDevice, @unchecked Sendable { // mutable state under `lock`
    let name: String
    let hasVirtioHeader: Bool
    private var ends: [Int32] = [-1, -1]
    private let lock = Mutex(())
    private var pending: [[UInt8]] = []
    private var out: [[UInt8]] = []
    private var closed = false

    init(name: String = "fake0", virtio: Bool = false) {
        self.name = name
        hasVirtioHeader = virtio
        _ = twill_pipe_cloexec(&ends)
        for fd in ends { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    }

    deinit {
        Glibc.close(ends[0])
        if !closed { Glibc.close(ends[1]) }
    }

    var fileDescriptor: Int32 { ends[0] }

    /// The kernel hands the engine a packet (with its virtio header when the device has one).
    func inject(_ packet: [UInt8]) {
        lock.withLock { _ in
            guard !closed else { return }
            pending.append(packet)
            var one: UInt8 = 1
            _ = Glibc.write(ends[1], &one, 1)
        }
    }

    /// A plain packet behind an all-zero virtio header (or as it is without one).
    func injectPlain(_ packet: [UInt8]) {
        inject(hasVirtioHeader ? [UInt8](repeating: 0, count: VirtioNetHeader.size) + packet : packet)
    }

    /// What the engine wrote so far.
    var written: [[UInt8]] { lock.withLock { _ in out } }

    /// Waits (at most `timeout`) until the engine has written `count` packets.
    func waitForWrites(_ count: Int, timeout: Duration = .seconds(5)) -> [[UInt8]] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let w = written
            if w.count >= count { return w }
            usleep(2000)
        }
        return written
    }

    func readPacket(into buffer: UnsafeMutableRawPointer, capacity: Int) -> Int {
        lock.withLock { _ in
            guard !closed else { return -Int(EBADF) }
            guard !pending.isEmpty else { return -Int(EAGAIN) }
            let p = pending.removeFirst()
            var byte: UInt8 = 0
            _ = Glibc.read(ends[0], &byte, 1)
            let n = min(p.count, capacity)
            p.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: n) }
            return n
        }
    }

    func writePacket(_ packet: UnsafeRawPointer, length: Int) -> Int {
        lock.withLock { _ in
            guard !closed else { return -Int(EBADF) }
            out.append(Array(UnsafeRawBufferPointer(start: packet, count: length)))
            return length
        }
    }

    func writePacket(pieces: UnsafePointer<iovec>, count: Int) -> Int {
        var bytes: [UInt8] = []
        for i in 0..<count { bytes += UnsafeRawBufferPointer(start: pieces[i].iov_base, count: pieces[i].iov_len) }
        return bytes.withUnsafeBytes { writePacket($0.baseAddress!, length: $0.count) }
    }

    /// The device disappears (as `ip link del` does to a TUN).
    func close() {
        lock.withLock { _ in
            guard !closed else { return }
            closed = true
            Glibc.close(ends[1])
        }
    }

    func setTransmitQueueLength(_ length: Int32) throws(SystemError) {}
}

/// An in-memory network of ``FakeSocket``s, addressed by IPv4 address and port. A hook may
/// change or drop datagrams in flight (to corrupt one, say).
final class FakeNetwork: @unchecked Sendable { // mutable state under `lock`
    private let lock = Mutex(())
    private var sockets: [UInt64: FakeSocket] = [:]
    private var hook: (@Sendable (inout [UInt8], _ index: Int) -> Bool)?
    private var delivered = 0

    static func key(_ address: IPv4Address, _ port: UInt16) -> UInt64 { UInt64(address.rawValue) << 16 | UInt64(port) }

    func attach(_ socket: FakeSocket) { lock.withLock { _ in sockets[Self.key(socket.address, socket.port)] = socket } }

    /// `hook(datagram, n)` sees the n-th datagram delivered (0-based) and may change it;
    /// returning false drops it.
    func intercept(_ hook: @escaping @Sendable (inout [UInt8], Int) -> Bool) { lock.withLock { _ in self.hook = hook } }

    func deliver(_ datagram: [UInt8], from source: IPv4Address, port sourcePort: UInt16, to address: IPv4Address, port: UInt16) {
        var d = datagram
        let (target, keep) = lock.withLock { _ -> (FakeSocket?, Bool) in
            defer { delivered += 1 }
            let keep = hook?(&d, delivered) ?? true
            return (sockets[Self.key(address, port)], keep)
        }
        guard keep, let target else { return }
        target.enqueue(d, from: source, port: sourcePort)
    }
}

/// An in-memory UDP socket on a ``FakeNetwork``, speaking the engine's mmsghdr protocol:
/// UDP_SEGMENT on send (a message split into datagrams), and UDP_GRO on receive (consecutive
/// datagrams of one sender and size coalesced into one message with the segment size in a
/// control message) when the test gives it GRO.
final class FakeSocket: DatagramSocket, @unchecked Sendable { // mutable state under `lock`
    let address: IPv4Address
    let port: UInt16
    let network: FakeNetwork
    let supportsSegmentationOffload: Bool
    private let canCoalesce: Bool
    private let event: Int32
    private let lock = Mutex(())
    private var queue: [(bytes: [UInt8], source: IPv4Address, port: UInt16, segment: Int?)] = []
    private var coalescing = false
    private var closed = false
    /// Datagrams this socket put on the network.
    private(set) var sentDatagrams = 0

    init(address: IPv4Address, port: UInt16, network: FakeNetwork, gso: Bool = false, gro: Bool = false) {
        self.address = address
        self.port = port
        self.network = network
        supportsSegmentationOffload = gso
        canCoalesce = gro
        event = twill_eventfd()
        network.attach(self)
    }

    deinit { if !closed { Glibc.close(event) } }

    var fileDescriptor: Int32 { lock.withLock { _ in closed ? -1 : event } }

    func enableReceiveOffload() -> Bool {
        lock.withLock { _ in coalescing = canCoalesce }
        return canCoalesce
    }

    func enqueue(_ bytes: [UInt8], from source: IPv4Address, port: UInt16, groSegment: Int? = nil) {
        lock.withLock { _ in
            guard !closed else { return }
            queue.append((bytes, source, port, groSegment))
            var one: UInt64 = 1
            _ = Glibc.write(event, &one, 8)
        }
    }

    /// A datagram from anyone (a test's stranger or attacker).
    func receiveFrom(_ source: IPv4Address, port: UInt16 = 40000, _ bytes: [UInt8]) { enqueue(bytes, from: source, port: port) }

    func sendMessages(_ messages: UnsafeMutablePointer<twill_mmsghdr>, count: Int) -> Int {
        for i in 0..<count {
            let header = messages[i].msg_hdr
            var bytes: [UInt8] = []
            for k in 0..<header.msg_iovlen {
                bytes += UnsafeRawBufferPointer(start: header.msg_iov[k].iov_base, count: header.msg_iov[k].iov_len)
            }
            let sin = header.msg_name!.assumingMemoryBound(to: sockaddr_in.self).pointee
            let destination = IPv4Address(rawValue: UInt32(bigEndian: sin.sin_addr.s_addr))
            let destinationPort = UInt16(bigEndian: sin.sin_port)
            var segment: UInt16 = 0
            var h = header
            if header.msg_controllen > 0, twill_get_cmsg(&h, 17, 103, &segment, 2) == 1, segment > 0 {
                var offset = 0
                while offset < bytes.count {
                    let end = min(offset + Int(segment), bytes.count)
                    network.deliver(Array(bytes[offset..<end]), from: address, port: port, to: destination, port: destinationPort)
                    lock.withLock { _ in sentDatagrams += 1 }
                    offset = end
                }
            } else {
                network.deliver(bytes, from: address, port: port, to: destination, port: destinationPort)
                lock.withLock { _ in sentDatagrams += 1 }
            }
            messages[i].msg_len = UInt32(bytes.count)
        }
        return count
    }

    func receiveMessages(_ messages: UnsafeMutablePointer<twill_mmsghdr>, count: Int) -> Int {
        lock.withLock { _ in
            guard !closed else { return -Int(EBADF) }
            guard !queue.isEmpty else { return -Int(EAGAIN) }
            var filled = 0
            while filled < count, !queue.isEmpty {
                var first = queue.removeFirst()
                var segment = first.segment ?? 0
                if coalescing, first.segment == nil {
                    // As the kernel's UDP GRO: same sender, same size, only the last shorter.
                    let size = first.bytes.count
                    while let next = queue.first, next.source == first.source, next.port == first.port,
                        next.bytes.count <= size, first.bytes.count + next.bytes.count <= 65535,
                        first.bytes.count % size == 0
                    {
                        first.bytes += next.bytes
                        queue.removeFirst()
                        segment = size
                        if next.bytes.count < size { break }
                    }
                }
                let m = messages + filled
                let capacity = m.pointee.msg_hdr.msg_iov[0].iov_len
                let n = min(first.bytes.count, capacity)
                first.bytes.withUnsafeBytes { m.pointee.msg_hdr.msg_iov[0].iov_base.copyMemory(from: $0.baseAddress!, byteCount: n) }
                m.pointee.msg_len = UInt32(n)
                m.pointee.msg_hdr.msg_flags = first.bytes.count > capacity ? Int32(MSG_TRUNC) : 0
                let sin = m.pointee.msg_hdr.msg_name!.assumingMemoryBound(to: sockaddr_in.self)
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_addr.s_addr = first.source.rawValue.bigEndian
                sin.pointee.sin_port = first.port.bigEndian
                if m.pointee.msg_hdr.msg_control != nil {
                    if segment > 0 {
                        var value = Int32(segment)
                        twill_put_cmsg(&m.pointee.msg_hdr, 17, 104, &value, 4)
                    } else {
                        m.pointee.msg_hdr.msg_controllen = 0
                    }
                }
                filled += 1
            }
            if queue.isEmpty {
                var value: UInt64 = 0
                _ = Glibc.read(event, &value, 8)
            }
            return filled
        }
    }

    func waitWritable(milliseconds: Int32) {}

    func close() {
        lock.withLock { _ in
            guard !closed else { return }
            closed = true
            Glibc.close(event)
        }
    }
}

/// Two engines, A (198.18.1.0/24 at 203.0.113.1) and B (198.18.2.0/24 at 203.0.113.2), joined
/// by a fake network, each knowing the other as its peer.
struct FakePair {
    static let subnetA = IPv4Network("198.18.1.0/24")!
    static let subnetB = IPv4Network("198.18.2.0/24")!
    static let addressA = IPv4Address("203.0.113.1")!
    static let addressB = IPv4Address("203.0.113.2")!
    let network = FakeNetwork()
    let tunA: FakeTUN, tunB: FakeTUN
    let socketA: FakeSocket, socketB: FakeSocket
    let a: PacketEngine, b: PacketEngine

    /// With `subnetA6` and `subnetB6`, each engine is dual stack (and knows the other's IPv6 subnet).
    init(
        virtio: Bool = false, gso: Bool = false, gro: Bool = false, checkSources: Bool = true,
        subnetA6: IPv6Network? = nil, subnetB6: IPv6Network? = nil
    ) throws {
        tunA = FakeTUN(name: "fakeA", virtio: virtio)
        tunB = FakeTUN(name: "fakeB", virtio: virtio)
        socketA = FakeSocket(address: Self.addressA, port: 8285, network: network, gso: gso, gro: gro)
        socketB = FakeSocket(address: Self.addressB, port: 8285, network: network, gso: gso, gro: gro)
        a = PacketEngine(
            tun: tunA, socket: socketA,
            configuration: EngineConfiguration(
                localSubnet: Self.subnetA, peerPort: 8285, checkSources: checkSources, udpOffloads: gso || gro, localSubnet6: subnetA6))
        b = PacketEngine(
            tun: tunB, socket: socketB,
            configuration: EngineConfiguration(
                localSubnet: Self.subnetB, peerPort: 8285, checkSources: checkSources, udpOffloads: gso || gro, localSubnet6: subnetB6))
        a.update(peers: [PeerLease(subnet: Self.subnetB, publicIP: Self.addressB, backendType: nil, backendData: nil, subnet6: subnetB6)])
        b.update(peers: [PeerLease(subnet: Self.subnetA, publicIP: Self.addressA, backendType: nil, backendData: nil, subnet6: subnetA6)])
        try a.start()
        try b.start()
    }

    func stop() {
        a.stop()
        b.stop()
    }
}

/// Waits (bounded) until `condition` holds.
func waitUntil(_ timeout: Duration = .seconds(5), _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(2000)
    }
    return condition()
}
