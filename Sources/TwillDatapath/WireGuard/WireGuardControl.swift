import CTwillSystem
import Logging
import Synchronization
import TwillAddress
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// WireGuard's control thread beside a ``PacketEngine``: it takes the handshake messages the
/// packet threads queue, answers them, runs every timer of ``WireGuardDevice`` each 100 ms
/// (or at once when a packet thread asks for a handshake), sends what the protocol says to
/// send from the engine's listening socket, and publishes new keys to the engine.
///
/// It outlives engines: a rebuilt engine is attached and gets the keys at once, so a
/// repaired TUN keeps its sessions.
public final class WireGuardControl: Sendable {
    /// Where packet threads queue handshake messages; give it to the engine's configuration
    /// (``engineOptions(mtu:)``).
    public let queue: WireGuardControlQueue
    public let publicKey: [UInt8]
    private let device: Mutex<WireGuardDevice>
    private let engine = Mutex<PacketEngine?>(nil)
    private let running = Atomic<Bool>(false)
    private let thread = Mutex<OSThread?>(nil)
    private let rejectAfter: Duration
    /// The TUN MTU the engine was given (staged packets are padded up to it, not past).
    private let mtu = Atomic<Int>(0)
    private let logger: Logger
    /// Handshake messages at least this many behind: the responder is under load (cookies).
    static let loadBacklog = 32
    /// How long "under load" lasts after the backlog went (wireguard-go: a second).
    static let loadLinger: UInt64 = 1_000_000_000

    public init(
        identity: WireGuardIdentity, presharedKey: Secret? = nil, timers: WireGuardTimers = WireGuardTimers(),
        logger: Logger = Logger(label: "twill.wireguard")
    ) throws(SystemError) {
        queue = try WireGuardControlQueue()
        publicKey = identity.publicKey
        let device = WireGuardDevice(identity: identity, timers: timers, logger: logger)
        device.presharedKey = presharedKey
        self.device = Mutex(device)
        rejectAfter = timers.rejectAfterTime
        self.logger = logger
    }

    /// The options an engine carrying this control's WireGuard needs.
    public func engineOptions(mtu: Int) -> WireGuardEngineOptions {
        self.mtu.store(mtu, ordering: .relaxed)
        return WireGuardEngineOptions(control: queue, rejectAfter: rejectAfter, mtu: mtu)
    }

    /// Starts the control thread (once).
    public func start() throws(SystemError) {
        guard !running.exchange(true, ordering: .sequentiallyConsistent) else { return }
        let spawned = try OSThread.spawn(name: "twill-wg") { [self] in loop() }
        thread.withLock { $0 = spawned }
    }

    /// Makes `engine` the one keys go to and messages leave by (nil: none, while a new one is
    /// built); it gets the current keys at once.
    public func attach(_ engine: PacketEngine?) {
        // Tables are made and published under the device lock, so an older one can never
        // land after a newer one (lock order: device, then the engine's).
        device.withLock { d in
            self.engine.withLock { $0 = engine }
            engine?.update(keys: d.keyTable())
        }
    }

    /// The peers, from the leases: added, changed and removed (their keys wiped).
    public func setPeers(_ configs: [WireGuardPeerConfig]) {
        device.withLock { d in
            d.setPeers(configs)
            if d.keysChanged { engine.withLock { $0 }?.update(keys: d.keyTable()) }
        }
        queue.wakeUp()
    }

    /// Each peer's endpoint, allowed IPs, last handshake and whether it has session keys.
    public func status() -> [WireGuardDevice.PeerStatus] { device.withLock { $0.status() } }

    /// Handshake messages dropped by the protocol, by reason, and those the full queue refused.
    public func drops() -> [String: UInt64] {
        var d = device.withLock { $0.drops }
        if queue.overflows > 0 { d["queue_full"] = queue.overflows }
        return d
    }

    /// Stops the thread and zeroes every key. Stop the engine first: its packet threads
    /// may be using the keys until then. With `exportingSessions`, returns the sessions as
    /// they are once nothing seals any more, for the next run (``WireGuardSessions``).
    @discardableResult
    public func stop(exportingSessions: Bool = false) -> WireGuardSessions? {
        guard running.exchange(false, ordering: .sequentiallyConsistent) else { return nil }
        queue.wakeUp()
        thread.withLock { t in
            t?.join()
            t = nil
        }
        return device.withLock { d -> WireGuardSessions? in
            let sessions = exportingSessions ? d.exportSessions() : nil
            d.setPeers([])
            d.zeroRetired(all: true)
            engine.withLock { $0 = nil }
            return sessions
        }
    }

    /// Hands the previous run's sessions to the device (see ``WireGuardDevice/resume(_:now:)``).
    public func resume(_ sessions: WireGuardSessions) -> Int {
        device.withLock { $0.resume(sessions, now: EngineClock.now()) }
    }

    private func loop() {
        var fds = [pollfd(fd: queue.wake.descriptor, events: Int16(POLLIN), revents: 0)]
        var loadUntil: UInt64 = 0
        while running.load(ordering: .relaxed) {
            _ = Syscall.retryOnInterrupt { poll(&fds, 1, 100) }
            guard running.load(ordering: .relaxed) else { break }
            let (messages, backlog) = queue.drain()
            let now = EngineClock.now()
            if messages.count + backlog >= Self.loadBacklog { loadUntil = now + Self.loadLinger }
            let underLoad = now < loadUntil
            let (out, engine) = device.withLock { d -> ([WireGuardDevice.Outgoing], PacketEngine?) in
                var out: [WireGuardDevice.Outgoing] = []
                for m in messages { out += d.receive(m.bytes, from: m.source, underLoad: underLoad, now: now) }
                out += d.tick(now: now)
                // Packets that waited for this handshake go after it.
                out += d.flushStaged(now: now, mtu: mtu.load(ordering: .relaxed))
                let engine = self.engine.withLock { $0 }
                // Keys before messages (a response sent first could be answered with data
                // before the packet threads know the keypair), published under the device
                // lock so that no older table can overtake this one.
                if d.keysChanged { engine?.update(keys: d.keyTable()) }
                return (out, engine)
            }
            if let engine, let socket = engine.listeningSocket {
                for o in out { send(o, socket) }
            }
            // More waiting: go round again without sleeping.
            if backlog > 0 { queue.wakeUp() }
        }
    }

    private func send(_ o: WireGuardDevice.Outgoing, _ socket: any DatagramSocket) {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = o.to.port.bigEndian
        address.sin_addr.s_addr = o.to.address.rawValue.bigEndian
        var bytes = o.bytes
        let sent = bytes.withUnsafeMutableBytes { b -> Int in
            var piece = iovec(iov_base: b.baseAddress, iov_len: b.count)
            return withUnsafeMutablePointer(to: &address) { a in
                withUnsafeMutablePointer(to: &piece) { p in
                    var header = msghdr()
                    header.msg_name = UnsafeMutableRawPointer(a)
                    header.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
                    header.msg_iov = p
                    header.msg_iovlen = 1
                    var message = twill_mmsghdr(msg_hdr: header, msg_len: 0)
                    return socket.sendMessages(&message, count: 1)
                }
            }
        }
        if sent != 1 {
            logger.debug("wireguard: a handshake message was not sent", metadata: ["to": "\(o.to)", "errno": "\(-sent)"])
        }
    }
}
