import CTwillSystem
import Synchronization
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// A layer-3 TUN device from `/dev/net/tun`, opened with `IFF_TUN | IFF_NO_PI` as flannel's
/// udp backend does: each read returns one IPv4/IPv6 packet, each write injects one.
///
/// The device lives as long as the file descriptor (``close()`` or deinit removes it) unless
/// it is made persistent (``setPersistent(_:)``), as the agent does. It belongs to the network namespace of the thread that opened it (see ``NetworkNamespace``).
/// Addresses, MTU, link state and routes are set from outside (netlink or `ip`).
public final class TUNDevice: PacketDevice {
    // From <linux/if_tun.h>; Swift cannot import the _IOW macros.
    static let TUNSETIFF: UInt = 0x4004_54CA
    static let IFF_TUN: Int16 = 0x0001
    static let IFF_NO_PI: Int16 = 0x1000
    static let IFF_VNET_HDR: Int16 = 0x4000
    static let IFF_MULTI_QUEUE: Int16 = 0x0100
    static let TUNSETOFFLOAD: UInt = 0x4004_54D0
    static let TUN_F_CSUM: UInt = 0x01
    static let TUN_F_TSO4: UInt = 0x02
    static let TUN_F_TSO6: UInt = 0x04
    static let SIOCSIFTXQLEN: UInt = 0x8943
    static let TUNSETPERSIST: UInt = 0x4004_54CB
    static let TUNGETIFF: UInt = 0x8004_54D2

    /// The interface name, e.g. `twill0`.
    public let name: String
    /// Whether every read and write carries a 10-byte `virtio_net_hdr` and the kernel may
    /// hand over TCP super-packets (TSO) and packets with a partial checksum.
    public let hasVirtioHeader: Bool
    /// Whether this descriptor is one queue of a multi-queue device (`IFF_MULTI_QUEUE`).
    public let isMultiQueue: Bool
    private let fd: Atomic<Int32>

    /// The descriptor, or -1 after ``close()``.
    public var fileDescriptor: Int32 { fd.load(ordering: .relaxed) }

    /// Opens (creating if needed) the TUN interface `name`, non-blocking and close-on-exec.
    ///
    /// With `offloads`, asks for `IFF_VNET_HDR` and TCP segmentation offload (TSO4 and TSO6
    /// with checksum offload; TSO4 alone where TSO6 is refused), so the kernel's TCP stack hands one super-packet of up to 64 KiB
    /// to userspace instead of ~45 MTU-sized ones; falls back to plain packets if the kernel
    /// refuses. ``hasVirtioHeader`` tells which was granted.
    ///
    /// - Throws: ``SystemError`` if /dev/net/tun cannot be opened (no CAP_NET_ADMIN, no tun
    ///   module), the name is invalid or longer than 15 bytes, or the name is taken by an
    ///   interface of another kind.
    ///
    /// With `multiQueue`, the descriptor is one queue of an `IFF_MULTI_QUEUE` device: open the
    /// same name again (with the same `offloads` as granted) for each further queue; the
    /// kernel spreads outgoing flows over the queues by flow hash. Use ``openQueues(name:count:offloads:)``.
    public init(name: String = "twill0", offloads: Bool = false, multiQueue: Bool = false) throws(SystemError) {
        guard !name.isEmpty, name.utf8.count < Int(IFNAMSIZ) else {
            throw SystemError("TUN name \"\(name)\" must be 1...15 bytes", errno: EINVAL)
        }
        let base = Self.IFF_TUN | Self.IFF_NO_PI | (multiQueue ? Self.IFF_MULTI_QUEUE : 0)
        self.name = name
        self.isMultiQueue = multiQueue
        if offloads {
            let descriptor = try Self.open(name, flags: base | Self.IFF_VNET_HDR)
            if twill_ioctl_value(descriptor, Self.TUNSETOFFLOAD, Self.TUN_F_CSUM | Self.TUN_F_TSO4 | Self.TUN_F_TSO6) == 0
                || twill_ioctl_value(descriptor, Self.TUNSETOFFLOAD, Self.TUN_F_CSUM | Self.TUN_F_TSO4) == 0
            {
                self.hasVirtioHeader = true
                self.fd = Atomic(descriptor)
                return
            }
            // The vnet header flag is fixed at TUNSETIFF time: start over without it.
            Syscall.close(descriptor)
        }
        let descriptor = try Self.open(name, flags: base)
        self.hasVirtioHeader = false
        self.fd = Atomic(descriptor)
    }

