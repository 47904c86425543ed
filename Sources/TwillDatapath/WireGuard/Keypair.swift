import Synchronization

/// The session keys one handshake made: a send key with its counter, a receive key with its
/// replay window, the indices both ends use to find it, and when it was made.
///
/// Shared between the control thread (which makes, rotates and wipes keypairs) and the packet
/// threads (which seal and open with them). The send counter is an atomic, so every queue
/// can send with one keypair; the replay window takes a lock, held for a few instructions
/// and contended only when two queues receive the same peer's packets at once.
public final class Keypair: @unchecked Sendable { // keys are written only at init and by wipe(); the rest is synchronised
    let sendKey: Secret
    let receiveKey: Secret
    /// The index the peer sends to (ours) and the one we send to (theirs).
    public let localIndex: UInt32
    public let remoteIndex: UInt32
    public let isInitiator: Bool
    /// When it was made, in the engine's monotonic nanoseconds.
    public let created: UInt64
    private let counter = Atomic<UInt64>(0)
    private let replay = Mutex(ReplayWindow())
    private let wiped = Atomic<Bool>(false)
    /// Set by the first packet thread that receives with a responder's keypair: the
    /// initiator has it, so it may become current (told to the control thread once).
    let confirmed = Atomic<Bool>(false)

    init(sendKey: Secret, receiveKey: Secret, localIndex: UInt32, remoteIndex: UInt32, isInitiator: Bool, created: UInt64) {
        self.sendKey = sendKey
        self.receiveKey = receiveKey
        self.localIndex = localIndex
        self.remoteIndex = remoteIndex
        self.isInitiator = isInitiator
        self.created = created
    }

    /// A keypair carried over from the previous run of the agent: its send counter goes on
    /// from `sent` (never reusing a nonce), its receive window past `highestReceived`.
    convenience init(resuming state: WireGuardSessions.KeypairState, sendKey: Secret, receiveKey: Secret) {
        self.init(
            sendKey: sendKey, receiveKey: receiveKey, localIndex: state.localIndex, remoteIndex: state.remoteIndex,
            isInitiator: state.isInitiator, created: state.created)
        counter.store(state.sent, ordering: .relaxed)
        if let h = state.highestReceived { replay.withLock { $0 = ReplayWindow(resumingAfter: h) } }
        confirmed.store(state.confirmed, ordering: .relaxed)
    }

    /// What the next run needs to go on with this keypair (call once no thread sends with it).
    func state(slot: UInt8) -> WireGuardSessions.KeypairState {
        WireGuardSessions.KeypairState(
            slot: slot, isInitiator: isInitiator, confirmed: confirmed.load(ordering: .relaxed),
            localIndex: localIndex, remoteIndex: remoteIndex, created: created, sent: sentMessages,
            highestReceived: replay.withLock { $0.highestAccepted },
            sendKey: sendKey.array, receiveKey: receiveKey.array)
    }

    /// Reserves the next send counter.
    @inline(__always)
    func nextCounter() -> UInt64 { counter.wrappingAdd(1, ordering: .relaxed).oldValue }

    /// Counters sent so far.
    var sentMessages: UInt64 { counter.load(ordering: .relaxed) }

    /// Records a received counter after its packet authenticated; false for a replay or a
    /// counter outside the window.
    @inline(__always)
    func acceptReceived(_ counter: UInt64) -> Bool {
        replay.withLock { $0.accept(counter, limit: WireGuardTimers.rejectAfterMessages) }
    }

    /// Whether the keys are still there (not wiped by the timers).
    var isLive: Bool { !wiped.load(ordering: .acquiring) }

    /// Takes the keypair out of use: packet threads that check ``isLive`` from now on leave
    /// it alone. Its keys are zeroed by ``zero()`` once no thread can still be in the middle
    /// of a packet with it.
    func retire() { wiped.store(true, ordering: .releasing) }

    /// Zeroes both keys (after ``retire()`` and a grace period, or when no packet thread runs).
    func zero() {
        retire()
        sendKey.wipe()
        receiveKey.wipe()
    }
}

/// WireGuard's timer constants (constants.go), and the lengths a test may shorten.
public struct WireGuardTimers: Sendable, Equatable {
    public static let rekeyAfterMessages: UInt64 = 1 << 60
    public static let rejectAfterMessages: UInt64 = UInt64.max - (1 << 13)
    /// An initiator starts a new handshake once its keypair is this old.
    public var rekeyAfterTime: Duration = .seconds(120)
    /// A keypair this old is never used again.
    public var rejectAfterTime: Duration = .seconds(180)
    /// How long handshake retries go on before the peer's packets are given up.
    public var rekeyAttemptTime: Duration = .seconds(90)
    /// The wait before an unanswered initiation is sent again (plus up to 333 ms of jitter).
    public var rekeyTimeout: Duration = .seconds(5)
    /// After received data with nothing to send back: a keepalive this much later.
    public var keepaliveTimeout: Duration = .seconds(10)
    /// A cookie is used for mac2 this long.
    public var cookieRefreshTime: Duration = .seconds(120)

    public init() {}

    /// For tests: a new keypair every `seconds`, the other timers scaled to keep WireGuard's
    /// order (reject at twice the rekey time, retries and keepalives at a quarter of it).
    public static func shortened(rekeyAfter seconds: Int) -> WireGuardTimers {
        var t = WireGuardTimers()
        t.rekeyAfterTime = .seconds(seconds)
        t.rejectAfterTime = .seconds(seconds * 2)
        t.rekeyTimeout = .milliseconds(seconds * 250)
        t.keepaliveTimeout = .milliseconds(seconds * 250)
        t.rekeyAttemptTime = .seconds(seconds * 2)
        return t
    }

    /// Retries allowed within ``rekeyAttemptTime``.
    var maxHandshakeAttempts: Int { Int(rekeyAttemptTime / rekeyTimeout) }
    /// Keys are zeroed when no new keypair came for this long.
    var zeroKeysAfter: Duration { rejectAfterTime * 3 }
}

extension Duration {
    var nanoseconds: UInt64 {
        let (s, a) = components
        return UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, a / 1_000_000_000))
    }
}
