import CCrypto

#if canImport(Glibc)
import Glibc
#endif

/// Why the wireguard backend cannot run or a key is unusable.
public struct WireGuardError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// WireGuard's primitives (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s) over OpenSSL's libcrypto:
/// HASH (BLAKE2s-256), HMAC (over BLAKE2s), the KDF, MAC (keyed BLAKE2s, 16 bytes), DH
/// (X25519), AEAD (ChaCha20-Poly1305) and XAEAD (XChaCha20-Poly1305). For the handshake
/// and cookies: these allocate; the per-packet path uses ``AEADContext``.
public enum WireGuardCrypto {
    /// Loads libcrypto (once); throws saying what is missing.
    public static func load() throws(WireGuardError) {
        var message = [CChar](repeating: 0, count: 256)
        guard twill_crypto_load(&message, message.count) == 0 else {
            throw WireGuardError(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }

    static func check(_ status: Int32, _ what: String) {
        // These fail only when libcrypto is broken or out of memory: not a peer's doing.
        precondition(status == 0, "libcrypto \(what) failed")
    }

    /// HASH(a || b).
    public static func hash(_ a: [UInt8], _ b: [UInt8] = []) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        check(twill_blake2s256(&out, a, a.count, b, b.count), "BLAKE2s")
        return out
    }

    /// HMAC(key, a || b).
    public static func hmac(_ key: [UInt8], _ a: [UInt8], _ b: [UInt8] = []) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        check(twill_hmac_blake2s(&out, key, key.count, a, a.count, b, b.count), "HMAC-BLAKE2s")
        return out
    }

    /// MAC(key, data): keyed BLAKE2s with a 16-byte output.
    public static func mac(_ key: [UInt8], _ data: UnsafeRawBufferPointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        check(twill_blake2s_mac(&out, 16, key, key.count, data.baseAddress, data.count), "BLAKE2s MAC")
        return out
    }

    /// KDF_n(key, input): `count` (1-3) 32-byte outputs.
    public static func kdf(_ count: Int, key: [UInt8], input: [UInt8]) -> [[UInt8]] {
        var prk = hmac(key, input)
        defer { zero(&prk) }
        var outputs: [[UInt8]] = []
        var previous: [UInt8] = []
        for i in 1...count {
            previous = hmac(prk, previous, [UInt8(i)])
            outputs.append(previous)
        }
        return outputs
    }

    /// X25519 public key of `privateKey`.
    public static func publicKey(of privateKey: Secret) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        privateKey.withBytes { check(twill_x25519_public(&out, $0.baseAddress!.assumingMemoryBound(to: UInt8.self)), "X25519 public key") }
        return out
    }

    /// DH(privateKey, publicKey); nil for a point that yields no secret (all zero).
    public static func dh(_ privateKey: Secret, _ publicKey: [UInt8]) -> [UInt8]? {
        guard publicKey.count == 32 else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        let ok = privateKey.withBytes { twill_x25519(&out, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), publicKey) == 0 }
        return ok ? out : nil
    }

    /// A fresh private key: 32 random bytes, clamped as `wg genkey` does.
    public static func generatePrivateKey() -> Secret {
        let k = Secret.random(count: 32)
        k.bytes.storeBytes(of: k.bytes.load(as: UInt8.self) & 248, as: UInt8.self)
        let last = k.bytes.load(fromByteOffset: 31, as: UInt8.self)
        k.bytes.storeBytes(of: (last & 127) | 64, toByteOffset: 31, as: UInt8.self)
        return k
    }

    /// AEAD(key, counter, plaintext, aad): ciphertext || tag.
    public static func seal(key: [UInt8], counter: UInt64, plaintext: [UInt8], aad: [UInt8]) -> [UInt8] {
        let context = AEADContext()
        var out = plaintext + [UInt8](repeating: 0, count: 16)
        out.withUnsafeMutableBytes { b in
            key.withUnsafeBytes { k in
                _ = context.seal(
                    key: k.baseAddress!, nonce: AEADContext.nonce(counter), aad: aad,
                    in: UnsafeMutableRawBufferPointer(rebasing: b[..<plaintext.count]),
                    tag: b.baseAddress! + plaintext.count)
            }
        }
        return out
    }

    /// The plaintext of ciphertext || tag, or nil when it is not authentic.
    public static func open(key: [UInt8], counter: UInt64, sealed: [UInt8], aad: [UInt8]) -> [UInt8]? {
        guard sealed.count >= 16 else { return nil }
        return open(key: key, nonce: AEADContext.nonce(counter), sealed: sealed, aad: aad)
    }

    static func open(key: [UInt8], nonce: [UInt8], sealed: [UInt8], aad: [UInt8]) -> [UInt8]? {
        let context = AEADContext()
        var out = Array(sealed.dropLast(16))
        let tag = Array(sealed.suffix(16))
        let ok = out.withUnsafeMutableBytes { b in
            key.withUnsafeBytes { k in context.open(key: k.baseAddress!, nonce: nonce, aad: aad, in: b, tag: tag) }
        }
        return ok ? out : nil
    }

    /// XAEAD(key, nonce24, plaintext, aad) (cookie replies).
    public static func xseal(key: [UInt8], nonce: [UInt8], plaintext: [UInt8], aad: [UInt8]) -> [UInt8] {
        precondition(nonce.count == 24)
        var subkey = key.withUnsafeBytes { k in nonce.withUnsafeBytes { HChaCha20.subkey(key: k, nonce16: $0) } }
        defer { zero(&subkey) }
        let context = AEADContext()
        var out = plaintext + [UInt8](repeating: 0, count: 16)
        out.withUnsafeMutableBytes { b in
            subkey.withUnsafeBytes { k in
                _ = context.seal(
                    key: k.baseAddress!, nonce: [0, 0, 0, 0] + nonce[16..<24], aad: aad,
                    in: UnsafeMutableRawBufferPointer(rebasing: b[..<plaintext.count]), tag: b.baseAddress! + plaintext.count)
            }
        }
        return out
    }

    public static func xopen(key: [UInt8], nonce: [UInt8], sealed: [UInt8], aad: [UInt8]) -> [UInt8]? {
        guard nonce.count == 24, sealed.count >= 16 else { return nil }
        var subkey = key.withUnsafeBytes { k in nonce.withUnsafeBytes { HChaCha20.subkey(key: k, nonce16: $0) } }
        defer { zero(&subkey) }
        return open(key: subkey, nonce: [0, 0, 0, 0] + nonce[16..<24], sealed: sealed, aad: aad)
    }

    /// Overwrites an array's bytes (for derived secrets held in arrays briefly).
    public static func zero(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { if let base = $0.baseAddress { explicit_bzero(base, $0.count) } }
    }
}