    /// Opens `count` queues of the TUN interface `name`: one plain device when `count` is 1,
    /// otherwise an `IFF_MULTI_QUEUE` device opened `count` times.
    ///
    /// Falls back rather than fails: to a single-queue device when the kernel refuses
    /// `IFF_MULTI_QUEUE` (or the name is held by a single-queue device), and to fewer queues
    /// when a further open fails (the kernel caps a device's queues). Every queue gets the
    /// offloads the first one was granted (the flags of all queues must match).
    ///
    /// - Throws: ``SystemError`` when not even one queue opens.
    public static func openQueues(name: String, count: Int, offloads: Bool) throws(SystemError) -> [TUNDevice] {
        guard count > 1 else { return [try TUNDevice(name: name, offloads: offloads)] }
        let first: TUNDevice
        do {
            first = try TUNDevice(name: name, offloads: offloads, multiQueue: true)
        } catch {
            return [try TUNDevice(name: name, offloads: offloads)]
        }
        var queues = [first]
        for _ in 1..<count {
            guard let next = try? TUNDevice(name: name, offloads: first.hasVirtioHeader, multiQueue: true),
                next.hasVirtioHeader == first.hasVirtioHeader
            else { break }
            queues.append(next)
        }
        return queues
    }

    /// Takes over `descriptor`, a TUN queue an earlier run of the agent kept open (see
    /// ``DescriptorKeeper``), after checking that it is what a fresh open would give: a queue
    /// attached to the layer-3 device `name`, without packet information, with a virtio header
    /// exactly when `offloads` is asked for, and multi-queue exactly when `multiQueue` is.
    /// The offloads are asked for again (they are the device's, and may have been changed).
    ///
    /// - Throws: ``SystemError`` saying what does not match; the descriptor is left open for
    ///   the caller to dispose of.
    public init(adopting descriptor: Int32, name: String, offloads: Bool, multiQueue: Bool) throws(SystemError) {
        var request = ifreq()
        guard ioctl(descriptor, Self.TUNGETIFF, &request) == 0 else {
            throw SystemError("TUNGETIFF on the kept descriptor for \(name) (not an attached TUN queue)")
        }
        let found = withUnsafeBytes(of: &request.ifr_ifrn.ifrn_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let flags = request.ifr_ifru.ifru_flags
        func has(_ flag: Int16) -> Bool { flags & flag == flag }
        var problems: [String] = []
        if found != name { problems.append("device \(found), not \(name)") }
        if !has(Self.IFF_TUN) || !has(Self.IFF_NO_PI) { problems.append("not a layer-3 TUN without packet information") }
        if has(Self.IFF_MULTI_QUEUE) != multiQueue {
            problems.append(multiQueue ? "single-queue, several queues wanted" : "multi-queue, one queue wanted")
        }
        var virtio = has(Self.IFF_VNET_HDR)
        if virtio != offloads { problems.append(offloads ? "no virtio header, offloads wanted" : "virtio header, offloads not wanted") }
        if virtio, twill_ioctl_value(descriptor, Self.TUNSETOFFLOAD, Self.TUN_F_CSUM | Self.TUN_F_TSO4 | Self.TUN_F_TSO6) != 0,
            twill_ioctl_value(descriptor, Self.TUNSETOFFLOAD, Self.TUN_F_CSUM | Self.TUN_F_TSO4) != 0
        {
            problems.append("the kernel refuses its offloads now")
            virtio = false
        }
        guard problems.isEmpty else {
            throw SystemError("kept TUN queue does not match: \(problems.joined(separator: "; "))", errno: EINVAL)
        }
        Syscall.makeNonBlockingCloseOnExec(descriptor)
        self.name = name
        self.isMultiQueue = multiQueue
        self.hasVirtioHeader = virtio
        self.fd = Atomic(descriptor)
    }

    /// Makes the device outlive its descriptors (`TUNSETPERSIST`): with `true` it stays, with
    /// its addresses and routes, when the agent exits, so a restart is no outage; with
    /// `false` it goes once the last descriptor closes.
    public func setPersistent(_ persistent: Bool) throws(SystemError) {
        guard twill_ioctl_value(fileDescriptor, Self.TUNSETPERSIST, persistent ? 1 : 0) == 0 else {
            throw SystemError("TUNSETPERSIST \(name)")
        }
    }

    private static func open(_ name: String, flags: Int16) throws(SystemError) -> Int32 {
        let descriptor = try Syscall.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { raw in
            for (i, byte) in name.utf8.enumerated() { raw[i] = byte }
        }
        request.ifr_ifru.ifru_flags = flags
        do {
            try Syscall.valueOrThrow("TUNSETIFF \(name)") { ioctl(descriptor, TUNSETIFF, &request) }
        } catch {
            Syscall.close(descriptor)
            throw error
        }
        return descriptor
    }

    /// Sets the device's transmit queue length (`ip link set NAME txqueuelen N`).
    ///
    /// The kernel queues packets for the reader in a ring of this size and drops when it is
    /// full; the default 500 overflows in the bursts a TCP sender makes while the engine
    /// thread waits for a CPU, and every drop costs TCP a retransmission and a window cut.
    /// Works by name through an ioctl socket, so call it from a thread in the device's
    /// network namespace.
    public func setTransmitQueueLength(_ length: Int32) throws(SystemError) {
        let s = try Socket.open(family: AF_INET, type: Int32(Glibc.SOCK_DGRAM.rawValue))
        defer { Syscall.close(s) }
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { raw in
            for (i, byte) in name.utf8.enumerated() { raw[i] = byte }
        }
        request.ifr_ifru.ifru_ivalue = length
        try Syscall.valueOrThrow("SIOCSIFTXQLEN \(name)") { ioctl(s, Self.SIOCSIFTXQLEN, &request) }
    }

    public func readPacket(into buffer: UnsafeMutableRawPointer, capacity: Int) -> Int {
        let n = Syscall.retryOnInterrupt { Glibc.read(fileDescriptor, buffer, capacity) }
        return n >= 0 ? n : -Int(Errno.current.rawValue)
    }

    public func writePacket(_ packet: UnsafeRawPointer, length: Int) -> Int {
        let n = Syscall.retryOnInterrupt { Glibc.write(fileDescriptor, packet, length) }
        return n >= 0 ? n : -Int(Errno.current.rawValue)
    }

    public func writePacket(pieces: UnsafePointer<iovec>, count: Int) -> Int {
        let n = Syscall.retryOnInterrupt { Glibc.writev(fileDescriptor, pieces, Int32(count)) }
        return n >= 0 ? n : -Int(Errno.current.rawValue)
    }

    /// Reads one packet into `buffer`.
    ///
    /// - Returns: the packet's length, or nil when no packet is waiting (EAGAIN).
    /// - Throws: ``SystemError`` on any other failure (EBADFD once closed, say).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int? {
        let n = readPacket(into: buffer.baseAddress!, capacity: buffer.count)
        if n >= 0 { return n }
        if n == -Int(EAGAIN) { return nil }
        throw SystemError("read \(name)", errno: Int32(-n))
    }

    /// Writes one packet.
    ///
    /// - Throws: ``SystemError`` if the kernel refuses it (EINVAL for a packet it cannot
    ///   parse, EIO while the link is down...).
    public func write(_ packet: UnsafeRawBufferPointer) throws(SystemError) {
        let n = writePacket(packet.baseAddress!, length: packet.count)
        if n < 0 { throw SystemError("write \(name)", errno: Int32(-n)) }
    }

    /// Gives up the descriptor without closing it (for the next engine or the next run to
    /// take over): this object no longer uses it. -1 when it was already closed or released.
    public func release() -> Int32 {
        fd.exchange(-1, ordering: .acquiringAndReleasing)
    }

    /// Closes the descriptor, which removes the interface (and its addresses and routes).
    /// Safe to call more than once.
    public func close() {
        let old = fd.exchange(-1, ordering: .acquiringAndReleasing)
        if old >= 0 { Glibc.close(old) }
    }

    deinit { close() }
}
