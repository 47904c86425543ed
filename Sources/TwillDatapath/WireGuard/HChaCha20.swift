/// HChaCha20 (draft-irtf-cfrg-xchacha section 2.2): a 32-byte subkey from a key and the first
/// 16 bytes of an XChaCha20 nonce. OpenSSL has ChaCha20-Poly1305 but not its extended-nonce
/// form, which WireGuard's cookie replies use.
enum HChaCha20 {
    static func subkey(key: UnsafeRawBufferPointer, nonce16: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(key.count == 32 && nonce16.count >= 16)
        var s = [UInt32](repeating: 0, count: 16)
        s[0] = 0x6170_7865
        s[1] = 0x3320_646e
        s[2] = 0x7962_2d32
        s[3] = 0x6b20_6574
        for i in 0..<8 { s[4 + i] = key.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian }
        for i in 0..<4 { s[12 + i] = nonce16.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian }
        @inline(__always) func quarter(_ a: Int, _ b: Int, _ c: Int, _ d: Int) {
            s[a] &+= s[b]
            s[d] ^= s[a]
            s[d] = s[d].rotateLeft(16)
            s[c] &+= s[d]
            s[b] ^= s[c]
            s[b] = s[b].rotateLeft(12)
            s[a] &+= s[b]
            s[d] ^= s[a]
            s[d] = s[d].rotateLeft(8)
            s[c] &+= s[d]
            s[b] ^= s[c]
            s[b] = s[b].rotateLeft(7)
        }
        for _ in 0..<10 {
            quarter(0, 4, 8, 12)
            quarter(1, 5, 9, 13)
            quarter(2, 6, 10, 14)
            quarter(3, 7, 11, 15)
            quarter(0, 5, 10, 15)
            quarter(1, 6, 11, 12)
            quarter(2, 7, 8, 13)
            quarter(3, 4, 9, 14)
        }
        var out = [UInt8](repeating: 0, count: 32)
        for (k, i) in [0, 1, 2, 3, 12, 13, 14, 15].enumerated() {
            withUnsafeBytes(of: s[i].littleEndian) { for j in 0..<4 { out[4 * k + j] = $0[j] } }
        }
        for i in s.indices { s[i] = 0 }
        return out
    }
}

extension UInt32 {
    @inline(__always) func rotateLeft(_ n: UInt32) -> UInt32 { (self << n) | (self >> (32 - n)) }
}
