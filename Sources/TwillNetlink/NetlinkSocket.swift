import CNetlink
import TwillAddress
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// A failure reported by the kernel (or the socket), before it is given an object name.
struct RawFailure: Error {
    var errno: Int32
    var kernelMessage: String?
}

/// One libmnl rtnetlink socket with its buffers and sequence counter.
///
/// Not thread-safe by itself: ``Netlink`` uses it under a mutex, the monitor from its one thread.
final class NetlinkSocket: @unchecked Sendable {
    let handle: OpaquePointer
    let portID: UInt32
    private var sequence: UInt32
    private let sendBuffer: UnsafeMutableRawPointer
    private let receiveBuffer: UnsafeMutableRawPointer
    static let sendCapacity = 8192
    /// Large enough for any dump part: the kernel caps its dump skbs at 32 KiB.
    static let receiveCapacity = 65536

    /// Opens and binds a netlink socket of `family` (NETLINK_ROUTE, or NETLINK_GENERIC) in
    /// the calling thread's network namespace, subscribed to the legacy multicast `groups`
    /// bitmask (0 for none).
    init(groups: UInt32, family: Int32 = NETLINK_ROUTE) throws(RawFailure) {
        guard let nl = mnl_socket_open(family) else { throw RawFailure(errno: errno) }
        guard mnl_socket_bind(nl, groups, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let e = errno
            mnl_socket_close(nl)
            throw RawFailure(errno: e)
        }
        var one: Int32 = 1
        // Extended acks carry the kernel's own error text; capped acks leave out the echo.
        _ = mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        handle = nl
        portID = mnl_socket_get_portid(nl)
        sequence = UInt32(truncatingIfNeeded: time(nil))
        sendBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.sendCapacity, alignment: 8)
        receiveBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.receiveCapacity, alignment: 8)
    }

    deinit {
        mnl_socket_close(handle)
        sendBuffer.deallocate()
        receiveBuffer.deallocate()
    }

    var fileDescriptor: Int32 { mnl_socket_get_fd(handle) }

    /// Zeroes the request buffer (after a request that carried a key).
    func wipeSendBuffer() { explicit_bzero(sendBuffer, Self.sendCapacity) }

    /// Sends one request and reads its answer.
    ///
    /// Non-dump requests carry NLM_F_ACK and end at the kernel's ack (or error); dumps end at
    /// NLMSG_DONE, across as many datagrams as the kernel sends. Messages of another sequence
    /// number or port are skipped (late answers to an earlier request). `onMessage` sees every
    /// data message. Returns whether a dump was interrupted (NLM_F_DUMP_INTR).
    @discardableResult
    func execute(
        type: Int, flags: Int32, dump: Bool = false,
        build: (inout MessageBuilder) -> Void,
        onMessage: (UnsafePointer<nlmsghdr>) -> Void = { _ in }
    ) throws(RawFailure) -> Bool {
        memset(sendBuffer, 0, Self.sendCapacity)
        let nlh = mnl_nlmsg_put_header(sendBuffer)!
        sequence &+= 1
        let seq = sequence
        nlh.pointee.nlmsg_type = UInt16(type)
        nlh.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | flags | (dump ? NLM_F_DUMP : NLM_F_ACK))
        nlh.pointee.nlmsg_seq = seq
        var builder = MessageBuilder(nlh: nlh, capacity: Self.sendCapacity)
        build(&builder)
        if builder.overflow { throw RawFailure(errno: EMSGSIZE, kernelMessage: "request too large") }
        guard mnl_socket_sendto(handle, nlh, Int(nlh.pointee.nlmsg_len)) >= 0 else { throw RawFailure(errno: errno) }

        var interrupted = false
        while true {
            let n = Syscall.retryOnInterrupt { mnl_socket_recvfrom(handle, receiveBuffer, Self.receiveCapacity) }
            if n < 0 { throw RawFailure(errno: errno) }
            var remaining = Int32(n)
            var msg = UnsafePointer(receiveBuffer.assumingMemoryBound(to: nlmsghdr.self))
            while mnl_nlmsg_ok(msg, remaining) {
                defer { msg = UnsafePointer(mnl_nlmsg_next(msg, &remaining)!) }
                let h = msg.pointee
                guard h.nlmsg_seq == seq, h.nlmsg_pid == portID || h.nlmsg_pid == 0 else { continue }
                if Int32(h.nlmsg_flags) & NLM_F_DUMP_INTR != 0 { interrupted = true }
                switch Int32(h.nlmsg_type) {
                case NLMSG_ERROR:
                    let (code, message) = Self.parseError(msg)
                    if code != 0 { throw RawFailure(errno: code, kernelMessage: message) }
                    if !dump { return interrupted }
                case NLMSG_DONE:
                    if dump {
                        // A dump may end with an error code in the DONE payload.
                        if mnl_nlmsg_get_payload_len(msg) >= 4 {
                            let code = mnl_nlmsg_get_payload(msg)!.loadUnaligned(as: Int32.self)
                            if code < 0 { throw RawFailure(errno: -code) }
                        }
                        return interrupted
                    }
                case NLMSG_NOOP, NLMSG_OVERRUN:
                    continue
                default:
                    onMessage(msg)
                }
            }
        }
    }

    /// The error code (positive errno, 0 for an ack) and the extended-ack text of an NLMSG_ERROR.
    static func parseError(_ msg: UnsafePointer<nlmsghdr>) -> (Int32, String?) {
        let payloadLength = Int(mnl_nlmsg_get_payload_len(msg))
        guard payloadLength >= MemoryLayout<Int32>.size, let payload = mnl_nlmsg_get_payload(msg) else {
            return (EBADMSG, "truncated netlink error message")
        }
        let code = -payload.loadUnaligned(as: Int32.self)
        let flags = Int32(msg.pointee.nlmsg_flags)
        guard flags & NLM_F_ACK_TLVS != 0, payloadLength >= MemoryLayout<nlmsgerr>.size else { return (code, nil) }
        // TLVs follow the echoed request: its header only when capped, else all of it.
        var offset = MemoryLayout<nlmsgerr>.size
        if flags & NLM_F_CAPPED == 0 {
            let echoed = payload.loadUnaligned(fromByteOffset: MemoryLayout<Int32>.size, as: nlmsghdr.self)
            offset = MemoryLayout<Int32>.size + twill_mnl_align(Int(echoed.nlmsg_len))
        }
        guard offset < payloadLength else { return (code, nil) }
        let table = AttributeTable(start: payload + offset, length: payloadLength - offset)
        return (code, table.string(UInt16(NLMSGERR_ATTR_MSG.rawValue)))
    }
}

