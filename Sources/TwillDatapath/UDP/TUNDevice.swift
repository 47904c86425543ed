import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A layer-3 TUN device from `/dev/net/tun`, opened with `IFF_TUN | IFF_NO_PI` as flannel's
/// udp backend does: each read returns one IPv4/IPv6 packet, each write injects one.
///
/// The device lives as long as the file descriptor: ``close()`` (or deinit) removes it. It
/// belongs to the network namespace of the thread that opened it (see ``NamespaceThread``).
/// Addresses, MTU, link state and routes are set from outside (netlink or `ip`).
public final class TUNDevice: Sendable {
    // From <linux/if_tun.h>; Swift cannot import the _IOW macros.
    static let TUNSETIFF: UInt = 0x4004_54CA
    static let IFF_TUN: Int16 = 0x0001
    static let IFF_NO_PI: Int16 = 0x1000

    /// The interface name, e.g. `twill0`.
    public let name: String
    private let fd: Atomic<Int32>

    /// The descriptor, or -1 after ``close()``.
    public var fileDescriptor: Int32 { fd.load(ordering: .relaxed) }

    /// Opens (creating if needed) the TUN interface `name`, non-blocking and close-on-exec.
    ///
    /// - Throws: ``SystemError`` if /dev/net/tun cannot be opened (no CAP_NET_ADMIN, no tun
    ///   module), the name is invalid or longer than 15 bytes, or the name is taken by an
    ///   interface of another kind.
    public init(name: String = "twill0") throws(SystemError) {
        guard !name.isEmpty, name.utf8.count < Int(IFNAMSIZ) else {
            throw SystemError("TUN name \"\(name)\" must be 1...15 bytes", errno: EINVAL)
        }
        let descriptor = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else { throw SystemError("open /dev/net/tun") }
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { raw in
            for (i, byte) in name.utf8.enumerated() { raw[i] = byte }
        }
        request.ifr_ifru.ifru_flags = Self.IFF_TUN | Self.IFF_NO_PI
        guard ioctl(descriptor, Self.TUNSETIFF, &request) == 0 else {
            let error = SystemError("TUNSETIFF \(name)")
            Glibc.close(descriptor)
            throw error
        }
        self.name = name
        self.fd = Atomic(descriptor)
    }

    /// Reads one packet into `buffer`.
    ///
    /// - Returns: the packet's length, or nil when no packet is waiting (EAGAIN).
    /// - Throws: ``SystemError`` on any other failure (EBADFD once closed, say).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int? {
        while true {
            let n = Glibc.read(fileDescriptor, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default: throw SystemError("read \(name)")
            }
        }
    }

    /// Writes one packet.
    ///
    /// - Throws: ``SystemError`` if the kernel refuses it (EINVAL for a packet it cannot
    ///   parse, EIO while the link is down...).
    public func write(_ packet: UnsafeRawBufferPointer) throws(SystemError) {
        while true {
            let n = Glibc.write(fileDescriptor, packet.baseAddress, packet.count)
            if n >= 0 { return }
            if errno == EINTR { continue }
            throw SystemError("write \(name)")
        }
    }

    /// Closes the descriptor, which removes the interface (and its addresses and routes).
    /// Safe to call more than once.
    public func close() {
        let old = fd.exchange(-1, ordering: .acquiringAndReleasing)
        if old >= 0 { Glibc.close(old) }
    }

    deinit { close() }
}
