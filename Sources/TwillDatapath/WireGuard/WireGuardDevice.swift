import Logging
import TwillAddress

#if canImport(Glibc)
import Glibc
#endif

/// A peer's UDP endpoint.
public struct WireGuardEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var port: UInt16
    public init(address: IPv4Address, port: UInt16) {
        self.address = address
        self.port = port
    }
    public var description: String { "\(address):\(port)" }
}

/// One peer as the backend configures it from its lease.
public struct WireGuardPeerConfig: Sendable, Equatable {
    public var publicKey: [UInt8]
    public var endpoint: WireGuardEndpoint
    /// Its AllowedIPs: the peer's lease subnet.
    public var allowedIPs: IPv4Network
    public var persistentKeepalive: Duration?

    public init(publicKey: [UInt8], endpoint: WireGuardEndpoint, allowedIPs: IPv4Network, persistentKeepalive: Duration? = nil) {
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.allowedIPs = allowedIPs
        self.persistentKeepalive = persistentKeepalive
    }
}

/// The keys the packet threads use, rebuilt whole whenever a keypair changes: per peer (by
/// its AllowedIPs subnet) the keypair to send with and the activity to report to; per local
/// index the keypair to open with and its peer.
public final class WireGuardKeyTable: Sendable {
    public struct Receive: Sendable {
        let keypair: Keypair
        let subnet: IPv4Network
        let activity: PeerActivity
    }
    public struct Send: Sendable {
        let keypair: Keypair?
        let activity: PeerActivity
        /// The peer's endpoint port (its lease's `Port`).
        let port: UInt16
    }
    let send: [IPv4Network: Send]
    let receive: [UInt32: Receive]

    init(send: [IPv4Network: Send], receive: [UInt32: Receive]) {
        self.send = send
        self.receive = receive
    }

    static let empty = WireGuardKeyTable(send: [:], receive: [:])
}

/// The WireGuard protocol for one local identity and its peers: handshakes (initiator and
/// responder, Noise IKpsk2), cookies under load, keypair rotation and every timer. It does no
/// I/O: it takes handshake messages and the packet threads' activity, and returns the
/// datagrams to send; the owner (one thread) sends them and publishes ``keyTable``.
///
/// Time is the engine's monotonic nanoseconds, given to every call, so tests run the timers
/// on a clock of their own.
public final class WireGuardDevice {
    public let identity: WireGuardIdentity
    let timers: WireGuardTimers
    let logger: Logger

    final class Peer {
        var config: WireGuardPeerConfig
        let statics: PeerStatic
        let activity = PeerActivity()
        var handshake: HandshakeState?
        var lastInitiationSent: UInt64?
        var handshakeAttempts = 0
        var retransmitAt: UInt64?
        var lastTimestamp: [UInt8]?
        var lastInitiationConsumed: UInt64?
        var cookie: (value: [UInt8], at: UInt64)?
        var lastSentMAC1: [UInt8]?
        var previous: Keypair?
        var current: Keypair?
        var next: Keypair?
        /// Wall-clock Unix seconds of the last completed handshake, for operators.
        var lastHandshakeUnix: Int64?
        var zeroKeysAt: UInt64?
        var newHandshakeAt: UInt64?
        var newHandshakeArmed: UInt64 = 0
        var keepaliveAt: UInt64?
        var keepaliveArmed: UInt64 = 0
        var seenDataReceived: UInt64 = 0

        init(config: WireGuardPeerConfig, statics: PeerStatic) {
            self.config = config
            self.statics = statics
        }

        var keypairs: [Keypair] { [previous, current, next].compactMap { $0 } }
    }

