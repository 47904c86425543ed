/// WireGuard sessions carried from one run of the agent to the next (under systemd, in a
/// memory file kept in its descriptor store): a restart then needs no handshake, and the
/// datagrams peers sealed while the agent restarted, which waited in the kept socket, open.
///
/// Written only at a clean stop, after every thread that seals has ended, so each send
/// counter is exactly the number of nonces used: the next run goes on from there and never
/// reuses one. Read at most once (``MemoryFile/consume(_:)`` empties the file first), and only
/// by the same identity within the keypairs' lifetime (RejectAfterTime). Everything else in
/// the protocol (handshake state, cookies, timers) starts fresh.
public struct WireGuardSessions: Sendable, Equatable {
    /// One keypair: slot 0 previous, 1 current, 2 next.
    public struct KeypairState: Sendable, Equatable {
        var slot: UInt8
        var isInitiator: Bool
        var confirmed: Bool
        var localIndex: UInt32
        var remoteIndex: UInt32
        /// When it was made, in the engine's monotonic nanoseconds (one clock for the boot).
        var created: UInt64
        /// Nonces used.
        var sent: UInt64
        var highestReceived: UInt64?
        var sendKey: [UInt8]
        var receiveKey: [UInt8]
    }

    public struct PeerState: Sendable, Equatable {
        var publicKey: [UInt8]
        var lastHandshakeUnix: Int64?
        /// The newest initiation's TAI64N timestamp (an older one is a replay).
        var lastTimestamp: [UInt8]?
        var keypairs: [KeypairState]
    }

    /// The identity the sessions belong to: another key file's sessions are never used.
    var publicKey: [UInt8]
    var peers: [PeerState]

    static let magic: [UInt8] = Array("TWGS1".utf8)

    /// The bytes to keep.
    var encoded: [UInt8] {
        var out = Self.magic + publicKey
        out.putLE32(UInt32(peers.count))
        for p in peers {
            out += p.publicKey
            out.putLE64(UInt64(bitPattern: p.lastHandshakeUnix ?? -1))
            out.append(p.lastTimestamp == nil ? 0 : 1)
            out += p.lastTimestamp ?? []
            out.append(UInt8(p.keypairs.count))
            for k in p.keypairs {
                out += [k.slot, k.isInitiator ? 1 : 0, k.confirmed ? 1 : 0, k.highestReceived == nil ? 0 : 1]
                out.putLE32(k.localIndex)
                out.putLE32(k.remoteIndex)
                out.putLE64(k.created)
                out.putLE64(k.sent)
                out.putLE64(k.highestReceived ?? 0)
                out += k.sendKey + k.receiveKey
            }
        }
        return out
    }

    /// Parses what ``encoded`` wrote; nil for anything else (truncated, another version).
    init?(decoding bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard r.take(Self.magic.count) == Self.magic, let key = r.take(32), let count = r.le32(), count <= 1 << 20 else { return nil }
        var peers: [PeerState] = []
        for _ in 0..<count {
            guard let peerKey = r.take(32), let handshake = r.le64(), let hasTimestamp = r.byte() else { return nil }
            var timestamp: [UInt8]?
            if hasTimestamp == 1 {
                guard let t = r.take(12) else { return nil }
                timestamp = t
            }
            guard let n = r.byte(), n <= 3 else { return nil }
            var keypairs: [KeypairState] = []
            for _ in 0..<n {
                guard let flags = r.take(4), flags[0] <= 2, let local = r.le32(), let remote = r.le32(), let created = r.le64(),
                    let sent = r.le64(), let highest = r.le64(), let sendKey = r.take(32), let receiveKey = r.take(32)
                else { return nil }
                keypairs.append(
                    KeypairState(
                        slot: flags[0], isInitiator: flags[1] == 1, confirmed: flags[2] == 1, localIndex: local,
                        remoteIndex: remote, created: created, sent: sent, highestReceived: flags[3] == 1 ? highest : nil,
                        sendKey: sendKey, receiveKey: receiveKey))
            }
            let unix = Int64(bitPattern: handshake)
            peers.append(
                PeerState(publicKey: peerKey, lastHandshakeUnix: unix < 0 ? nil : unix, lastTimestamp: timestamp, keypairs: keypairs))
        }
        guard r.atEnd else { return nil }
        self.publicKey = key
        self.peers = peers
    }

    init(publicKey: [UInt8], peers: [PeerState]) {
        self.publicKey = publicKey
        self.peers = peers
    }
}

/// Reads little-endian fields off a byte array, nil past its end.
private struct ByteReader {
    let bytes: [UInt8]
    var offset = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    var atEnd: Bool { offset == bytes.count }
    mutating func take(_ n: Int) -> [UInt8]? {
        guard n >= 0, bytes.count - offset >= n else { return nil }
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }
    mutating func byte() -> UInt8? { take(1)?[0] }
    mutating func le32() -> UInt32? { take(4).map { $0.reversed().reduce(0) { $0 << 8 | UInt32($1) } } }
    mutating func le64() -> UInt64? { take(8).map { $0.reversed().reduce(0) { $0 << 8 | UInt64($1) } } }
}

extension [UInt8] {
    fileprivate mutating func putLE32(_ v: UInt32) { for i in 0..<4 { append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    fileprivate mutating func putLE64(_ v: UInt64) { for i in 0..<8 { append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
}
