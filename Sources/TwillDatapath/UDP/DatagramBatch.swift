import CDatapath
#if canImport(Glibc)
import Glibc
#endif

/// One thread's preallocated state for recvmmsg/sendmmsg: `capacity` packet buffers of
/// `slotSize` bytes, their iovecs, peer addresses and message headers, all allocated once so
/// the per-packet path never allocates.
///
/// Not thread-safe: each engine thread owns one.
final class DatagramBatch {
    let capacity: Int
    let slotSize: Int
    /// Bytes reserved before each slot's packet (room for a virtio header for TUN writes),
    /// zeroed; keep it a multiple of 16 so packets stay aligned.
    let headroom: Int
    private let buffers: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_in>
    let messages: UnsafeMutablePointer<twill_mmsghdr>

    init(capacity: Int, slotSize: Int, port: UInt16, headroom: Int = 0) {
        self.capacity = capacity
        self.headroom = headroom
        // Each slot: headroom, then the packet, rounded so packets stay 16-byte aligned.
        self.slotSize = (slotSize + headroom + 15) & ~15
        buffers = .allocate(byteCount: capacity * self.slotSize, alignment: 64)
        buffers.initializeMemory(as: UInt8.self, repeating: 0, count: capacity * self.slotSize)
        iovecs = .allocate(capacity: capacity)
        addresses = .allocate(capacity: capacity)
        messages = .allocate(capacity: capacity)
        for i in 0..<capacity {
            iovecs[i] = iovec(iov_base: buffers + i * self.slotSize + headroom, iov_len: packetCapacity)
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            addresses[i] = sin
            var header = msghdr()
            header.msg_name = UnsafeMutableRawPointer(addresses + i)
            header.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            header.msg_iov = iovecs + i
            header.msg_iovlen = 1
            messages[i] = twill_mmsghdr(msg_hdr: header, msg_len: 0)
        }
    }

    deinit {
        buffers.deallocate()
        iovecs.deallocate()
        addresses.deallocate()
        messages.deallocate()
    }

    /// The largest packet a slot holds.
    var packetCapacity: Int { slotSize - headroom }

    /// The packet buffer of slot `i` (after the headroom).
    @inline(__always)
    func slot(_ i: Int) -> UnsafeMutableRawPointer { buffers + i * slotSize + headroom }

    // MARK: receiving

    /// recvmmsg into all slots without blocking.
    ///
    /// - Returns: the number of datagrams received; 0 when none is waiting or on error.
    @inline(__always)
    func receive(_ fd: Int32) -> Int {
        for i in 0..<capacity {
            messages[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            messages[i].msg_hdr.msg_flags = 0
            iovecs[i].iov_len = packetCapacity
        }
        while true {
            let n = twill_recvmmsg(fd, messages, UInt32(capacity), Int32(MSG_DONTWAIT))
            if n >= 0 { return Int(n) }
            if errno == EINTR { continue }
            return 0
        }
    }

    /// The length of received datagram `i`.
    @inline(__always)
    func receivedLength(_ i: Int) -> Int { Int(messages[i].msg_len) }

    /// Whether datagram `i` was longer than its slot (and so cut).
    @inline(__always)
    func wasTruncated(_ i: Int) -> Bool { messages[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 }

    /// The outer source address of received datagram `i`, host order.
    @inline(__always)
    func sourceAddress(_ i: Int) -> UInt32 { UInt32(bigEndian: addresses[i].sin_addr.s_addr) }

    // MARK: sending

    /// Prepares slot `i` (whose buffer already holds the packet) for sending `length` bytes
    /// to `address` (network order) at the batch's port.
    @inline(__always)
    func setOutgoing(_ i: Int, length: Int, addressNetworkOrder: UInt32) {
        iovecs[i].iov_len = length
        addresses[i].sin_addr.s_addr = addressNetworkOrder
        messages[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
    }

    /// Sends slots `0..<count` with as few sendmmsg calls as the kernel allows.
    ///
    /// A full socket buffer (EAGAIN) waits for POLLOUT up to `stallMilliseconds` in total
    /// before giving up on the rest; a datagram the kernel refuses outright (no route, say)
    /// is skipped.
    ///
    /// - Returns: how many datagrams were not sent.
    @inline(__always)
    func send(_ fd: Int32, count: Int, stallMilliseconds: Int32 = 200) -> Int {
        var offset = 0
        var failed = 0
        var stalled: Int32 = 0
        while offset < count {
            let n = twill_sendmmsg(fd, messages + offset, UInt32(count - offset), 0)
            if n > 0 {
                offset += Int(n)
                continue
            }
            let error = errno
            if error == EINTR { continue }
            if error == EAGAIN || error == ENOBUFS {
                if stalled >= stallMilliseconds { break }
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&p, 1, 10)
                stalled += 10
                continue
            }
            failed += 1
            offset += 1
        }
        return failed + (count - offset)
    }
}