    private var peers: [[UInt8]: Peer] = [:]
    /// Sessions of the previous run, by peer key, waiting for their peer to be set (and
    /// until when they may be).
    private var resumable: (peers: [[UInt8]: WireGuardSessions.PeerState], until: UInt64) = ([:], 0)
    /// Local index -> the peer's public key (handshakes and keypairs).
    private var indices: [UInt32: [UInt8]] = [:]
    private var cookieSecret = Secret.random(count: 32)
    private var cookieSecretAt: UInt64 = 0
    /// Set when a keypair changed: the owner publishes ``keyTable`` again.
    public private(set) var keysChanged = true
    private var generator = SystemRandomNumberGenerator()
    /// Retired keypairs not zeroed yet, and when they were retired.
    private var retiring: [(Keypair, UInt64)] = []
    static let zeroGrace: UInt64 = 1_000_000_000
    /// The latest time a call was given (setPeers has none of its own).
    private var clock: UInt64 = 0
    /// Counts what was dropped, by reason, for /metrics.
    public private(set) var drops: [String: UInt64] = [:]

    public init(identity: WireGuardIdentity, timers: WireGuardTimers = WireGuardTimers(), logger: Logger = Logger(label: "twill.wireguard"))
    {
        self.identity = identity
        self.timers = timers
        self.logger = logger
    }

    /// A datagram to send.
    public struct Outgoing: Equatable, Sendable {
        public var bytes: [UInt8]
        public var to: WireGuardEndpoint
    }

    // MARK: Peers

    /// Makes the peer set this list: new peers added, gone ones removed (their keys wiped),
    /// changed ones updated (a new key is a new peer).
    public func setPeers(_ configs: [WireGuardPeerConfig]) {
        var wanted: [[UInt8]: WireGuardPeerConfig] = [:]
        for c in configs where c.publicKey.count == 32 && c.publicKey != identity.publicKey { wanted[c.publicKey] = c }
        for (key, peer) in peers where wanted[key] == nil { remove(peer) }
        for (key, config) in wanted {
            if let peer = peers[key] {
                if peer.config.allowedIPs != config.allowedIPs || peer.config.endpoint != config.endpoint { keysChanged = true }
                peer.config = config
            } else {
                let peer = Peer(config: config, statics: PeerStatic(publicKey: key, presharedKey: presharedKey, identity: identity))
                peers[key] = peer
                resume(peer)
                keysChanged = true
            }
        }
    }

    // MARK: Sessions across a restart

    /// Every peer's keypairs, for the next run (``WireGuardSessions``). Call only once no
    /// thread seals any more: the send counters must be final.
    public func exportSessions() -> WireGuardSessions {
        WireGuardSessions(
            publicKey: identity.publicKey,
            peers: peers.values.map { p in
                let slots: [(UInt8, Keypair?)] = [(0, p.previous), (1, p.current), (2, p.next)]
                return WireGuardSessions.PeerState(
                    publicKey: p.statics.publicKey, lastHandshakeUnix: p.lastHandshakeUnix, lastTimestamp: p.lastTimestamp,
                    keypairs: slots.compactMap { slot, k in k.flatMap { $0.isLive ? $0.state(slot: slot) : nil } })
            })
    }

    /// Takes the previous run's sessions: each goes to its peer when that peer is set (now,
    /// or within RejectAfterTime). Another identity's sessions are ignored; returns how many
    /// peers' sessions were accepted (0 for another identity's).
    @discardableResult
    public func resume(_ sessions: WireGuardSessions, now: UInt64) -> Int {
        guard sessions.publicKey == identity.publicKey else { return 0 }
        clock = max(clock, now)
        resumable = (
            Dictionary(sessions.peers.map { ($0.publicKey, $0) }, uniquingKeysWith: { a, _ in a }),
            now + timers.rejectAfterTime.nanoseconds
        )
        for peer in peers.values { resume(peer) }
        return sessions.peers.count
    }