/// One ChaCha20-Poly1305 context for one thread, reused for every packet (no allocation per
/// packet): the key and nonce are set per call, which for ChaCha20 costs no key schedule.
public final class AEADContext {
    private let context: UnsafeMutableRawPointer

    public init() {
        guard let c = twill_aead_new() else { fatalError("libcrypto: out of memory for a cipher context") }
        context = c
    }

    deinit { twill_aead_free(context) }

    /// WireGuard's nonce: 4 zero bytes, then the counter little-endian.
    static func nonce(_ counter: UInt64) -> [UInt8] {
        [0, 0, 0, 0] + withUnsafeBytes(of: counter.littleEndian) { Array($0) }
    }

    @discardableResult
    func seal(key: UnsafeRawPointer, nonce: [UInt8], aad: [UInt8], in buffer: UnsafeMutableRawBufferPointer, tag: UnsafeMutableRawPointer)
        -> Bool
    {
        var piece = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        return twill_aead_seal(
            context, key.assumingMemoryBound(to: UInt8.self), nonce, aad, aad.count, &piece, 1,
            tag.assumingMemoryBound(to: UInt8.self)) == 0
    }

    func open(key: UnsafeRawPointer, nonce: [UInt8], aad: [UInt8], in buffer: UnsafeMutableRawBufferPointer, tag: [UInt8]) -> Bool {
        var piece = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        return twill_aead_open(context, key.assumingMemoryBound(to: UInt8.self), nonce, aad, aad.count, &piece, 1, tag) == 0
    }

    /// Transport data: encrypts `pieces` in place under `key` with the counter's nonce and no
    /// additional data, writing the tag. No allocation.
    @inline(__always)
    func sealTransport(
        key: UnsafeRawPointer, counter: UInt64, pieces: UnsafePointer<iovec>, count: Int32,
        tag: UnsafeMutableRawPointer
    ) -> Bool {
        // Bytes 4..<16 of two words: four zero bytes, then the counter.
        var nonce: (UInt64, UInt64) = (0, counter.littleEndian)
        return withUnsafeBytes(of: &nonce) { n in
            twill_aead_seal(
                context, key.assumingMemoryBound(to: UInt8.self), n.baseAddress!.assumingMemoryBound(to: UInt8.self) + 4,
                nil, 0, pieces, count, tag.assumingMemoryBound(to: UInt8.self)) == 0
        }
    }

    /// Transport data: decrypts `pieces` in place and checks the tag; false when not authentic.
    @inline(__always)
    func openTransport(
        key: UnsafeRawPointer, counter: UInt64, pieces: UnsafePointer<iovec>, count: Int32,
        tag: UnsafeRawPointer
    ) -> Bool {
        // Bytes 4..<16 of two words: four zero bytes, then the counter.
        var nonce: (UInt64, UInt64) = (0, counter.littleEndian)
        return withUnsafeBytes(of: &nonce) { n in
            twill_aead_open(
                context, key.assumingMemoryBound(to: UInt8.self), n.baseAddress!.assumingMemoryBound(to: UInt8.self) + 4,
                nil, 0, pieces, count, tag.assumingMemoryBound(to: UInt8.self)) == 0
        }
    }
}
