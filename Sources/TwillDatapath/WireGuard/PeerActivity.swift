import Synchronization

/// What the packet threads tell the control thread about one peer, without locks: when data
/// and authenticated packets last went each way (engine nanoseconds), that a handshake is
/// wanted (no usable keypair), and that the responder's new keypair was used by the peer.
public final class PeerActivity: Sendable {
    let lastDataSent = Atomic<UInt64>(0)
    let lastDataReceived = Atomic<UInt64>(0)
    let lastAuthenticatedSent = Atomic<UInt64>(0)
    let lastAuthenticatedReceived = Atomic<UInt64>(0)
    let handshakeWanted = Atomic<Bool>(false)
    /// The local index of a keypair the peer sent with for the first time (0: none).
    let confirmedIndex = Atomic<UInt32>(0)

    public init() {}

    @inline(__always) func sentData(at now: UInt64) {
        lastDataSent.store(now, ordering: .relaxed)
        lastAuthenticatedSent.store(now, ordering: .relaxed)
    }

    @inline(__always) func receivedAuthenticated(at now: UInt64, data: Bool) {
        lastAuthenticatedReceived.store(now, ordering: .relaxed)
        if data { lastDataReceived.store(now, ordering: .relaxed) }
    }

    @inline(__always) func wantHandshake() {
        if !handshakeWanted.load(ordering: .relaxed) { handshakeWanted.store(true, ordering: .relaxed) }
    }
}