    /// Gives `peer` its keypairs from the previous run, if any are still young enough.
    private func resume(_ peer: Peer) {
        guard let state = resumable.peers.removeValue(forKey: peer.statics.publicKey), clock < resumable.until else { return }
        for k in state.keypairs where clock &- k.created < timers.rejectAfterTime.nanoseconds && indices[k.localIndex] == nil {
            guard k.sendKey.count == 32, k.receiveKey.count == 32 else { continue }
            let keypair = Keypair(resuming: k, sendKey: Secret(k.sendKey), receiveKey: Secret(k.receiveKey))
            switch k.slot {
            case 0: peer.previous = keypair
            case 1: peer.current = keypair
            default: peer.next = keypair
            }
            indices[k.localIndex] = peer.statics.publicKey
        }
        peer.lastHandshakeUnix = state.lastHandshakeUnix
        peer.lastTimestamp = state.lastTimestamp
        if peer.current != nil { peer.zeroKeysAt = clock + timers.zeroKeysAfter.nanoseconds }
        keysChanged = true
        logger.debug("wireguard session resumed", metadata: ["peer": "\(peer.config.allowedIPs)", "keypairs": "\(peer.keypairs.count)"])
    }

    /// The PSK set on every peer (flannel's `PSK`); applies to peers added after it is set.
    public var presharedKey: Secret?

    private func remove(_ peer: Peer) {
        for k in peer.keypairs { retire(k) }
        if let h = peer.handshake {
            indices[h.localIndex] = nil
            h.wipe()
        }
        peers[peer.statics.publicKey] = nil
        keysChanged = true
    }

    /// The activity object of the peer with `publicKey` (for the engine's snapshot).
    func activity(of publicKey: [UInt8]) -> PeerActivity? { peers[publicKey]?.activity }

    /// The table the packet threads use now; clears ``keysChanged``.
    public func keyTable() -> WireGuardKeyTable {
        keysChanged = false
        var send: [IPv4Network: WireGuardKeyTable.Send] = [:]
        var receive: [UInt32: WireGuardKeyTable.Receive] = [:]
        for peer in peers.values {
            send[peer.config.allowedIPs] = .init(keypair: peer.current, activity: peer.activity, port: peer.config.endpoint.port)
            for k in peer.keypairs where k.isLive {
                receive[k.localIndex] = .init(keypair: k, subnet: peer.config.allowedIPs, activity: peer.activity)
            }
        }
        return WireGuardKeyTable(send: send, receive: receive)
    }

    // MARK: Messages

    /// Handles a handshake message (types 1-3) from `source`; `underLoad` makes initiations
    /// and responses without a valid mac2 get a cookie reply instead of an answer.
    public func receive(_ msg: [UInt8], from source: WireGuardEndpoint, underLoad: Bool, now: UInt64) -> [Outgoing] {
        clock = max(clock, now)
        guard let type = msg.withUnsafeBytes({ WireGuardMessage.type(of: $0) }), type != WireGuardMessage.transport else {
            return drop("malformed")
        }
        if type == WireGuardMessage.cookieReply { return consumeCookieReply(msg, now: now) }
        guard Noise.checkMAC1(msg, identity: identity) else { return drop("bad_mac1") }
        if underLoad {
            let cookie = makeCookie(for: source, now: now)
            guard Noise.checkMAC2(msg, cookie: cookie) else { return [cookieReply(to: msg, cookie: cookie, source: source)] }
        }
        return type == WireGuardMessage.initiation ? consumeInitiation(msg, from: source, now: now) : consumeResponse(msg, now: now)
    }

    private func drop(_ reason: String) -> [Outgoing] {
        drops[reason, default: 0] += 1
        return []
    }

