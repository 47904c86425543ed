/// This node's static WireGuard identity, with the keys derived from it once.
public final class WireGuardIdentity: Sendable {
    public let privateKey: Secret
    public let publicKey: [UInt8]
    /// HASH("mac1----" || our public key): checks mac1 of messages sent to us.
    let mac1Key: [UInt8]
    /// HASH("cookie--" || our public key): seals the cookie replies we send.
    let cookieKey: [UInt8]

    public init(privateKey: Secret) {
        self.privateKey = privateKey
        publicKey = WireGuardCrypto.publicKey(of: privateKey)
        mac1Key = WireGuardCrypto.hash(Noise.labelMAC1, publicKey)
        cookieKey = WireGuardCrypto.hash(Noise.labelCookie, publicKey)
    }
}

/// What this node knows of one peer's static identity, with the values derived from it once.
final class PeerStatic: Sendable {
    let publicKey: [UInt8]
    let presharedKey: Secret
    /// DH(our static, their static): the same for every handshake, so computed once; nil
    /// when the peer's key is a low-order point (no handshake is then possible).
    let staticStatic: Secret?
    /// HASH("mac1----" || their public key): for mac1 of messages we send them.
    let mac1Key: [UInt8]
    /// HASH("cookie--" || their public key): opens the cookie replies they send us.
    let cookieKey: [UInt8]

    init(publicKey: [UInt8], presharedKey: Secret?, identity: WireGuardIdentity) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey ?? Secret(count: 32)
        staticStatic = WireGuardCrypto.dh(identity.privateKey, publicKey).map { Secret($0) }
        mac1Key = WireGuardCrypto.hash(Noise.labelMAC1, publicKey)
        cookieKey = WireGuardCrypto.hash(Noise.labelCookie, publicKey)
    }
}

/// A handshake in progress with one peer (the chaining key, hash and ephemeral key between
/// two messages). Zeroed when it completes or is given up.
final class HandshakeState {
    var chainKey: [UInt8]
    var hash: [UInt8]
    var localEphemeral: Secret?
    var remoteEphemeral: [UInt8] = []
    var localIndex: UInt32
    var remoteIndex: UInt32 = 0

    init(chainKey: [UInt8], hash: [UInt8], localIndex: UInt32) {
        self.chainKey = chainKey
        self.hash = hash
        self.localIndex = localIndex
    }

    func wipe() {
        WireGuardCrypto.zero(&chainKey)
        WireGuardCrypto.zero(&hash)
        localEphemeral?.wipe()
        localEphemeral = nil
    }

    deinit { wipe() }
}

/// Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it: the two handshake messages
/// and the macs. Pure functions over bytes; the ``WireGuardDevice`` keeps the state.
enum Noise {
    static let construction = Array("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s".utf8)
    static let identifier = Array("WireGuard v1 zx2c4 Jason@zx2c4.com".utf8)
    static let labelMAC1 = Array("mac1----".utf8)
    static let labelCookie = Array("cookie--".utf8)
    static let initialChainKey = WireGuardCrypto.hash(construction)
    static let initialHash = WireGuardCrypto.hash(initialChainKey, identifier)

    /// Message 1: the initiation to `peer`, macs not yet filled in.
    static func createInitiation(
        identity: WireGuardIdentity, peer: PeerStatic, localIndex: UInt32,
        timestamp: [UInt8], ephemeral: Secret = WireGuardCrypto.generatePrivateKey()
    ) -> ([UInt8], HandshakeState)? {
        guard let staticStatic = peer.staticStatic else { return nil }
        let state = HandshakeState(
            chainKey: initialChainKey, hash: WireGuardCrypto.hash(initialHash, peer.publicKey), localIndex: localIndex)
        var msg = [UInt8](repeating: 0, count: WireGuardMessage.initiationSize)
        msg[0] = WireGuardMessage.initiation
        msg.putLE32(localIndex, at: WireGuardMessage.initiationSender)
        let ePub = WireGuardCrypto.publicKey(of: ephemeral)
        msg.put(ePub, at: WireGuardMessage.initiationEphemeral)
        state.chainKey = WireGuardCrypto.kdf(1, key: state.chainKey, input: ePub)[0]
        state.hash = WireGuardCrypto.hash(state.hash, ePub)
        guard var es = WireGuardCrypto.dh(ephemeral, peer.publicKey) else { return nil }
        var ck = WireGuardCrypto.kdf(2, key: state.chainKey, input: es)
        WireGuardCrypto.zero(&es)
        state.chainKey = ck[0]
        let encryptedStatic = WireGuardCrypto.seal(key: ck[1], counter: 0, plaintext: identity.publicKey, aad: state.hash)
        WireGuardCrypto.zero(&ck[1])
        msg.put(encryptedStatic, at: WireGuardMessage.initiationStatic)
        state.hash = WireGuardCrypto.hash(state.hash, encryptedStatic)
        ck = WireGuardCrypto.kdf(2, key: state.chainKey, input: staticStatic.array)
        state.chainKey = ck[0]
        let encryptedTimestamp = WireGuardCrypto.seal(key: ck[1], counter: 0, plaintext: timestamp, aad: state.hash)
        WireGuardCrypto.zero(&ck[1])
        msg.put(encryptedTimestamp, at: WireGuardMessage.initiationTimestamp)
        state.hash = WireGuardCrypto.hash(state.hash, encryptedTimestamp)
        state.localEphemeral = ephemeral
        return (msg, state)
    }

