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

    /// Packets that found no session keys, kept (oldest dropped past ``maxStaged``) until a
    /// handshake completes and the control thread seals and sends them: the first ping or
    /// SYN is not lost. Touched only while a peer has no keys.
    private let staged = Mutex<[[UInt8]]>([])
    /// As wireguard-go's MaxStagedPackets.
    static let maxStaged = 128

    public init() {}

    /// Keeps a copy of a packet for when keys exist; false when an older one was dropped for it.
    func stage(_ packet: UnsafeRawBufferPointer) -> Bool {
        staged.withLock { queue in
            let dropped = queue.count >= Self.maxStaged
            if dropped { queue.removeFirst() }
            queue.append(Array(packet))
            return !dropped
        }
    }

    /// The staged packets, oldest first; the queue is left empty.
    func takeStaged() -> [[UInt8]] {
        staged.withLock { q in
            defer { q = [] }
            return q
        }
    }

    var hasStaged: Bool { staged.withLock { !$0.isEmpty } }

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