/// Appends a request's fixed header and attributes through libmnl.
struct MessageBuilder {
    let nlh: UnsafeMutablePointer<nlmsghdr>
    let capacity: Int
    var overflow = false

    /// Appends the family header (ifinfomsg, rtmsg...), already filled in.
    mutating func header<H>(_ value: H) {
        let p = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<H>.size)!
        p.storeBytes(of: value, as: H.self)
    }

    mutating func put(_ type: Int, bytes: UnsafeRawBufferPointer) {
        if !mnl_attr_put_check(nlh, capacity, UInt16(type), bytes.count, bytes.baseAddress) { overflow = true }
    }

    mutating func put(_ type: Int, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { put(type, bytes: $0) }
    }

    mutating func putU8(_ type: Int, _ v: UInt8) { withUnsafeBytes(of: v) { put(type, bytes: $0) } }
    mutating func putU16(_ type: Int, _ v: UInt16) { withUnsafeBytes(of: v) { put(type, bytes: $0) } }
    mutating func putU32(_ type: Int, _ v: UInt32) { withUnsafeBytes(of: v) { put(type, bytes: $0) } }
    mutating func putBE16(_ type: Int, _ v: UInt16) { putU16(type, v.bigEndian) }
    /// A flag attribute: present, no payload.
    mutating func putFlag(_ type: Int) { withUnsafeBytes(of: UInt8(0)) { put(type, bytes: UnsafeRawBufferPointer(rebasing: $0[0..<0])) } }

    mutating func putString(_ type: Int, _ s: String) {
        if !mnl_attr_put_strz_check(nlh, capacity, UInt16(type), s) { overflow = true }
    }

    mutating func putIPv4(_ type: Int, _ a: IPv4Address) { putU32(type, a.rawValue.bigEndian) }

    mutating func putIP(_ type: Int, _ a: IPAddress) {
        switch a {
        case .v4(let v4): putIPv4(type, v4)
        case .v6(let v6): put(type, v6.bytes)
        }
    }

    mutating func nested(_ type: Int, _ body: (inout MessageBuilder) -> Void) {
        guard let nest = mnl_attr_nest_start_check(nlh, capacity, UInt16(type)) else {
            overflow = true
            return
        }
        body(&self)
        mnl_attr_nest_end(nlh, nest)
    }
}

/// The attributes of one message (or one nest), by type; the last of a repeated type wins.
/// Valid only while the received buffer is: copy values out at once.
struct AttributeTable {
    private(set) var entries: [UInt16: UnsafeRawBufferPointer] = [:]