    private func consumeInitiation(_ msg: [UInt8], from source: WireGuardEndpoint, now: UInt64) -> [Outgoing] {
        guard let (consumed, statics) = Noise.consumeInitiation(msg, identity: identity, lookup: { [peers] in peers[$0]?.statics }),
            let peer = peers[statics.publicKey]
        else { return drop("bad_initiation") }
        // A replayed initiation, or a flood of them, is ignored.
        if let last = peer.lastTimestamp, !TAI64N.isAfter(consumed.timestamp, last) { return drop("replayed_initiation") }
        if let at = peer.lastInitiationConsumed, now &- at < 20_000_000 { return drop("initiation_flood") }
        peer.lastTimestamp = consumed.timestamp
        peer.lastInitiationConsumed = now
        let index = newIndex(for: peer)
        guard let (response, keypair) = Noise.createResponse(to: consumed.state, peer: statics, localIndex: index, now: now) else {
            indices[index] = nil
            return drop("bad_initiation")
        }
        var out = response
        peer.lastSentMAC1 = Noise.addMACs(&out, mac1Key: statics.mac1Key, cookie: usableCookie(peer, now: now))
        // The responder's keypair waits as `next` until the initiator sends with it.
        if let old = peer.next { retire(old) }
        peer.next = keypair
        if let old = peer.previous { retire(old) }
        peer.previous = nil
        peer.zeroKeysAt = now + timers.zeroKeysAfter.nanoseconds
        peer.activity.lastAuthenticatedSent.store(now, ordering: .relaxed)
        keysChanged = true
        logger.debug("wireguard handshake answered", metadata: ["peer": "\(peer.config.allowedIPs)", "endpoint": "\(source)"])
        return [Outgoing(bytes: out, to: source)]
    }

    private func consumeResponse(_ msg: [UInt8], now: UInt64) -> [Outgoing] {
        let receiver = msg.le32(at: WireGuardMessage.responseReceiver)
        guard let key = indices[receiver], let peer = peers[key], let state = peer.handshake, state.localIndex == receiver,
            let keypair = Noise.consumeResponse(msg, state: state, identity: identity, peer: peer.statics, now: now)
        else {
            return drop("bad_response")
        }
        peer.handshake = nil
        // The initiator uses its new keypair at once.
        if let next = peer.next {
            peer.next = nil
            if let p = peer.previous { retire(p) }
            peer.previous = next
            if let c = peer.current { retire(c) }
        } else {
            if let p = peer.previous { retire(p) }
            peer.previous = peer.current
        }
        peer.current = keypair
        completeHandshake(peer, now: now)
        keysChanged = true
        logger.debug("wireguard handshake completed", metadata: ["peer": "\(peer.config.allowedIPs)"])
        // A keepalive confirms the keypair to the responder.
        return keepalive(peer, now: now).map { [$0] } ?? []
    }

    private func completeHandshake(_ peer: Peer, now: UInt64) {
        peer.retransmitAt = nil
        peer.handshakeAttempts = 0
        peer.zeroKeysAt = now + timers.zeroKeysAfter.nanoseconds
        peer.lastHandshakeUnix = Self.unixNow()
    }

    private func consumeCookieReply(_ msg: [UInt8], now: UInt64) -> [Outgoing] {
        let receiver = msg.le32(at: WireGuardMessage.cookieReceiver)
        guard let key = indices[receiver], let peer = peers[key], let mac1 = peer.lastSentMAC1,
            let cookie = WireGuardCrypto.xopen(
                key: peer.statics.cookieKey, nonce: msg.slice(WireGuardMessage.cookieNonce, 24),
                sealed: msg.slice(WireGuardMessage.cookieEncrypted, 32), aad: mac1)
        else {
            return drop("bad_cookie_reply")
        }
        peer.cookie = (cookie, now)
        return []
    }

    private func makeCookie(for source: WireGuardEndpoint, now: UInt64) -> [UInt8] {
        if now &- cookieSecretAt > timers.cookieRefreshTime.nanoseconds || cookieSecretAt == 0 {
            cookieSecret = Secret.random(count: 32)
            cookieSecretAt = now
        }
        let a = source.address.rawValue
        let bytes: [UInt8] = [
            UInt8(a >> 24), UInt8(a >> 16 & 0xff), UInt8(a >> 8 & 0xff), UInt8(a & 0xff),
            UInt8(source.port >> 8), UInt8(source.port & 0xff),
        ]
        return bytes.withUnsafeBytes { WireGuardCrypto.mac(cookieSecret.array, $0) }
    }

