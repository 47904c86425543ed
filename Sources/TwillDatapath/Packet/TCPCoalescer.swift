#if canImport(Glibc)
import Glibc
#endif

/// Merges consecutive TCP segments (over IPv4, or IPv6 without extension headers) of one
/// flow into one super-packet for a single TUN
/// write with a virtio GSO header (userspace GRO), so the receiving TCP stack handles one
/// 64 KiB skb instead of ~45 small ones (and sends far fewer ACKs back through the tunnel).
///
/// Only segments whose TCP checksum verifies are merged (see ``checksumIsValid(_:_:)``).
/// Segments merge when they continue the pending packet exactly: same addresses, ports,
/// ToS, TTL, DF (IPv6: traffic class, flow label, hop limit), ACK number, window, TCP header
/// and options; contiguous sequence numbers;
/// flags ACK or ACK|PSH; equal payload sizes, with only the last one shorter (a shorter or
/// PSH segment closes the packet). Packets with IP options or fragments are never merged.
///
/// Nothing is copied but the first segment's headers: the merged packet is a list of
/// pieces (iovecs) for one writev, [virtio header + headers][payload][payload]..., pointing
/// into the buffers the segments were offered from. Those must stay untouched until
/// ``take()``.
///
/// Not thread-safe: one per engine thread. The buffers are allocated once.
final class TCPCoalescer {
    /// The virtio header at 6..<16, the first segment's IP and TCP headers from 16 on.
    private let frame: UnsafeMutableRawPointer
    private var packet: UnsafeMutableRawPointer { frame + 16 }
    static let maximumLength = 65535
    /// Segments per merged packet.
    static let maximumSegments = 64
    /// The writev pieces: headers, then one per segment's payload.
    private let pieces: UnsafeMutablePointer<iovec>

    /// The pending packet. Kept behind a pointer, not in stored properties: this is touched
    /// for every received segment, and class properties would cost a dynamic exclusivity
    /// check per access.
    private struct Pending {
        /// Segments (0: none pending).
        var count = 0
        var length = 0
        /// The IP header's length: 20 (IPv4) or 40 (IPv6).
        var ipLength = 20
        var headerLength = 0
        var segmentSize = 0
        var nextSequence: UInt32 = 0
        var closed = false
        var sawPSH = false
    }
    private let state: UnsafeMutablePointer<Pending>

    /// Segments in the pending packet (0: none pending).
    var count: Int { state.pointee.count }

    init() {
        frame = .allocate(byteCount: 16 + 128, alignment: 64)
        frame.initializeMemory(as: UInt8.self, repeating: 0, count: 16 + 128)
        pieces = .allocate(capacity: 1 + Self.maximumSegments)
        pieces.initialize(repeating: iovec(), count: 1 + Self.maximumSegments)
        state = .allocate(capacity: 1)
        state.initialize(to: Pending())
    }

    deinit {
        frame.deallocate()
        pieces.deallocate()
        state.deallocate()
    }

    /// Whether a TCP packet may start or join a merge: IPv4 without options and not a
    /// fragment, or IPv6 with TCP right after the fixed header; a payload, and only ACK
    /// (optionally PSH) among the flags.
    @inline(__always)
    static func isCandidate(_ p: UnsafeRawPointer, _ length: Int) -> (ip: Int, tcpHeader: Int, payload: Int)? {
        guard length >= 40 else { return nil }
        let ip: Int
        let first = p.load(as: UInt8.self)
        if first == 0x45 {
            guard p.load(fromByteOffset: 9, as: UInt8.self) == 6 else { return nil }
            let fragment = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
            guard fragment & 0x3FFF == 0 else { return nil } // MF clear, offset 0 (DF allowed)
            ip = 20
        } else if first >> 4 == 6 {
            guard length >= 60, p.load(fromByteOffset: 6, as: UInt8.self) == 6 else { return nil }
            ip = 40
        } else {
            return nil
        }
        let tcpHeader = Int(p.load(fromByteOffset: ip + 12, as: UInt8.self) >> 4) * 4
        guard tcpHeader >= 20, ip + tcpHeader < length else { return nil }
        let flags = p.load(fromByteOffset: ip + 13, as: UInt8.self)
        guard flags & ~0x08 == 0x10 else { return nil }
        return (ip, tcpHeader, length - ip - tcpHeader)
    }

    /// The pseudo-header sum of a TCP packet whose IP header is `ip` bytes (20: IPv4, 40:
    /// IPv6) and whose TCP part is `tcpLength` bytes.
    @inline(__always)
    static func pseudoHeaderSum(_ p: UnsafeRawPointer, ip: Int, tcpLength: Int) -> UInt16 {
        let addresses = ip == 40 ? UnsafeRawBufferPointer(start: p + 8, count: 32) : UnsafeRawBufferPointer(start: p + 12, count: 8)
        return InternetChecksum.add(InternetChecksum.add(InternetChecksum.sum(addresses), 6), UInt16(truncatingIfNeeded: tcpLength))
    }

