import Testing

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var i = s.startIndex
    while i < s.endIndex {
        let j = s.index(i, offsetBy: 2)
        out.append(UInt8(s[i..<j], radix: 16)!)
        i = j
    }
    return out
}

func hex(_ b: [UInt8]) -> String {
    b.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}

/// WireGuard's primitives against published vectors.
@Suite struct WireGuardCryptoTests {
    init() throws { try WireGuardCrypto.load() }

    /// HMAC-BLAKE2s KDF outputs computed independently with Python's `hmac` and
    /// `hashlib.blake2s` for the inputs of wireguard-go's device/kdf_test.go. (The expected
    /// values in the stored copy of that file are HMAC-SHA256's, not BLAKE2s's.)
    @Test(arguments: [
        (
            "746573742d6b6579", "746573742d696e707574", "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
            "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
            "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24"
        ),
        (
            "776972656775617264", "776972656775617264", "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
            "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
            "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160"
        ),
        (
            "", "", "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
            "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
            "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e"
        ),
    ])
    func kdf(key: String, input: String, t0: String, t1: String, t2: String) {
        let out = WireGuardCrypto.kdf(3, key: hex(key), input: hex(input))
        #expect(out.map(hex) == [t0, t1, t2])
        #expect(WireGuardCrypto.kdf(1, key: hex(key), input: hex(input)).map(hex) == [t0])
    }

    /// Keyed BLAKE2s with a 16-byte output (not a truncation), as Python's hashlib computes it.
    @Test func mac() {
        let data = Array("hello".utf8)
        #expect(hex(data.withUnsafeBytes { WireGuardCrypto.mac(Array(0..<32), $0) }) == "1f946dc212a39570bc06fd378517a91e")
        #expect(hex(data.withUnsafeBytes { WireGuardCrypto.mac(Array(0..<16), $0) }) == "6a25fa5a331f36d9bda9c0aeca70bc0b")
    }

    @Test func blake2s() {
        #expect(hex(WireGuardCrypto.hash(Array("abc".utf8))) == "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
        // HASH(a || b) is one hash of the concatenation.
        #expect(WireGuardCrypto.hash(Array("a".utf8), Array("bc".utf8)) == WireGuardCrypto.hash(Array("abc".utf8)))
    }

    /// RFC 7748 section 6.1.
    @Test func x25519() {
        let alice = Secret(hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
        let bob = Secret(hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
        #expect(hex(WireGuardCrypto.publicKey(of: alice)) == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        #expect(hex(WireGuardCrypto.publicKey(of: bob)) == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        #expect(WireGuardCrypto.dh(alice, WireGuardCrypto.publicKey(of: bob)).map(hex) == shared)
        #expect(WireGuardCrypto.dh(bob, WireGuardCrypto.publicKey(of: alice)).map(hex) == shared)
        // A low-order point gives an all-zero secret, which is refused.
        #expect(WireGuardCrypto.dh(alice, [UInt8](repeating: 0, count: 32)) == nil)
        #expect(WireGuardCrypto.dh(alice, [1] + [UInt8](repeating: 0, count: 31)) == nil)
    }

    @Test func generatedKeysAreClamped() {
        for _ in 0..<16 {
            let k = WireGuardCrypto.generatePrivateKey().array
            #expect(k[0] & 7 == 0 && k[31] & 128 == 0 && k[31] & 64 == 64)
        }
    }

    /// draft-irtf-cfrg-xchacha section 2.2.1.
    @Test func hchacha20() {
        let key = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        let nonce = hex("000000090000004a0000000031415927")
        let sub = key.withUnsafeBytes { k in nonce.withUnsafeBytes { HChaCha20.subkey(key: k, nonce16: $0) } }
        #expect(hex(sub) == "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    }

    /// draft-irtf-cfrg-xchacha appendix A.3.1.
    @Test func xchacha20poly1305() {
        let key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
        let nonce = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
        let aad = hex("50515253c0c1c2c3c4c5c6c7")
        let text = Array(
            "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)
        let expected =
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e"
            + "c0875924c1c7987947deafd8780acf49"
        let sealed = WireGuardCrypto.xseal(key: key, nonce: nonce, plaintext: text, aad: aad)
        #expect(hex(sealed) == expected)
        #expect(WireGuardCrypto.xopen(key: key, nonce: nonce, sealed: sealed, aad: aad) == text)
        var tampered = sealed
        tampered[3] ^= 1
        #expect(WireGuardCrypto.xopen(key: key, nonce: nonce, sealed: tampered, aad: aad) == nil)
        #expect(WireGuardCrypto.xopen(key: key, nonce: nonce, sealed: sealed, aad: []) == nil)
    }

    /// RFC 8439 section 2.8.2 (its nonce is not WireGuard's counter form, so the generic call).
    @Test func chacha20poly1305() {
        let key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
        let nonce = hex("070000004041424344454647")
        let aad = hex("50515253c0c1c2c3c4c5c6c7")
        let text = Array(
            "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)
        var buffer = text
        var tag = [UInt8](repeating: 0, count: 16)
        let context = AEADContext()
        let ok = buffer.withUnsafeMutableBytes { b in
            key.withUnsafeBytes { k in
                tag.withUnsafeMutableBytes { t in
                    context.seal(key: k.baseAddress!, nonce: nonce, aad: aad, in: b, tag: t.baseAddress!)
                }
            }
        }
        #expect(ok)
        #expect(hex(Array(buffer.prefix(16))) == "d31a8d34648e60db7b86afbc53ef7ec2")
        #expect(hex(tag) == "1ae10b594f09e26a7e902ecbd0600691")
        // A transport round trip, in pieces, in place.
        var packet = [UInt8](0..<100)
        let plain = packet
        var ptag = [UInt8](repeating: 0, count: 16)
        let sealed = packet.withUnsafeMutableBytes { b in
            key.withUnsafeBytes { k in
                ptag.withUnsafeMutableBytes { t in
                    var pieces = [iovec(iov_base: b.baseAddress, iov_len: 30), iovec(iov_base: b.baseAddress! + 30, iov_len: 70)]
                    return context.sealTransport(key: k.baseAddress!, counter: 7, pieces: &pieces, count: 2, tag: t.baseAddress!)
                }
            }
        }
        #expect(sealed && packet != plain)
        // The same as one sealing of the whole, with WireGuard's nonce.
        #expect(WireGuardCrypto.seal(key: key, counter: 7, plaintext: plain, aad: []) == packet + ptag)
        let opened = packet.withUnsafeMutableBytes { b in
            key.withUnsafeBytes { k in
                ptag.withUnsafeBytes { t in
                    var piece = iovec(iov_base: b.baseAddress, iov_len: 100)
                    return context.openTransport(key: k.baseAddress!, counter: 7, pieces: &piece, count: 1, tag: t.baseAddress!)
                }
            }
        }
        #expect(opened && packet == plain)
        #expect(
            WireGuardCrypto.open(
                key: key, counter: 8, sealed: WireGuardCrypto.seal(key: key, counter: 7, plaintext: plain, aad: []), aad: []) == nil)
    }

    @Test func secretsAreWipedAndNeverPrinted() {
        let s = Secret([1, 2, 3])
        #expect("\(s)" == "<secret, 3 bytes>")
        s.wipe()
        #expect(s.array == [0, 0, 0])
    }
}
