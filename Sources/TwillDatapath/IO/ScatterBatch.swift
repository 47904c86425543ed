import CTwillSystem
import TwillAddress
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// Outgoing messages gathered from pieces (iovecs) rather than copied into one buffer: the
/// zero-copy send of the TCP segments of a TSO super-packet. Each message is one UDP_SEGMENT
/// send of up to ``maximumSegments`` datagrams, every datagram a header written in this
/// batch's header area followed by its payload where it lies in the super-packet.
///
/// Not thread-safe: each engine thread owns one. Everything is allocated once.
final class ScatterBatch {
    /// Datagrams per message (the kernel's UDP_SEGMENT limit is 64).
    static let maximumSegments = 64
    /// Bytes reserved for one segment's IP and TCP headers (at most 60 + 60).
    static let headerRoom = 128
    static let piecesPerMessage = 2 * maximumSegments

    let capacity: Int
    private let iovecs: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutableRawPointer
    private let addresses: UnsafeMutablePointer<sockaddr_in>
    private let addresses6: UnsafeMutablePointer<sockaddr_in6>?
    private let controls: UnsafeMutableRawPointer
    private let messages: UnsafeMutablePointer<twill_mmsghdr>
    /// Set when sendmmsg failed with EIO: the route's device cannot do UDP segmentation.
    private(set) var sawSegmentationFailure = false

    /// - Parameter ipv6: messages go to IPv6 peers (an IPv6 underlay).
    init(capacity: Int, port: UInt16, ipv6: Bool = false) {
        self.capacity = capacity
        addresses6 = ipv6 ? .allocate(capacity: capacity) : nil
        iovecs = .allocate(capacity: capacity * Self.piecesPerMessage)
        iovecs.initialize(repeating: iovec(), count: capacity * Self.piecesPerMessage)
        headers = ZeroedMemory.allocate(byteCount: capacity * Self.maximumSegments * Self.headerRoom)
        addresses = .allocate(capacity: capacity)
        controls = ZeroedMemory.allocate(byteCount: capacity * DatagramBatch.controlSpace)
        messages = .allocate(capacity: capacity)
        for i in 0..<capacity {
            if let addresses6 {
                DatagramBatch.initializeMessage(
                    messages + i, address6: addresses6 + i, port: port,
                    pieces: iovecs + i * Self.piecesPerMessage, count: 0)
            } else {
                DatagramBatch.initializeMessage(
                    messages + i, address: addresses + i, port: port,
                    pieces: iovecs + i * Self.piecesPerMessage, count: 0)
            }
        }
    }

    deinit {
        iovecs.deallocate()
        ZeroedMemory.deallocate(headers)
        addresses.deallocate()
        addresses6?.deallocate()
        ZeroedMemory.deallocate(controls)
        messages.deallocate()
    }

    /// Message `i`'s header area: segment k's headers go at `+ k * headerRoom`.
    @inline(__always)
    func headerArea(_ i: Int) -> UnsafeMutableRawPointer {
        headers + i * Self.maximumSegments * Self.headerRoom
    }

    /// Sets piece `k` of message `i` (at most ``piecesPerMessage``).
    @inline(__always)
    func setPiece(_ i: Int, _ k: Int, _ base: UnsafeRawPointer, _ length: Int) {
        iovecs[i * Self.piecesPerMessage + k] = iovec(iov_base: UnsafeMutableRawPointer(mutating: base), iov_len: length)
    }

    /// Completes message `i`: `pieces` pieces set, `length` bytes in all, to `address`
    /// (network order) at the batch's port; with `segmentSize` > 0 and below `length` the
    /// kernel cuts it into datagrams of that size (UDP_SEGMENT).
    @inline(__always)
    func finish(_ i: Int, pieces: Int, length: Int, addressNetworkOrder: UInt32, segmentSize: Int) {
        messages[i].msg_hdr.msg_iovlen = pieces
        DatagramBatch.address(
            messages + i, addresses + i, control: controls + i * DatagramBatch.controlSpace,
            networkOrder: addressNetworkOrder, length: length, segmentSize: segmentSize)
    }

    /// ``finish(_:pieces:length:addressNetworkOrder:segmentSize:)`` to an IPv6 peer.
    @inline(__always)
    func finish(_ i: Int, pieces: Int, length: Int, address6: IPv6Address, segmentSize: Int) {
        messages[i].msg_hdr.msg_iovlen = pieces
        guard let addresses6 else { return }
        DatagramBatch.address(
            messages + i, addresses6 + i, control: controls + i * DatagramBatch.controlSpace,
            address6: address6, length: length, segmentSize: segmentSize)
    }

    /// Sends messages `start..<start + count` (see
    /// ``DatagramBatch/sendMessages(_:_:count:stallBudget:)``).
    ///
    /// - Returns: how many messages were not sent.
    @inline(__always)
    func send(_ socket: any DatagramSocket, from start: Int, count: Int, stallBudget: inout Int32) -> Int {
        let (failed, refused) = DatagramBatch.sendMessages(socket, messages + start, count: count, stallBudget: &stallBudget)
        if refused { sawSegmentationFailure = true }
        return failed
    }
}
