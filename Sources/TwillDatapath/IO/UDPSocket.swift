import CTwillSystem
import Synchronization
import TwillAddress
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// The udp backend's UDP socket (IPv4, or IPv6 over an IPv6 underlay): bound to the external address and `Backend.Port`
/// (8285 by default, as flannel), non-blocking, with large kernel buffers so bursts between
/// two batched system calls are not dropped.
public final class UDPSocket: DatagramSocket {
    /// flannel's default udp backend port.
    public static let defaultPort: UInt16 = 8285

    private let fd: Atomic<Int32>
    /// The address the socket is bound to (0.0.0.0 for all; 0.0.0.0 too for an IPv6 socket).
    public let address: IPv4Address
    /// The IPv6 address an IPv6 socket is bound to (the udp engine over an IPv6 underlay).
    public let address6: IPv6Address?
    /// The bound port (the kernel's choice when 0 was asked for).
    public let port: UInt16

    /// The descriptor, or -1 after ``close()``.
    public var fileDescriptor: Int32 { fd.load(ordering: .relaxed) }

    /// Opens and binds the socket.
    ///
    /// - Parameters:
    ///   - address: local address to bind; `.any` for all.
    ///   - port: local port; 0 lets the kernel pick (tests).
    ///   - bufferBytes: SO_RCVBUF/SO_SNDBUF size. Forced past `net.core.{r,w}mem_max` with
    ///     SO_RCVBUFFORCE/SO_SNDBUFFORCE when the process may (CAP_NET_ADMIN), otherwise
    ///     capped by those limits.
    ///   - reusePort: set SO_REUSEPORT before binding, so several sockets (one per engine
    ///     queue) share the port and the kernel spreads arriving datagrams over them by
    ///     4-tuple hash. Only sockets of the same effective user may join the group.
    public convenience init(
        address: IPv4Address = .any, port: UInt16 = UDPSocket.defaultPort,
        bufferBytes: Int = 4 << 20, reusePort: Bool = false
    ) throws(SystemError) {
        try self.init(address: address, address6: nil, port: port, bufferBytes: bufferBytes, reusePort: reusePort)
    }

    /// An IPv6 socket (IPV6_V6ONLY) bound to `address6`: the udp engine over an IPv6 underlay.
    public convenience init(
        address6: IPv6Address, port: UInt16 = UDPSocket.defaultPort,
        bufferBytes: Int = 4 << 20, reusePort: Bool = false
    ) throws(SystemError) {
        try self.init(address: .any, address6: address6, port: port, bufferBytes: bufferBytes, reusePort: reusePort)
    }

    private init(address: IPv4Address, address6: IPv6Address?, port: UInt16, bufferBytes: Int, reusePort: Bool) throws(SystemError) {
        let s = try Socket.open(family: address6 == nil ? AF_INET : AF_INET6, type: Int32(Glibc.SOCK_DGRAM.rawValue))
        do throws(SystemError) {
            // The FORCE variants pass the system's limits for root; a smaller buffer is the fallback.
            let size = Int32(clamping: bufferBytes)
            if !Socket.trySetOption(s, level: SOL_SOCKET, name: SO_RCVBUFFORCE, value: size) {
                Socket.trySetOption(s, level: SOL_SOCKET, name: SO_RCVBUF, value: size)
            }
            if !Socket.trySetOption(s, level: SOL_SOCKET, name: SO_SNDBUFFORCE, value: size) {
                Socket.trySetOption(s, level: SOL_SOCKET, name: SO_SNDBUF, value: size)
            }
            if reusePort { try Socket.setOption(s, level: SOL_SOCKET, name: SO_REUSEPORT, value: 1, what: "SO_REUSEPORT") }
            if let address6 {
                Socket.trySetOption(s, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: 1)
                try Socket.bind(s, UDPSocket.makeAddress6(address6, port), what: "bind [\(address6)]:\(port)")
                self.port = try Self.boundPort(s, sockaddr_in6.self, \.sin6_port)
            } else {
                try Socket.bind(s, UDPSocket.makeAddress(address, port), what: "bind \(address):\(port)")
                self.port = try Self.boundPort(s, sockaddr_in.self, \.sin_port)
            }
        } catch {
            Syscall.close(s)
            throw error
        }
        self.address = address
        self.address6 = address6
        self.fd = Atomic(s)
    }