    private func cookieReply(to msg: [UInt8], cookie: [UInt8], source: WireGuardEndpoint) -> Outgoing {
        var reply = [UInt8](repeating: 0, count: WireGuardMessage.cookieReplySize)
        reply[0] = WireGuardMessage.cookieReply
        reply.putLE32(msg.le32(at: 4), at: WireGuardMessage.cookieReceiver)
        let nonce = Secret.random(count: 24).array
        reply.put(nonce, at: WireGuardMessage.cookieNonce)
        let mac1 = msg.slice(msg.count - 32, 16)
        reply.put(
            WireGuardCrypto.xseal(key: identity.cookieKey, nonce: nonce, plaintext: cookie, aad: mac1), at: WireGuardMessage.cookieEncrypted
        )
        drops["under_load_cookie_sent", default: 0] += 1
        return Outgoing(bytes: reply, to: source)
    }

    private func usableCookie(_ peer: Peer, now: UInt64) -> [UInt8]? {
        guard let c = peer.cookie, now &- c.at < timers.cookieRefreshTime.nanoseconds else { return nil }
        return c.value
    }

    private func newIndex(for peer: Peer) -> UInt32 {
        while true {
            let i = UInt32.random(in: 1...UInt32.max, using: &generator)
            if indices[i] == nil {
                indices[i] = peer.statics.publicKey
                return i
            }
        }
    }

    /// Takes a keypair out of use now and zeroes it ``zeroGrace`` later: a packet thread
    /// that read it from its snapshot just before may still be sealing or opening a batch.
    private func retire(_ keypair: Keypair) {
        keypair.retire()
        indices[keypair.localIndex] = nil
        retiring.append((keypair, clock))
    }

    /// Zeroes the retired keypairs whose grace period is over (all of them with `all`, once
    /// no packet thread runs).
    public func zeroRetired(all: Bool = false) {
        retiring.removeAll { k, at in
            guard all || clock &- at >= Self.zeroGrace else { return false }
            k.zero()
            return true
        }
    }

    // MARK: Handshake initiation

    /// A new initiation to `peer` (a new ephemeral key and index each time).
    private func initiate(_ peer: Peer, now: UInt64) -> Outgoing? {
        if let h = peer.handshake {
            indices[h.localIndex] = nil
            h.wipe()
        }
        let index = newIndex(for: peer)
        guard let (msg, state) = Noise.createInitiation(identity: identity, peer: peer.statics, localIndex: index, timestamp: TAI64N.now())
        else {
            indices[index] = nil
            return nil
        }
        var out = msg
        peer.lastSentMAC1 = Noise.addMACs(&out, mac1Key: peer.statics.mac1Key, cookie: usableCookie(peer, now: now))
        peer.handshake = state
        peer.lastInitiationSent = now
        let jitter = UInt64.random(in: 0...333_000_000, using: &generator)
        peer.retransmitAt = now + timers.rekeyTimeout.nanoseconds + jitter
        peer.activity.lastAuthenticatedSent.store(now, ordering: .relaxed)
        logger.debug(
            "wireguard handshake initiated", metadata: ["peer": "\(peer.config.allowedIPs)", "attempt": "\(peer.handshakeAttempts + 1)"])
        return Outgoing(bytes: out, to: peer.config.endpoint)
    }

    /// Starts a handshake unless one went out less than RekeyTimeout ago.
    private func initiateIfAllowed(_ peer: Peer, now: UInt64) -> Outgoing? {
        if let last = peer.lastInitiationSent, now &- last < timers.rekeyTimeout.nanoseconds { return nil }
        peer.handshakeAttempts = 0
        return initiate(peer, now: now)
    }

    /// A keepalive (an empty transport message) with the current keypair, if there is one.
    private func keepalive(_ peer: Peer, now: UInt64) -> Outgoing? {
        guard let k = peer.current, k.isLive, now &- k.created < timers.rejectAfterTime.nanoseconds else { return nil }
        var msg = [UInt8](repeating: 0, count: WireGuardMessage.keepaliveSize)
        let counter = k.nextCounter()
        guard TransportCrypto.seal(keypair: k, counter: counter, message: &msg, plaintextLength: 0) else { return nil }
        peer.activity.lastAuthenticatedSent.store(now, ordering: .relaxed)
        return Outgoing(bytes: msg, to: peer.config.endpoint)
    }

