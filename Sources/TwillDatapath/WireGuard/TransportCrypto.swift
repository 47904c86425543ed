#if canImport(Glibc)
import Glibc
#endif

/// WireGuard transport messages (type 4): sealing and opening in place, shared by the packet
/// threads (their own ``AEADContext`` each, no allocation) and the control thread (keepalives).
enum TransportCrypto {
    /// Writes the header (type 4, the peer's index, `counter`) into the first 16 bytes and
    /// encrypts `pieces` in place (the padded plaintext), writing the tag at `tag`.
    @inline(__always)
    static func seal(
        context: AEADContext, keypair: Keypair, counter: UInt64, header: UnsafeMutableRawPointer,
        pieces: UnsafePointer<iovec>, count: Int32, tag: UnsafeMutableRawPointer
    ) -> Bool {
        header.storeBytes(of: UInt32(WireGuardMessage.transport).littleEndian, as: UInt32.self)
        header.storeBytes(of: keypair.remoteIndex.littleEndian, toByteOffset: 4, as: UInt32.self)
        header.storeBytes(of: counter.littleEndian, toByteOffset: 8, as: UInt64.self)
        return keypair.sendKey.withBytes { key in
            context.sealTransport(key: key.baseAddress!, counter: counter, pieces: pieces, count: count, tag: tag)
        }
    }

    /// Opens a transport message whose keypair the caller found by its receiver index: the
    /// counter, and the plaintext decrypted in place after the header; nil when it is not
    /// authentic (the buffer then holds garbage).
    @inline(__always)
    static func open(context: AEADContext, keypair: Keypair, message: UnsafeMutableRawPointer, length: Int) -> UInt64? {
        let counter = UInt64(littleEndian: message.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        let textLength = length - WireGuardMessage.keepaliveSize
        var piece = iovec(iov_base: message + WireGuardMessage.transportHeaderSize, iov_len: textLength)
        let ok = keypair.receiveKey.withBytes { key in
            context.openTransport(
                key: key.baseAddress!, counter: counter, pieces: &piece, count: 1,
                tag: UnsafeRawPointer(message + length - WireGuardMessage.tagSize))
        }
        return ok ? counter : nil
    }

    /// The control thread's form: seals `message` (16-byte header, `plaintextLength` bytes
    /// already padded, 16 bytes for the tag) in place.
    static func seal(keypair: Keypair, counter: UInt64, message: inout [UInt8], plaintextLength: Int) -> Bool {
        precondition(message.count == plaintextLength + WireGuardMessage.keepaliveSize)
        let context = AEADContext()
        return message.withUnsafeMutableBytes { m in
            var piece = iovec(iov_base: m.baseAddress! + WireGuardMessage.transportHeaderSize, iov_len: plaintextLength)
            return seal(
                context: context, keypair: keypair, counter: counter, header: m.baseAddress!, pieces: &piece, count: 1,
                tag: m.baseAddress! + WireGuardMessage.transportHeaderSize + plaintextLength)
        }
    }
}

/// The engine's clock: monotonic nanoseconds (CLOCK_MONOTONIC, a vDSO call).
enum EngineClock {
    @inline(__always)
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
