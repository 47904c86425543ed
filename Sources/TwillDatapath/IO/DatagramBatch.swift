import CTwillSystem
import TwillAddress
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// One thread's preallocated state for recvmmsg/sendmmsg: `capacity` packet buffers, their
/// iovecs, peer addresses, message headers and (for UDP GSO/GRO) control buffers, all
/// allocated once so the per-packet path never allocates.
///
/// Not thread-safe: each engine thread owns one.
final class DatagramBatch {
    static let solUDP: Int32 = 17
    static let udpSegment: Int32 = 103
    static let udpGRO: Int32 = 104
    /// Room for one cmsg carrying an int (CMSG_SPACE(4) is 24 on 64-bit Linux).
    static let controlSpace = 32

    let capacity: Int
    /// Bytes from one slot to the next, and the largest datagram a slot holds (a multiple
    /// of 16, so packets stay aligned).
    let slotSize: Int
    private let buffers: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_in>
    /// The messages' names over an IPv6 underlay (then ``addresses`` is unused).
    private let addresses6: UnsafeMutablePointer<sockaddr_in6>?
    private let controls: UnsafeMutableRawPointer
    let messages: UnsafeMutablePointer<twill_mmsghdr>
    private let nameLength: socklen_t

    /// - Parameter ipv6: the messages are addressed to and from IPv6 (an IPv6 underlay).
    init(capacity: Int, slotSize: Int, port: UInt16, ipv6: Bool = false) {
        self.capacity = capacity
        self.slotSize = (slotSize + 15) & ~15
        buffers = ZeroedMemory.allocate(byteCount: capacity * self.slotSize)
        iovecs = .allocate(capacity: capacity)
        addresses = .allocate(capacity: capacity)
        addresses6 = ipv6 ? .allocate(capacity: capacity) : nil
        nameLength = socklen_t(ipv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        messages = .allocate(capacity: capacity)
        controls = ZeroedMemory.allocate(byteCount: capacity * Self.controlSpace)
        for i in 0..<capacity {
            iovecs[i] = iovec(iov_base: buffers + i * self.slotSize, iov_len: self.slotSize)
            if let addresses6 {
                Self.initializeMessage(messages + i, address6: addresses6 + i, port: port, pieces: iovecs + i, count: 1)
            } else {
                Self.initializeMessage(messages + i, address: addresses + i, port: port, pieces: iovecs + i, count: 1)
            }
        }
    }

    /// Initializes a message addressed through `address` (IPv4, `port`, the host set per
    /// send) over `count` iovecs at `pieces`.
    static func initializeMessage(
        _ message: UnsafeMutablePointer<twill_mmsghdr>, address: UnsafeMutablePointer<sockaddr_in>,
        port: UInt16, pieces: UnsafeMutablePointer<iovec>, count: Int
    ) {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        address.initialize(to: sin)
        initializeMessage(message, name: address, pieces: pieces, count: count)
    }

    /// ``initializeMessage(_:address:port:pieces:count:)`` for an IPv6 name.
    static func initializeMessage(
        _ message: UnsafeMutablePointer<twill_mmsghdr>, address6: UnsafeMutablePointer<sockaddr_in6>,
        port: UInt16, pieces: UnsafeMutablePointer<iovec>, count: Int
    ) {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        address6.initialize(to: sin6)
        initializeMessage(message, name: address6, pieces: pieces, count: count)
    }

    /// A message whose name is the socket address at `name` (of its type's size).
    private static func initializeMessage<Name>(
        _ message: UnsafeMutablePointer<twill_mmsghdr>, name: UnsafeMutablePointer<Name>,
        pieces: UnsafeMutablePointer<iovec>, count: Int
    ) {
        var header = msghdr()
        header.msg_name = UnsafeMutableRawPointer(name)
        header.msg_namelen = socklen_t(MemoryLayout<Name>.size)
        header.msg_iov = pieces
        header.msg_iovlen = count
        message.initialize(to: twill_mmsghdr(msg_hdr: header, msg_len: 0))
    }

    deinit {
        ZeroedMemory.deallocate(buffers)
        iovecs.deallocate()
        addresses.deallocate()
        addresses6?.deallocate()
        messages.deallocate()
        ZeroedMemory.deallocate(controls)
    }

    /// The packet buffer of slot `i`.
    @inline(__always)
    func slot(_ i: Int) -> UnsafeMutableRawPointer { buffers + i * slotSize }

    // MARK: receiving

    /// recvmmsg into all slots without blocking.
    ///
    /// - Parameter control: receive control messages (the UDP_GRO segment size).
    /// - Returns: the number of messages received; 0 when none is waiting or on error.
    @inline(__always)
    func receive(_ socket: any DatagramSocket, control: Bool) -> Int {
        for i in 0..<capacity {
            messages[i].msg_hdr.msg_namelen = nameLength
            messages[i].msg_hdr.msg_flags = 0
            if control {
                messages[i].msg_hdr.msg_control = controls + i * Self.controlSpace
                messages[i].msg_hdr.msg_controllen = Self.controlSpace
            }
            iovecs[i].iov_len = slotSize
        }
        return max(0, socket.receiveMessages(messages, count: capacity))
    }

    /// The length of received message `i`.
    @inline(__always)
    func receivedLength(_ i: Int) -> Int { Int(messages[i].msg_len) }

    /// Whether message `i` was longer than its slot (and so cut).
    @inline(__always)
    func wasTruncated(_ i: Int) -> Bool { messages[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 }

    /// The outer source address of received message `i`, host order.
    @inline(__always)
    func sourceAddress(_ i: Int) -> UInt32 { UInt32(bigEndian: addresses[i].sin_addr.s_addr) }

    /// The outer source port of received message `i`, host order.
    @inline(__always)
    func sourcePort(_ i: Int) -> UInt16 {
        if let addresses6 { return UInt16(bigEndian: addresses6[i].sin6_port) }
        return UInt16(bigEndian: addresses[i].sin_port)
    }

    /// The outer IPv6 source address of received message `i` (an IPv6 underlay).
    @inline(__always)
    func sourceAddress6(_ i: Int) -> IPv6Address {
        guard let addresses6 else { return .any }
        return withUnsafeBytes(of: addresses6[i].sin6_addr) { raw in
            IPv6Address(
                high: UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self)),
                low: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }

    /// The UDP_GRO segment size of message `i`: the size of each coalesced datagram (the
    /// last may be shorter), or 0 for a single datagram.
    @inline(__always)
    func groSegmentSize(_ i: Int) -> Int {
        guard messages[i].msg_hdr.msg_controllen > 0 else { return 0 }
        var value: Int32 = 0
        guard twill_get_cmsg(&messages[i].msg_hdr, Self.solUDP, Self.udpGRO, &value, 4) == 1 else { return 0 }
        return Int(value)
    }

    // MARK: sending

    /// Prepares message `i` to send `length` bytes from `base` (anywhere in the slots: a
    /// message may span several) to `address` (network order), at `portNetworkOrder` (nil:
    /// the batch's port; WireGuard peers each listen on the port their lease names); with
    /// `segmentSize` > 0 and below `length`, cut into datagrams of that size (UDP_SEGMENT).
    @inline(__always)
    func setOutgoing(
        _ i: Int, base: UnsafeMutableRawPointer, length: Int, addressNetworkOrder: UInt32, portNetworkOrder: UInt16? = nil,
        segmentSize: Int = 0
    ) {
        iovecs[i] = iovec(iov_base: base, iov_len: length)
        if let portNetworkOrder { addresses[i].sin_port = portNetworkOrder }
        Self.address(
            messages + i, addresses + i, control: controls + i * Self.controlSpace,
            networkOrder: addressNetworkOrder, length: length, segmentSize: segmentSize)
    }

    /// ``setOutgoing(_:base:length:addressNetworkOrder:portNetworkOrder:segmentSize:)`` to an
    /// IPv6 peer (a batch made with `ipv6`).
    @inline(__always)
    func setOutgoing(_ i: Int, base: UnsafeMutableRawPointer, length: Int, address6: IPv6Address, segmentSize: Int = 0) {
        iovecs[i] = iovec(iov_base: base, iov_len: length)
        guard let addresses6 else { return }
        Self.address(
            messages + i, addresses6 + i, control: controls + i * Self.controlSpace, address6: address6, length: length,
            segmentSize: segmentSize)
    }

    /// ``address(_:_:control:networkOrder:length:segmentSize:)`` for an IPv6 name.
    @inline(__always)
    static func address(
        _ message: UnsafeMutablePointer<twill_mmsghdr>, _ address: UnsafeMutablePointer<sockaddr_in6>,
        control: UnsafeMutableRawPointer, address6: IPv6Address, length: Int, segmentSize: Int
    ) {
        withUnsafeMutableBytes(of: &address.pointee.sin6_addr) { raw in
            raw.storeBytes(of: address6.high.bigEndian, as: UInt64.self)
            raw.storeBytes(of: address6.low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        message.pointee.msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in6>.size)
        segment(message, control: control, length: length, segmentSize: segmentSize)
    }

    /// Sets or clears a message's UDP_SEGMENT cmsg.
    @inline(__always)
    static func segment(_ message: UnsafeMutablePointer<twill_mmsghdr>, control: UnsafeMutableRawPointer, length: Int, segmentSize: Int) {
        if segmentSize > 0 && segmentSize < length {
            message.pointee.msg_hdr.msg_control = control
            var size = UInt16(segmentSize)
            twill_put_cmsg(&message.pointee.msg_hdr, solUDP, udpSegment, &size, 2)
        } else {
            message.pointee.msg_hdr.msg_control = nil
            message.pointee.msg_hdr.msg_controllen = 0
        }
    }

    /// Addresses a message of `length` bytes to a host (network order); with `segmentSize`
    /// > 0 and below `length` the kernel cuts it into datagrams of that size (UDP_SEGMENT,
    /// written into `control`, which has room for ``controlSpace`` bytes).
    @inline(__always)
    static func address(
        _ message: UnsafeMutablePointer<twill_mmsghdr>, _ address: UnsafeMutablePointer<sockaddr_in>,
        control: UnsafeMutableRawPointer, networkOrder: UInt32, length: Int, segmentSize: Int
    ) {
        address.pointee.sin_addr.s_addr = networkOrder
        message.pointee.msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
        segment(message, control: control, length: length, segmentSize: segmentSize)
    }

    /// Sends slots `start..<start + count` with as few sendmmsg calls as the kernel allows
    /// (see ``sendMessages(_:_:count:stallBudget:)``).
    ///
    /// - Returns: how many messages were not sent.
    @inline(__always)
    func send(_ socket: any DatagramSocket, from start: Int = 0, count: Int, stallBudget: inout Int32) -> Int {
        Self.sendMessages(socket, messages + start, count: count, stallBudget: &stallBudget).failed
    }

    /// Sends `count` prepared messages with as few sendmmsg calls as the kernel allows.
    ///
    /// A full socket buffer (EAGAIN) waits for POLLOUT, 10 ms at a time, while
    /// `stallBudget` (milliseconds, shared by the caller's sends) lasts, then gives up on
    /// the rest; a message the kernel refuses outright (no route, say) is skipped.
    ///
    /// - Returns: how many messages were not sent, and whether a UDP_SEGMENT message was
    ///   refused with EIO (the route's device cannot segment).
    @inline(__always)
    static func sendMessages(
        _ socket: any DatagramSocket, _ messages: UnsafeMutablePointer<twill_mmsghdr>, count: Int,
        stallBudget: inout Int32
    ) -> (failed: Int, segmentationRefused: Bool) {
        var offset = 0
        var failed = 0
        var refused = false
        while offset < count {
            let n = socket.sendMessages(messages + offset, count: count - offset)
            if n > 0 {
                offset += n
                continue
            }
            let error = Int32(-n)
            if error == EAGAIN || error == ENOBUFS {
                if stallBudget <= 0 { break }
                socket.waitWritable(milliseconds: 10)
                stallBudget -= 10
                continue
            }
            if error == EIO && messages[offset].msg_hdr.msg_controllen > 0 { refused = true }
            failed += 1
            offset += 1
        }
        return (failed + (count - offset), refused)
    }
}