    /// Seals and returns the packets staged for peers that have a usable keypair now, padded
    /// as the packet threads pad (not past `mtu`).
    public func flushStaged(now: UInt64, mtu: Int) -> [Outgoing] {
        var out: [Outgoing] = []
        for peer in peers.values where peer.activity.hasStaged {
            guard let k = peer.current, k.isLive, now &- k.created < timers.rejectAfterTime.nanoseconds else { continue }
            for packet in peer.activity.takeStaged() {
                let padded = WireGuardMessage.paddedLength(packet.count, mtu: mtu)
                var msg = [UInt8](repeating: 0, count: WireGuardMessage.keepaliveSize + padded)
                msg.replaceSubrange(
                    WireGuardMessage.transportHeaderSize..<(WireGuardMessage.transportHeaderSize + packet.count), with: packet)
                guard TransportCrypto.seal(keypair: k, counter: k.nextCounter(), message: &msg, plaintextLength: padded) else { continue }
                out.append(Outgoing(bytes: msg, to: peer.config.endpoint))
            }
            peer.activity.sentData(at: now)
        }
        return out
    }

    // MARK: Timers

    /// Runs every timer due at `now` and acts on what the packet threads reported; call it
    /// often (every 100 ms or so, and whenever a thread asks for a handshake).
    public func tick(now: UInt64) -> [Outgoing] {
        clock = max(clock, now)
        zeroRetired()
        var out: [Outgoing] = []
        for peer in peers.values { out += tick(peer, now: now) }
        return out
    }