    init(start: UnsafeRawPointer, length: Int) {
        var remaining = Int32(length)
        var attr = start.assumingMemoryBound(to: nlattr.self)
        while remaining > 0, mnl_attr_ok(attr, remaining) {
            let type = mnl_attr_get_type(attr)
            let len = Int(mnl_attr_get_payload_len(attr))
            entries[type] = UnsafeRawBufferPointer(start: mnl_attr_get_payload(attr), count: len)
            let next = UnsafePointer(mnl_attr_next(attr)!)
            remaining -= Int32(UnsafeRawPointer(next) - UnsafeRawPointer(attr))
            attr = next
        }
    }

    /// The attributes after a message's family header of `headerSize` bytes.
    init(message: UnsafePointer<nlmsghdr>, headerSize: Int) {
        let start = mnl_nlmsg_get_payload_offset(message, headerSize)!
        let tail = mnl_nlmsg_get_payload_tail(message)!
        self.init(start: UnsafeRawPointer(start), length: UnsafeRawPointer(tail) - UnsafeRawPointer(start))
    }

    /// The attributes inside nest `type`, each a nest itself, in order (arrays such as
    /// WireGuard's peers, whose children all have type 0 and would overwrite each other here).
    func nestedArray(_ type: Int) -> [AttributeTable] {
        guard let b = entries[UInt16(type)], let base = b.baseAddress else { return [] }
        var out: [AttributeTable] = []
        var remaining = Int32(b.count)
        var attr = base.assumingMemoryBound(to: nlattr.self)
        while remaining > 0, mnl_attr_ok(attr, remaining) {
            out.append(AttributeTable(start: mnl_attr_get_payload(attr), length: Int(mnl_attr_get_payload_len(attr))))
            let next = UnsafePointer(mnl_attr_next(attr)!)
            remaining -= Int32(UnsafeRawPointer(next) - UnsafeRawPointer(attr))
            attr = next
        }
        return out
    }

    func u64(_ type: Int) -> UInt64? {
        guard let b = entries[UInt16(type)], b.count >= 8 else { return nil }
        return b.loadUnaligned(as: UInt64.self)
    }

    func nested(_ type: Int) -> AttributeTable? {
        guard let b = entries[UInt16(type)], let base = b.baseAddress else { return nil }
        return AttributeTable(start: base, length: b.count)
    }

    func bytes(_ type: Int) -> [UInt8]? { entries[UInt16(type)].map { Array($0) } }

    /// Whether the attribute is present (flag attributes have no payload).
    func has(_ type: Int) -> Bool { entries[UInt16(type)] != nil }

    func u8(_ type: Int) -> UInt8? {
        guard let b = entries[UInt16(type)], b.count >= 1 else { return nil }
        return b[0]
    }

    func u16(_ type: Int) -> UInt16? {
        guard let b = entries[UInt16(type)], b.count >= 2 else { return nil }
        return b.loadUnaligned(as: UInt16.self)
    }

    func u32(_ type: Int) -> UInt32? {
        guard let b = entries[UInt16(type)], b.count >= 4 else { return nil }
        return b.loadUnaligned(as: UInt32.self)
    }

    func string(_ type: UInt16) -> String? {
        guard let b = entries[type] else { return nil }
        let bytes = b.prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }

    func string(_ type: Int) -> String? { string(UInt16(type)) }

    func ipv4(_ type: Int) -> IPv4Address? {
        guard let b = entries[UInt16(type)], b.count == 4 else { return nil }
        return IPv4Address(rawValue: UInt32(bigEndian: b.loadUnaligned(as: UInt32.self)))
    }

    func ip(_ type: Int) -> IPAddress? {
        guard let b = entries[UInt16(type)] else { return nil }
        if b.count == 4 { return .v4(IPv4Address(rawValue: UInt32(bigEndian: b.loadUnaligned(as: UInt32.self)))) }
        if b.count == 16, let a = try? IPv6Address(bytes: Array(b)) { return .v6(a) }
        return nil
    }

    func mac(_ type: Int) -> MACAddress? {
        guard let b = entries[UInt16(type)] else { return nil }
        return MACAddress(bytes: b)
    }
}

/// The fixed family header of a received message, if the message is long enough for it.
func familyHeader<H>(_ msg: UnsafePointer<nlmsghdr>, as: H.Type) -> H? {
    guard Int(mnl_nlmsg_get_payload_len(msg)) >= MemoryLayout<H>.size, let p = mnl_nlmsg_get_payload(msg) else { return nil }
    return p.loadUnaligned(as: H.self)
}