    /// Whether the TCP checksum of a candidate (an `ip`-byte IP header, then TCP) is right.
    /// The merged packet goes to the kernel marked NEEDS_CSUM (its checksum is ours to vouch
    /// for), so a segment corrupted on the way must never be merged: it is written alone, as
    /// it came, and the kernel's own check drops and counts it.
    @inline(__always)
    static func checksumIsValid(_ p: UnsafeRawPointer, _ length: Int, ip: Int = 20) -> Bool {
        let tcpLength = length - ip
        let sum = InternetChecksum.add(
            pseudoHeaderSum(p, ip: ip, tcpLength: tcpLength),
            InternetChecksum.sum(UnsafeRawBufferPointer(start: p + ip, count: tcpLength)))
        return sum == 0xFFFF
    }

    /// Tries to append `p` (a validated IPv4 packet of `length` bytes) to the pending packet,
    /// or to start one when none is pending. `p` must stay valid and unchanged until
    /// ``take()``.
    ///
    /// - Returns: false when the packet neither joins nor starts a merge: the caller flushes
    ///   (``take()``) and either offers it again or writes it as it is.
    @inline(__always)
    func offer(_ p: UnsafeRawPointer, _ length: Int) -> Bool {
        guard let (ip, tcpHeader, payload) = Self.isCandidate(p, length), Self.checksumIsValid(p, length, ip: ip) else { return false }
        let flags = p.load(fromByteOffset: ip + 13, as: UInt8.self)
        let sequence = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: ip + 4, as: UInt32.self))
        if state.pointee.count == 0 {
            packet.copyMemory(from: p, byteCount: ip + tcpHeader)
            pieces[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: p + ip + tcpHeader), iov_len: payload)
            state.pointee.count = 1
            state.pointee.length = length
            state.pointee.ipLength = ip
            state.pointee.headerLength = ip + tcpHeader
            state.pointee.segmentSize = payload
            state.pointee.nextSequence = sequence &+ UInt32(payload)
            state.pointee.sawPSH = flags & 0x08 != 0
            state.pointee.closed = state.pointee.sawPSH
            return true
        }
        let pending = state.pointee
        guard !pending.closed, ip == pending.ipLength, ip + tcpHeader == pending.headerLength, payload <= pending.segmentSize,
            sequence == pending.nextSequence, pending.length + payload <= Self.maximumLength,
            pending.count < Self.maximumSegments, sameFlow(p)
        else { return false }
        pieces[1 + count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: p + state.pointee.headerLength), iov_len: payload)
        state.pointee.length += payload
        state.pointee.count += 1
        state.pointee.nextSequence = sequence &+ UInt32(payload)
        if flags & 0x08 != 0 {
            state.pointee.sawPSH = true
            state.pointee.closed = true
        }
        if payload < state.pointee.segmentSize { state.pointee.closed = true }
        return true
    }

    /// Header fields that must match between the pending packet and a new segment (of the
    /// same IP version: ``offer(_:_:)`` checked the header lengths).
    @inline(__always)
    private func sameFlow(_ p: UnsafeRawPointer) -> Bool {
        let q = UnsafeRawPointer(packet)
        if state.pointee.ipLength == 40 { return sameFlow6(p, q) }
        // ToS (byte 1); DF (byte 6 high bits); TTL (8); addresses (12..<20).
        guard p.load(fromByteOffset: 1, as: UInt8.self) == q.load(fromByteOffset: 1, as: UInt8.self),
            p.load(fromByteOffset: 6, as: UInt8.self) & 0x40 == q.load(fromByteOffset: 6, as: UInt8.self) & 0x40,
            p.load(fromByteOffset: 8, as: UInt8.self) == q.load(fromByteOffset: 8, as: UInt8.self),
            p.loadUnaligned(fromByteOffset: 12, as: UInt64.self) == q.loadUnaligned(fromByteOffset: 12, as: UInt64.self),
            // Ports (20..<24), ACK number (28..<32), data offset (32), window (34..<36).
            p.loadUnaligned(fromByteOffset: 20, as: UInt32.self) == q.loadUnaligned(fromByteOffset: 20, as: UInt32.self),
            p.loadUnaligned(fromByteOffset: 28, as: UInt32.self) == q.loadUnaligned(fromByteOffset: 28, as: UInt32.self),
            p.load(fromByteOffset: 32, as: UInt8.self) == q.load(fromByteOffset: 32, as: UInt8.self),
            p.loadUnaligned(fromByteOffset: 34, as: UInt16.self) == q.loadUnaligned(fromByteOffset: 34, as: UInt16.self)
        else { return false }
        // Options (40..<headerLength) byte for byte (timestamps included, as Linux GRO).
        var offset = 40
        let headerLength = state.pointee.headerLength
        while offset < headerLength {
            if p.loadUnaligned(fromByteOffset: offset, as: UInt32.self) != q.loadUnaligned(fromByteOffset: offset, as: UInt32.self) {
                return false
            }
            offset += 4
        }
        return true
    }

    /// ``sameFlow(_:)`` for IPv6: version, traffic class and flow label (0..<4), hop limit
    /// (7), addresses (8..<40), then the TCP fields 40 bytes in.
    @inline(__always)
    private func sameFlow6(_ p: UnsafeRawPointer, _ q: UnsafeRawPointer) -> Bool {
        guard p.loadUnaligned(as: UInt32.self) == q.loadUnaligned(as: UInt32.self),
            p.load(fromByteOffset: 7, as: UInt8.self) == q.load(fromByteOffset: 7, as: UInt8.self),
            p.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == q.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
            p.loadUnaligned(fromByteOffset: 16, as: UInt64.self) == q.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
            p.loadUnaligned(fromByteOffset: 24, as: UInt64.self) == q.loadUnaligned(fromByteOffset: 24, as: UInt64.self),
            p.loadUnaligned(fromByteOffset: 32, as: UInt64.self) == q.loadUnaligned(fromByteOffset: 32, as: UInt64.self),
            // Ports (40..<44), ACK number (48..<52), data offset (52), window (54..<56).
            p.loadUnaligned(fromByteOffset: 40, as: UInt32.self) == q.loadUnaligned(fromByteOffset: 40, as: UInt32.self),
            p.loadUnaligned(fromByteOffset: 48, as: UInt32.self) == q.loadUnaligned(fromByteOffset: 48, as: UInt32.self),
            p.load(fromByteOffset: 52, as: UInt8.self) == q.load(fromByteOffset: 52, as: UInt8.self),
            p.loadUnaligned(fromByteOffset: 54, as: UInt16.self) == q.loadUnaligned(fromByteOffset: 54, as: UInt16.self)
        else { return false }
        var offset = 60
        let headerLength = state.pointee.headerLength
        while offset < headerLength {
            if p.loadUnaligned(fromByteOffset: offset, as: UInt32.self) != q.loadUnaligned(fromByteOffset: offset, as: UInt32.self) {
                return false
            }
            offset += 4
        }
        return true
    }

    /// Finishes the pending packet and returns its pieces for one writev to the TUN: a
    /// virtio header (GSO for a merged packet, all zero for a lone segment, which goes out
    /// byte for byte as it came), the headers, the payloads. Then forgets it. Call only when
    /// ``count`` > 0.
    @inline(__always)
    func take() -> (pieces: UnsafeMutablePointer<iovec>, count: Int, bytes: Int) {
        defer { state.pointee.count = 0 }
        let start = packet - VirtioNetHeader.size
        pieces[0] = iovec(iov_base: start, iov_len: VirtioNetHeader.size + state.pointee.headerLength)
        let result = (pieces, 1 + state.pointee.count, VirtioNetHeader.size + state.pointee.length)
        if state.pointee.count == 1 {
            VirtioNetHeader.plain.write(to: start)
            return result
        }
        let ip = state.pointee.ipLength
        if ip == 40 {
            // IPv6 payload length (no header checksum).
            packet.storeBytes(of: UInt16(state.pointee.length - 40).bigEndian, toByteOffset: 4, as: UInt16.self)
        } else {
            // IPv4 total length and header checksum.
            packet.storeBytes(of: UInt16(state.pointee.length).bigEndian, toByteOffset: 2, as: UInt16.self)
            packet.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)
            let ipSum = InternetChecksum.checksum(UnsafeRawBufferPointer(start: packet, count: 20))
            packet.storeBytes(of: ipSum.bigEndian, toByteOffset: 10, as: UInt16.self)
        }
        // PSH if any merged segment had it.
        if state.pointee.sawPSH {
            packet.storeBytes(of: packet.load(fromByteOffset: ip + 13, as: UInt8.self) | 0x08, toByteOffset: ip + 13, as: UInt8.self)
        }
        // The TCP checksum field holds the pseudo-header sum (not inverted); the kernel
        // finishes it per segment or verifies nothing (NEEDS_CSUM = checksum is ours to trust).
        let pseudo = Self.pseudoHeaderSum(packet, ip: ip, tcpLength: state.pointee.length - ip)
        packet.storeBytes(of: pseudo.bigEndian, toByteOffset: ip + 16, as: UInt16.self)
        VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum, gsoType: ip == 40 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
            headerLength: UInt16(state.pointee.headerLength), gsoSize: UInt16(state.pointee.segmentSize),
            checksumStart: UInt16(ip), checksumOffset: 16
        ).write(to: start)
        return result
    }
}