    private func tick(_ peer: Peer, now: UInt64) -> [Outgoing] {
        var out: [Outgoing] = []
        let a = peer.activity
        let dataSent = a.lastDataSent.load(ordering: .relaxed)
        let dataReceived = a.lastDataReceived.load(ordering: .relaxed)
        let authSent = a.lastAuthenticatedSent.load(ordering: .relaxed)
        let authReceived = a.lastAuthenticatedReceived.load(ordering: .relaxed)

        // The responder's keypair was used by the initiator: it becomes current.
        let confirmed = a.confirmedIndex.exchange(0, ordering: .relaxed)
        if confirmed != 0, let next = peer.next, next.localIndex == confirmed {
            if let p = peer.previous { retire(p) }
            peer.previous = peer.current
            peer.current = next
            peer.next = nil
            completeHandshake(peer, now: now)
            keysChanged = true
        }
        // Keypairs past RejectAfterTime are of no use any more.
        for k in peer.keypairs where now &- k.created >= timers.rejectAfterTime.nanoseconds {
            if peer.previous === k { peer.previous = nil }
            if peer.current === k { peer.current = nil }
            if peer.next === k { peer.next = nil }
            retire(k)
            keysChanged = true
        }

        // A packet thread had data for the peer and no keypair.
        if a.handshakeWanted.exchange(false, ordering: .relaxed), peer.handshake == nil || peer.retransmitAt == nil {
            if let o = initiateIfAllowed(peer, now: now) { out.append(o) }
        }
        // The initiator rekeys an aging keypair while it sends, and before it is rejected
        // while it receives.
        if let c = peer.current, c.isInitiator, peer.handshake == nil {
            let age = now &- c.created
            let sending =
                dataSent > c.created && (age >= timers.rekeyAfterTime.nanoseconds || c.sentMessages >= WireGuardTimers.rekeyAfterMessages)
            let receiving =
                authReceived > c.created
                && age >= (timers.rejectAfterTime - timers.keepaliveTimeout - timers.rekeyTimeout).nanoseconds
            if sending || receiving, let o = initiateIfAllowed(peer, now: now) { out.append(o) }
        }
        // Unanswered initiation: again, up to the attempt limit.
        if let at = peer.retransmitAt, now >= at {
            if peer.handshakeAttempts + 1 >= timers.maxHandshakeAttempts {
                logger.notice(
                    "wireguard handshake gave up after \(peer.handshakeAttempts + 1) attempts",
                    metadata: ["peer": "\(peer.config.allowedIPs)", "endpoint": "\(peer.config.endpoint)"])
                peer.retransmitAt = nil
                if let h = peer.handshake {
                    indices[h.localIndex] = nil
                    h.wipe()
                }
                peer.handshake = nil
                if peer.zeroKeysAt == nil { peer.zeroKeysAt = now + timers.zeroKeysAfter.nanoseconds }
            } else {
                peer.handshakeAttempts += 1
                let attempts = peer.handshakeAttempts
                if let o = initiate(peer, now: now) { out.append(o) }
                peer.handshakeAttempts = attempts
            }
        }
        // Data sent and nothing heard back for KeepaliveTimeout + RekeyTimeout: a new handshake.
        if dataSent > authReceived {
            if peer.newHandshakeAt == nil {
                peer.newHandshakeAt = dataSent + (timers.keepaliveTimeout + timers.rekeyTimeout).nanoseconds
                peer.newHandshakeArmed = dataSent
            }
        } else {
            peer.newHandshakeAt = nil
        }
        if let at = peer.newHandshakeAt, now >= at {
            peer.newHandshakeAt = nil
            if peer.handshake == nil || peer.retransmitAt == nil, let o = initiateIfAllowed(peer, now: now) { out.append(o) }
        }
        // Data received and nothing sent back within KeepaliveTimeout: a keepalive.
        if dataReceived > peer.seenDataReceived {
            peer.seenDataReceived = dataReceived
            if peer.keepaliveAt == nil {
                peer.keepaliveAt = dataReceived + timers.keepaliveTimeout.nanoseconds
                peer.keepaliveArmed = dataReceived
            }
        }
        if let at = peer.keepaliveAt {
            if authSent > peer.keepaliveArmed {
                peer.keepaliveAt = nil
            } else if now >= at {
                peer.keepaliveAt = nil
                if let o = keepalive(peer, now: now) { out.append(o) }
            }
        }
        // PersistentKeepalive: something every interval, whatever the traffic.
        if let interval = peer.config.persistentKeepalive, interval > .zero,
            now &- max(a.lastAuthenticatedSent.load(ordering: .relaxed), authReceived) >= interval.nanoseconds
        {
            if let o = keepalive(peer, now: now) {
                out.append(o)
            } else if peer.handshake == nil, let o = initiateIfAllowed(peer, now: now) {
                out.append(o)
            }
        }
        // No new keypair for 3 x RejectAfterTime: every key of this peer is zeroed.
        if let at = peer.zeroKeysAt, now >= at {
            peer.zeroKeysAt = nil
            for k in peer.keypairs { retire(k) }
            peer.previous = nil
            peer.current = nil
            peer.next = nil
            if let h = peer.handshake {
                indices[h.localIndex] = nil
                h.wipe()
            }
            peer.handshake = nil
            keysChanged = true
            logger.debug("wireguard keys zeroed", metadata: ["peer": "\(peer.config.allowedIPs)"])
        }
        return out
    }

    // MARK: Status

    public struct PeerStatus: Sendable, Equatable {
        public var publicKey: [UInt8]
        public var endpoint: WireGuardEndpoint
        public var allowedIPs: IPv4Network
        public var lastHandshakeUnix: Int64?
        public var hasSessionKeys: Bool
    }

    public func status() -> [PeerStatus] {
        peers.values.map { p in
            PeerStatus(
                publicKey: p.statics.publicKey, endpoint: p.config.endpoint, allowedIPs: p.config.allowedIPs,
                lastHandshakeUnix: p.lastHandshakeUnix, hasSessionKeys: p.current != nil)
        }.sorted { $0.allowedIPs.address < $1.allowedIPs.address }
    }

    static func unixNow() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec)
    }
}
