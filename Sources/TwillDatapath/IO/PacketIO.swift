import CTwillSystem
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// The packet device side of an engine queue: a TUN queue in production (``TUNDevice``), an
/// in-memory device in tests. The engine's pumps do all their device I/O through it.
///
/// Calls never block (the descriptor is non-blocking) and report failure as a negative errno
/// (`-EAGAIN` when nothing is waiting), so that the packet path neither throws nor allocates.
public protocol PacketDevice: AnyObject, Sendable {
    /// The interface name, e.g. `twill0`.
    var name: String { get }
    /// A descriptor to poll for POLLIN (readable when a packet waits); POLLERR/POLLHUP/POLLNVAL
    /// mean the device is gone.
    var fileDescriptor: Int32 { get }
    /// Whether every read and write carries a 10-byte `virtio_net_hdr` (offloads granted).
    var hasVirtioHeader: Bool { get }
    /// Reads one packet (with its virtio header when ``hasVirtioHeader``) into `buffer`:
    /// its length, or -errno.
    func readPacket(into buffer: UnsafeMutableRawPointer, capacity: Int) -> Int
    /// Writes one packet: the bytes written, or -errno.
    func writePacket(_ packet: UnsafeRawPointer, length: Int) -> Int
    /// Writes one packet gathered from `count` pieces: the bytes written, or -errno.
    func writePacket(pieces: UnsafePointer<iovec>, count: Int) -> Int
    /// Closes the device (a TUN disappears with its last descriptor). Idempotent.
    func close()
    /// Sets the transmit queue length where the device has one (no-op elsewhere).
    func setTransmitQueueLength(_ length: Int32) throws(SystemError)
}

/// The datagram side of an engine queue: a UDP socket in production (``UDPSocket``), an
/// in-memory network in tests. Messages are the kernel's `mmsghdr`: names, iovecs and control
/// messages (UDP_SEGMENT on send, UDP_GRO on receive) as recvmmsg and sendmmsg use them.
public protocol DatagramSocket: AnyObject, Sendable {
    /// The bound local port.
    var port: UInt16 { get }
    /// A descriptor to poll for POLLIN (a datagram waits) and POLLOUT.
    var fileDescriptor: Int32 { get }
    /// Whether UDP_SEGMENT (one message sent as many datagrams) is available.
    var supportsSegmentationOffload: Bool { get }
    /// Asks for UDP_GRO (arriving datagrams of one flow coalesced into one message with the
    /// segment size in a control message); whether it was granted.
    func enableReceiveOffload() -> Bool
    /// recvmmsg with MSG_DONTWAIT into `count` prepared messages: how many were filled, or -errno.
    func receiveMessages(_ messages: UnsafeMutablePointer<twill_mmsghdr>, count: Int) -> Int
    /// sendmmsg of `count` prepared messages: how many were sent, or -errno.
    func sendMessages(_ messages: UnsafeMutablePointer<twill_mmsghdr>, count: Int) -> Int
    /// Waits at most `milliseconds` for room to send.
    func waitWritable(milliseconds: Int32)
    /// Closes the socket. Idempotent.
    func close()
}