    /// What a responder learns from an authentic initiation.
    struct ConsumedInitiation {
        var peerPublicKey: [UInt8]
        var timestamp: [UInt8]
        var state: HandshakeState
    }

    /// Opens message 1 (its mac1 already checked): who sent it, and the handshake to answer
    /// it with; nil when it does not decrypt.
    static func consumeInitiation(
        _ msg: [UInt8], identity: WireGuardIdentity,
        lookup: ([UInt8]) -> PeerStatic?
    ) -> (ConsumedInitiation, PeerStatic)? {
        let ePub = msg.slice(WireGuardMessage.initiationEphemeral, 32)
        var chainKey = WireGuardCrypto.kdf(1, key: initialChainKey, input: ePub)[0]
        var hash = WireGuardCrypto.hash(WireGuardCrypto.hash(initialHash, identity.publicKey), ePub)
        guard var es = WireGuardCrypto.dh(identity.privateKey, ePub) else { return nil }
        var ck = WireGuardCrypto.kdf(2, key: chainKey, input: es)
        WireGuardCrypto.zero(&es)
        chainKey = ck[0]
        let encryptedStatic = msg.slice(WireGuardMessage.initiationStatic, 48)
        guard let peerKey = WireGuardCrypto.open(key: ck[1], counter: 0, sealed: encryptedStatic, aad: hash) else { return nil }
        WireGuardCrypto.zero(&ck[1])
        hash = WireGuardCrypto.hash(hash, encryptedStatic)
        guard let peer = lookup(peerKey), let staticStatic = peer.staticStatic else { return nil }
        ck = WireGuardCrypto.kdf(2, key: chainKey, input: staticStatic.array)
        chainKey = ck[0]
        let encryptedTimestamp = msg.slice(WireGuardMessage.initiationTimestamp, 28)
        guard let timestamp = WireGuardCrypto.open(key: ck[1], counter: 0, sealed: encryptedTimestamp, aad: hash) else { return nil }
        WireGuardCrypto.zero(&ck[1])
        hash = WireGuardCrypto.hash(hash, encryptedTimestamp)
        let state = HandshakeState(chainKey: chainKey, hash: hash, localIndex: 0)
        state.remoteEphemeral = ePub
        state.remoteIndex = msg.le32(at: WireGuardMessage.initiationSender)
        return (ConsumedInitiation(peerPublicKey: peerKey, timestamp: timestamp, state: state), peer)
    }

    /// Message 2: the response to a consumed initiation, macs not yet filled in, and the
    /// keypair it makes (the responder's: it may send only once the initiator used it).
    static func createResponse(
        to state: HandshakeState, peer: PeerStatic, localIndex: UInt32, now: UInt64,
        ephemeral: Secret = WireGuardCrypto.generatePrivateKey()
    ) -> ([UInt8], Keypair)? {
        var msg = [UInt8](repeating: 0, count: WireGuardMessage.responseSize)
        msg[0] = WireGuardMessage.response
        msg.putLE32(localIndex, at: WireGuardMessage.responseSender)
        msg.putLE32(state.remoteIndex, at: WireGuardMessage.responseReceiver)
        let ePub = WireGuardCrypto.publicKey(of: ephemeral)
        msg.put(ePub, at: WireGuardMessage.responseEphemeral)
        state.chainKey = WireGuardCrypto.kdf(1, key: state.chainKey, input: ePub)[0]
        state.hash = WireGuardCrypto.hash(state.hash, ePub)
        guard var ee = WireGuardCrypto.dh(ephemeral, state.remoteEphemeral),
            var se = WireGuardCrypto.dh(ephemeral, peer.publicKey)
        else { return nil }
        state.chainKey = WireGuardCrypto.kdf(1, key: state.chainKey, input: ee)[0]
        state.chainKey = WireGuardCrypto.kdf(1, key: state.chainKey, input: se)[0]
        WireGuardCrypto.zero(&ee)
        WireGuardCrypto.zero(&se)
        var k = WireGuardCrypto.kdf(3, key: state.chainKey, input: peer.presharedKey.array)
        state.chainKey = k[0]
        state.hash = WireGuardCrypto.hash(state.hash, k[1])
        let empty = WireGuardCrypto.seal(key: k[2], counter: 0, plaintext: [], aad: state.hash)
        WireGuardCrypto.zero(&k[1])
        WireGuardCrypto.zero(&k[2])
        msg.put(empty, at: WireGuardMessage.responseEmpty)
        state.hash = WireGuardCrypto.hash(state.hash, empty)
        var keys = WireGuardCrypto.kdf(2, key: state.chainKey, input: [])
        let keypair = Keypair(
            sendKey: Secret(keys[1]), receiveKey: Secret(keys[0]), localIndex: localIndex,
            remoteIndex: state.remoteIndex, isInitiator: false, created: now)
        WireGuardCrypto.zero(&keys[0])
        WireGuardCrypto.zero(&keys[1])
        ephemeral.wipe()
        state.wipe()
        return (msg, keypair)
    }