    /// Takes over `descriptor`, a socket an earlier run of the agent kept open (see
    /// ``DescriptorKeeper``), after checking that it is what a fresh socket would be: UDP,
    /// bound to `address` (or `address6`) and `port` (any port when `port` is 0).
    ///
    /// - Throws: ``SystemError`` saying what does not match; the descriptor is left open for
    ///   the caller to dispose of.
    public init(adopting descriptor: Int32, address: IPv4Address, address6: IPv6Address?, port: UInt16) throws(SystemError) {
        let type = try Socket.option(
            descriptor, level: SOL_SOCKET, name: SO_TYPE,
            what: "SO_TYPE on the kept socket for \(address6.map { "[\($0)]" } ?? "\(address)"):\(port)")
        var storage = sockaddr_in6()
        var size = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &size) }
        }
        guard named == 0 else { throw SystemError("getsockname on the kept socket") }
        let bound: String
        let boundPort: UInt16
        var matches = type == Int32(Glibc.SOCK_DGRAM.rawValue)
        if Int32(storage.sin6_family) == AF_INET6 {
            let high = withUnsafeBytes(of: storage.sin6_addr) { UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)) }
            let low = withUnsafeBytes(of: storage.sin6_addr) { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
            let found = IPv6Address(high: high, low: low)
            boundPort = UInt16(bigEndian: storage.sin6_port)
            bound = "[\(found)]:\(boundPort)"
            matches = matches && address6 == found
        } else if Int32(storage.sin6_family) == AF_INET {
            let sin = withUnsafeBytes(of: storage) { $0.loadUnaligned(as: sockaddr_in.self) }
            let found = IPv4Address(rawValue: UInt32(bigEndian: sin.sin_addr.s_addr))
            boundPort = UInt16(bigEndian: sin.sin_port)
            bound = "\(found):\(boundPort)"
            matches = matches && address6 == nil && address == found
        } else {
            boundPort = 0
            bound = "family \(storage.sin6_family)"
            matches = false
        }
        matches = matches && (port == 0 || port == boundPort)
        guard matches else {
            let wanted = address6.map { "[\($0)]" } ?? "\(address)"
            throw SystemError(
                "kept socket is \(type == Int32(Glibc.SOCK_DGRAM.rawValue) ? "UDP" : "not UDP") bound to \(bound), not \(wanted):\(port)",
                errno: EINVAL)
        }
        Syscall.makeNonBlockingCloseOnExec(descriptor)
        self.address = address
        self.address6 = address6
        self.port = boundPort
        self.fd = Atomic(descriptor)
    }

    /// Sends one datagram (for control paths and tests; the engine batches with sendmmsg).
    ///
    /// - Returns: false if the socket buffer is full (EAGAIN).
    @discardableResult
    public func send(_ payload: UnsafeRawBufferPointer, to address: IPv4Address, port: UInt16) throws(SystemError) -> Bool {
        var sin = UDPSocket.makeAddress(address, port)
        let n = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { addr in
                Syscall.retryOnInterrupt {
                    sendto(fileDescriptor, payload.baseAddress, payload.count, 0, addr, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        if n >= 0 { return true }
        if errno == EAGAIN { return false }
        throw SystemError("sendto \(address):\(port)")
    }

    // Not in Glibc's module: <linux/udp.h>.
    static let solUDP: Int32 = 17
    static let udpSegment: Int32 = 103
    static let udpGRO: Int32 = 104

    /// Asks the kernel to coalesce arriving datagrams of one flow into super-datagrams
    /// (UDP_GRO, Linux 5.0+); each recvmsg then reports the segment size in a cmsg.
    ///
    /// - Returns: whether the kernel accepted.
    public func enableReceiveOffload() -> Bool {
        Socket.trySetOption(fileDescriptor, level: Self.solUDP, name: Self.udpGRO, value: 1)
    }

    /// Whether the kernel knows UDP_SEGMENT (send one buffer as many equal datagrams, Linux
    /// 4.18+). Whether the outgoing device can checksum them shows only at send time (EIO).
    public var supportsSegmentationOffload: Bool {
        (try? Socket.option(fileDescriptor, level: Self.solUDP, name: Self.udpSegment, what: "UDP_SEGMENT")) != nil
    }

    /// The effective receive buffer size the kernel reports (twice what was set, by its accounting).
    public var receiveBufferBytes: Int {
        Int((try? Socket.option(fileDescriptor, level: SOL_SOCKET, name: SO_RCVBUF, what: "SO_RCVBUF")) ?? 0)
    }

    public func receiveMessages(_ messages: UnsafeMutablePointer<twill_mmsghdr>, count: Int) -> Int {
        let n = Syscall.retryOnInterrupt { twill_recvmmsg(fileDescriptor, messages, UInt32(count), Int32(MSG_DONTWAIT)) }
        return n >= 0 ? Int(n) : -Int(Errno.current.rawValue)
    }

    public func sendMessages(_ messages: UnsafeMutablePointer<twill_mmsghdr>, count: Int) -> Int {
        let n = Syscall.retryOnInterrupt { twill_sendmmsg(fileDescriptor, messages, UInt32(count), 0) }
        return n >= 0 ? Int(n) : -Int(Errno.current.rawValue)
    }

    public func waitWritable(milliseconds: Int32) {
        var p = pollfd(fd: fileDescriptor, events: Int16(POLLOUT), revents: 0)
        _ = Syscall.retryOnInterrupt { poll(&p, 1, milliseconds) }
    }

    /// Gives up the descriptor without closing it (for the next engine or the next run to
    /// take over): this object no longer uses it. -1 when it was already closed or released.
    public func release() -> Int32 {
        fd.exchange(-1, ordering: .acquiringAndReleasing)
    }

    /// Closes the socket. Safe to call more than once.
    public func close() {
        let old = fd.exchange(-1, ordering: .acquiringAndReleasing)
        if old >= 0 { Glibc.close(old) }
    }

    deinit { close() }

    /// Binds `s` to `address` (a `sockaddr_in` or `sockaddr_in6`) and returns the port it got
    /// (host order), or nil when bind or getsockname failed (errno says why).
    /// The port `s` is bound to (the one the kernel chose for port 0).
    private static func boundPort<A>(_ s: Int32, _: A.Type, _ port: KeyPath<A, in_port_t>) throws(SystemError) -> UInt16 {
        let address = UnsafeMutablePointer<A>.allocate(capacity: 1)
        defer { address.deallocate() }
        var length = socklen_t(MemoryLayout<A>.size)
        try Syscall.valueOrThrow("getsockname") {
            address.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) }
        }
        return UInt16(bigEndian: address.pointee[keyPath: port])
    }

    /// A `sockaddr_in6` for an IPv6 address and port.
    static func makeAddress6(_ address: IPv6Address, _ port: UInt16) -> sockaddr_in6 {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
            raw.storeBytes(of: address.high.bigEndian, as: UInt64.self)
            raw.storeBytes(of: address.low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        return sin6
    }

    /// A `sockaddr_in` for an address and port.
    static func makeAddress(_ address: IPv4Address, _ port: UInt16) -> sockaddr_in {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr = in_addr(s_addr: address.rawValue.bigEndian)
        return sin
    }
}
