import CNetlink
import Logging
import Synchronization
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// Kernel change notifications (links, IPv4 addresses, IPv4 routes, neighbours and FDB
/// entries) as an `AsyncStream`, read on a dedicated thread.
///
/// Stop it with ``stop()`` (or by dropping every consumer of ``changes``); the stream then
/// finishes. A `.overrun` element means notifications were lost, by the kernel (its socket
/// buffer overflowed) or here (the consumer fell more than ``bufferSize`` behind): reconcile
/// fully. Either way the loss is never silent.
public final class NetlinkMonitor: Sendable {
    public let changes: AsyncStream<NetlinkChange>
    private let wake: EventFD
    private let stopped = Atomic<Bool>(false)
    private let thread: Mutex<OSThread?>

    init(namespacePath: String?, logger: Logger) throws {
        let groups = UInt32(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE | RTMGRP_NEIGH)
        let socket = try Netlink.openSocket(namespacePath: namespacePath, groups: groups)
        // A burst of changes (a link going down takes its routes) must not overrun the socket;
        // an overrun is survived (a reconcile follows) but costs one.
        Socket.trySetOption(socket.fileDescriptor, level: SOL_SOCKET, name: SO_RCVBUF, value: 4 << 20)
        let wake: EventFD
        do { wake = try EventFD.make() } catch { throw NetlinkError(object: "monitor wake-up eventfd", errno: error.errno.rawValue) }
        self.wake = wake
        let (stream, continuation) = AsyncStream.makeStream(of: NetlinkChange.self, bufferingPolicy: .bufferingNewest(Self.bufferSize))
        changes = stream
        thread = Mutex(nil)
        let t = try OSThread.spawn(name: "twill-nlmon") {
            Self.loop(socket: socket, wakeFD: wake.descriptor, continuation: continuation, logger: logger)
        }
        thread.withLock { $0 = t }
        continuation.onTermination = { [weak self] _ in self?.signalStop() }
    }

    /// Changes buffered for a slow consumer before the oldest are dropped (and an overrun said).
    public static let bufferSize = 4096

    deinit {
        stop()
        wake.close()
    }

    /// Stops the reader thread and finishes ``changes``. Safe to call more than once.
    public func stop() {
        signalStop()
        let t = thread.withLock { t -> OSThread? in
            let old = t
            t = nil
            return old
        }
        t?.join()
    }

    private func signalStop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        wake.signal()
    }

    private static func loop(socket: NetlinkSocket, wakeFD: Int32, continuation: AsyncStream<NetlinkChange>.Continuation, logger: Logger) {
        defer { continuation.finish() }
        let capacity = NetlinkSocket.receiveCapacity
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        defer { buffer.deallocate() }
        var fds = [
            pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            fds[0].revents = 0
            fds[1].revents = 0
            let rc = Syscall.retryOnInterrupt { poll(&fds, 2, -1) }
            if rc < 0 {
                logger.error("netlink monitor poll failed", metadata: ["error": "\(Errno.current)"])
                return
            }
            if fds[1].revents != 0 { return }
            guard fds[0].revents != 0 else { continue }
            let n = Syscall.retryOnInterrupt { recv(socket.fileDescriptor, buffer, capacity, Int32(MSG_DONTWAIT)) }
            if n < 0 {
                let e = errno
                if e == EAGAIN { continue }
                if e == ENOBUFS {
                    logger.warning("netlink monitor overrun: the kernel dropped notifications")
                    Self.deliver(.overrun, continuation)
                    continue
                }
                logger.error("netlink monitor receive failed", metadata: ["error": "\(NetlinkError(object: "monitor socket", errno: e))"])
                return
            }
            var remaining = Int32(n)
            var msg = UnsafePointer(buffer.assumingMemoryBound(to: nlmsghdr.self))
            while mnl_nlmsg_ok(msg, remaining) {
                if let change = decode(msg) { deliver(change, continuation) }
                msg = UnsafePointer(mnl_nlmsg_next(msg, &remaining)!)
            }
        }
    }

    /// Yields `change`; when that pushes an older change out of a full buffer, an overrun
    /// goes in after it, so the consumer learns that something was lost.
    static func deliver(_ change: NetlinkChange, _ continuation: AsyncStream<NetlinkChange>.Continuation) {
        if case .dropped = continuation.yield(change) {
            _ = continuation.yield(.overrun)
        }
    }

    private static func decode(_ msg: UnsafePointer<nlmsghdr>) -> NetlinkChange? {
        switch Int(msg.pointee.nlmsg_type) {
        case Int(RTM_NEWLINK): return parseLink(msg).map { .linkChanged($0) }
        case Int(RTM_DELLINK): return parseLink(msg).map { .linkRemoved($0) }
        case Int(RTM_NEWADDR): return parseAddress(msg).map { .addressAdded($0) }
        case Int(RTM_DELADDR): return parseAddress(msg).map { .addressRemoved($0) }
        case Int(RTM_NEWROUTE): return parseRoute(msg).map { .routeAdded($0) } ?? parseRoute6(msg).map { .route6Added($0) }
        case Int(RTM_DELROUTE): return parseRoute(msg).map { .routeRemoved($0) } ?? parseRoute6(msg).map { .route6Removed($0) }
        case Int(RTM_NEWNEIGH):
            if let f = parseFDB(msg) { return .fdbAdded(f) }
            return parseNeighbour(msg).map { .neighbourAdded($0) }
        case Int(RTM_DELNEIGH):
            if let f = parseFDB(msg) { return .fdbRemoved(f) }
            return parseNeighbour(msg).map { .neighbourRemoved($0) }
        default: return nil
        }
    }
}

extension Netlink {
    /// Starts a monitor in this instance's namespace (its own socket and thread).
    public func monitor() throws -> NetlinkMonitor {
        try NetlinkMonitor(namespacePath: namespacePath, logger: logger)
    }
}