    /// Opens message 2 (its mac1 already checked) for the handshake we started: the
    /// initiator's keypair, or nil when it is not authentic.
    static func consumeResponse(
        _ msg: [UInt8], state: HandshakeState, identity: WireGuardIdentity, peer: PeerStatic,
        now: UInt64
    ) -> Keypair? {
        guard let ephemeral = state.localEphemeral else { return nil }
        let ePub = msg.slice(WireGuardMessage.responseEphemeral, 32)
        var chainKey = WireGuardCrypto.kdf(1, key: state.chainKey, input: ePub)[0]
        var hash = WireGuardCrypto.hash(state.hash, ePub)
        guard var ee = WireGuardCrypto.dh(ephemeral, ePub), var se = WireGuardCrypto.dh(identity.privateKey, ePub) else { return nil }
        chainKey = WireGuardCrypto.kdf(1, key: chainKey, input: ee)[0]
        chainKey = WireGuardCrypto.kdf(1, key: chainKey, input: se)[0]
        WireGuardCrypto.zero(&ee)
        WireGuardCrypto.zero(&se)
        var k = WireGuardCrypto.kdf(3, key: chainKey, input: peer.presharedKey.array)
        chainKey = k[0]
        hash = WireGuardCrypto.hash(hash, k[1])
        let empty = msg.slice(WireGuardMessage.responseEmpty, 16)
        let opened = WireGuardCrypto.open(key: k[2], counter: 0, sealed: empty, aad: hash)
        WireGuardCrypto.zero(&k[1])
        WireGuardCrypto.zero(&k[2])
        guard opened != nil else { return nil }
        var keys = WireGuardCrypto.kdf(2, key: chainKey, input: [])
        WireGuardCrypto.zero(&chainKey)
        let keypair = Keypair(
            sendKey: Secret(keys[0]), receiveKey: Secret(keys[1]), localIndex: state.localIndex,
            remoteIndex: msg.le32(at: WireGuardMessage.responseSender), isInitiator: true, created: now)
        WireGuardCrypto.zero(&keys[0])
        WireGuardCrypto.zero(&keys[1])
        state.wipe()
        return keypair
    }

    /// Fills in mac1 (keyed with the receiver's public key) and mac2 (with a cookie, when
    /// one is held) of a handshake message; returns mac1, which a cookie reply answers to.
    @discardableResult
    static func addMACs(_ msg: inout [UInt8], mac1Key: [UInt8], cookie: [UInt8]?) -> [UInt8] {
        let mac1At = msg.count - 32
        let mac1 = msg.withUnsafeBytes { WireGuardCrypto.mac(mac1Key, UnsafeRawBufferPointer(rebasing: $0[..<mac1At])) }
        msg.put(mac1, at: mac1At)
        if let cookie {
            let mac2 = msg.withUnsafeBytes { WireGuardCrypto.mac(cookie, UnsafeRawBufferPointer(rebasing: $0[..<(mac1At + 16)])) }
            msg.put(mac2, at: mac1At + 16)
        }
        return mac1
    }

    /// Whether mac1 of a handshake message sent to us is right.
    static func checkMAC1(_ msg: [UInt8], identity: WireGuardIdentity) -> Bool {
        let mac1At = msg.count - 32
        let expected = msg.withUnsafeBytes { WireGuardCrypto.mac(identity.mac1Key, UnsafeRawBufferPointer(rebasing: $0[..<mac1At])) }
        return constantTimeEqual(expected, msg.slice(mac1At, 16))
    }

    /// Whether mac2 is right for `cookie`.
    static func checkMAC2(_ msg: [UInt8], cookie: [UInt8]) -> Bool {
        let mac2At = msg.count - 16
        let expected = msg.withUnsafeBytes { WireGuardCrypto.mac(cookie, UnsafeRawBufferPointer(rebasing: $0[..<mac2At])) }
        return constantTimeEqual(expected, msg.slice(mac2At, 16))
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in a.indices { d |= a[i] ^ b[i] }
        return d == 0
    }
}
