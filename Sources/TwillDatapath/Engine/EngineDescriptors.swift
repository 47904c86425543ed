import CTwillSystem
import Synchronization
import TwillAddress
import TwillNetlink
import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// The TUN queues and listening sockets of a backend's packet engine, across engine rebuilds
/// and restarts of the agent: what makes a restart of the udp and wireguard backends lose
/// nothing.
///
/// - The TUN is persistent: it keeps its addresses and routes while no agent runs.
/// - Under systemd every queue and listening socket is also kept in the service manager's
///   descriptor store (``DescriptorKeeper``), so packets for the overlay queue in the TUN and
///   datagrams from peers in the socket while the agent restarts; the next agent takes them
///   over and reads what waited.
/// - A rebuilt engine (a new subnet, a repair) takes over its predecessor's descriptors the
///   same way, so a rebuild loses nothing either.
///
/// Whatever is taken over is checked first (``TUNDevice/init(adopting:name:offloads:multiQueue:)``,
/// ``UDPSocket/init(adopting:address:address6:port:)``); what does not match the
/// configuration is let go (and forgotten by the store) and opened afresh.
///
/// Names in the store: `<device>.tun.<i>` and `<device>.udp.<i>` for queue `i`.
public final class EngineDescriptors: Sendable {
    let device: String
    let keeper: any DescriptorKeeper
    private let netlink: any KernelRouting
    /// Descriptors a stopped engine handed back, for the next one (raw, by queue).
    private let spare = Mutex<(tun: [Int32], sockets: [Int32])>(([], []))
    /// The names kept in the store now.
    private let kept = Mutex<Set<String>>([])

    /// Bounds the names looked for in the store: more queues than this are never opened.
    static let maxQueues = 256

    init(device: String, keeper: any DescriptorKeeper, netlink: any KernelRouting) {
        self.device = device
        self.keeper = keeper
        self.netlink = netlink
    }

    func tunName(_ i: Int) -> String { "\(device).tun.\(i)" }
    func socketName(_ i: Int) -> String { "\(device).udp.\(i)" }

    /// An engine for `configuration` (not started), on the descriptors of the previous engine
    /// or run where they match, on new ones otherwise. The notes say what was taken over and
    /// what had to be made anew, and why, for the log.
    func open(
        tunOffloads: Bool, address: IPv4Address, address6: IPv6Address?,
        configuration: EngineConfiguration
    ) throws(SystemError) -> (engine: PacketEngine, notes: [String]) {
        var notes: [String] = []
        let previous = takePrevious()
        var tuns: [TUNDevice]
        do {
            tuns = try openTUN(previous.tun, count: configuration.queues, offloads: tunOffloads, notes: &notes)
        } catch {
            // The sockets wait for the next try: a new one beside them in their SO_REUSEPORT
            // group would get a share of the datagrams nobody reads.
            spare.withLock { held in held.sockets += previous.sockets }
            throw error
        }
        // Previous sockets not taken over (yet): closed if anything below fails.
        var pendingSockets = Set(previous.sockets.indices)
        var sockets: [UDPSocket] = []
        var senders: [UDPSocket] = []
        do throws(SystemError) {
            let wantedAddress6 = configuration.ipv6Underlay ? address6 : nil
            if configuration.ipv6Underlay, address6 == nil {
                throw SystemError("an IPv6 underlay needs an IPv6 address to bind", errno: EINVAL)
            }
            var port = configuration.peerPort
            var adopted = 0
            for i in 0..<tuns.count {
                if i < previous.sockets.count {
                    pendingSockets.remove(i)
                    do {
                        let socket = try UDPSocket(adopting: previous.sockets[i], address: address, address6: wantedAddress6, port: port)
                        sockets.append(socket)
                        port = socket.port
                        adopted += 1
                        continue
                    } catch {
                        notes.append("\(error); opened a new one")
                        letGo(previous.sockets[i], name: socketName(i))
                    }
                }
                // SO_REUSEPORT always: queues share the port, and an agent started while the old
                // one still runs can bind it before the old one lets go.
                let socket = try Self.socket(address, wantedAddress6, port: port, reusePort: true)
                port = socket.port // port 0 (tests): the others join the port the first got
                sockets.append(socket)
            }
            for (i, extra) in previous.sockets.enumerated().dropFirst(tuns.count) {
                pendingSockets.remove(i)
                letGo(extra, name: socketName(i))
            }
            if adopted > 0 { notes.append("took over \(adopted) listening socket(s) on port \(port)") }
            // WireGuard sends from the listening port (peers answer and roam to it).
            if tuns.count > 1 && configuration.wireGuard == nil {
                for _ in 0..<FlowHash.sourcePortCount(queues: tuns.count) {
                    senders.append(try Self.socket(address, wantedAddress6, port: 0, reusePort: false))
                }
            }
        } catch {
            for t in tuns { t.close() }
            for s in sockets + senders { s.close() }
            for i in pendingSockets { letGo(previous.sockets[i], name: socketName(i)) }
            tuns = []
            throw error
        }
        let engine = PacketEngine(
            queues: zip(tuns, sockets).map { QueueIO(tun: $0, socket: $1) }, sendSockets: senders,
            configuration: configuration)
        return (engine, notes)
    }

    /// Keeps the engine's queues and listening sockets in the store (under systemd), and
    /// forgets names an earlier engine kept that this one does not use.
    func keep(_ engine: PacketEngine) {
        let queues = engine.queueDescriptors
        var names: Set<String> = []
        for (i, q) in queues.enumerated() {
            keeper.keep(q.tun, name: tunName(i))
            keeper.keep(q.socket, name: socketName(i))
            names.formUnion([tunName(i), socketName(i)])
        }
        let stale = kept.withLock { old -> Set<String> in
            defer { old = names }
            return old.subtracting(names)
        }
        for name in stale { keeper.forget(name) }
    }

    /// Stops `engine` and holds its descriptors for the next ``open(tunOffloads:address:address6:configuration:)``.
    func handBack(_ engine: PacketEngine) {
        var tun: [Int32] = []
        var sockets: [Int32] = []
        for q in engine.stopHandingOver() {
            guard let t = q.tun as? TUNDevice, let s = q.socket as? UDPSocket else {
                q.tun.close()
                q.socket.close()
                continue
            }
            tun.append(t.release())
            sockets.append(s.release())
        }
        spare.withLock { held in
            for fd in held.tun + held.sockets { Glibc.close(fd) }
            held = (tun, sockets)
        }
    }

    /// The end of the data path: stops `engine`, drops everything from the store and deletes
    /// the TUN (which takes its addresses and routes along).
    func discard(_ engine: PacketEngine?) {
        engine?.stop()
        spare.withLock { held in
            for fd in held.tun + held.sockets { Glibc.close(fd) }
            held = ([], [])
        }
        for name in kept.withLock({ names -> Set<String> in
            defer { names = [] }
            return names
        }) { keeper.forget(name) }
        for i in 0..<Self.maxQueues {
            guard let tun = keeper.take(tunName(i)) else { break }
            letGo(tun, name: tunName(i))
        }
        for i in 0..<Self.maxQueues {
            guard let socket = keeper.take(socketName(i)) else { break }
            letGo(socket, name: socketName(i))
        }
        if let link = try? netlink.linkIfPresent(named: device), link.kind == "tun" {
            try? netlink.deleteLink(index: link.index)
        }
    }

    /// Closes what the store handed over that no engine took (the TUN of another name, or of
    /// a backend no longer run: its device goes once the store lets go of it too).
    public static func discardUntaken(_ keeper: any DescriptorKeeper) {
        for name in keeper.untaken() {
            guard let fd = keeper.take(name) else { continue }
            if name.contains(".tun.") { _ = twill_ioctl_value(fd, TUNDevice.TUNSETPERSIST, 0) }
            keeper.forget(name)
            Glibc.close(fd)
        }
    }

    // MARK: Internals

    private static func socket(_ address: IPv4Address, _ address6: IPv6Address?, port: UInt16, reusePort: Bool) throws(SystemError)
        -> UDPSocket
    {
        if let address6 { return try UDPSocket(address6: address6, port: port, reusePort: reusePort) }
        return try UDPSocket(address: address, port: port, reusePort: reusePort)
    }

    /// What the previous engine handed back, else what the store kept from the previous run.
    private func takePrevious() -> (tun: [Int32], sockets: [Int32]) {
        let held = spare.withLock { held -> (tun: [Int32], sockets: [Int32]) in
            defer { held = ([], []) }
            return held
        }
        if !held.tun.isEmpty || !held.sockets.isEmpty { return held }
        var tun: [Int32] = []
        var sockets: [Int32] = []
        for i in 0..<Self.maxQueues {
            guard let fd = keeper.take(tunName(i)) else { break }
            tun.append(fd)
        }
        for i in 0..<Self.maxQueues {
            guard let fd = keeper.take(socketName(i)) else { break }
            sockets.append(fd)
        }
        return (tun, sockets)
    }

    /// The TUN's queues: the previous ones when all of them match (with queues added or
    /// closed to make `count`), else new ones on a persistent device.
    private func openTUN(_ previous: [Int32], count: Int, offloads: Bool, notes: inout [String]) throws(SystemError) -> [TUNDevice] {
        let multiQueue = count > 1
        var adopted: [TUNDevice] = []
        var mismatch: String?
        for fd in previous {
            do { adopted.append(try TUNDevice(adopting: fd, name: device, offloads: offloads, multiQueue: multiQueue)) } catch {
                mismatch = "\(error)"
                break
            }
        }
        if !previous.isEmpty, mismatch == nil {
            for (i, extra) in adopted.enumerated().dropFirst(count) {
                extra.close()
                keeper.forget(tunName(i))
            }
            adopted = Array(adopted.prefix(count))
            while adopted.count < count, let more = try? TUNDevice(name: device, offloads: adopted[0].hasVirtioHeader, multiQueue: true),
                more.hasVirtioHeader == adopted[0].hasVirtioHeader
            {
                adopted.append(more)
            }
            notes.append("took over \(previous.count) queue(s) of \(device) (now \(adopted.count))")
            return adopted
        }
        if let mismatch {
            // The device must go too: its settings are not what this run asks for.
            notes.append("\(mismatch); made \(device) anew")
            for t in adopted { _ = t.release() }
            if let first = previous.first { _ = twill_ioctl_value(first, TUNDevice.TUNSETPERSIST, 0) }
            for (i, fd) in previous.enumerated() { letGo(fd, name: tunName(i)) }
            if let link = try? netlink.linkIfPresent(named: device), link.kind == "tun" { try? netlink.deleteLink(index: link.index) }
        }
        let fresh = try openFresh(count: count, offloads: offloads, notes: &notes)
        try fresh[0].setPersistent(true)
        return fresh
    }

    /// New queues on the device. A persistent device left with other flags (one queue where
    /// several are wanted, or the reverse) refuses them: it is deleted and made again.
    private func openFresh(count: Int, offloads: Bool, notes: inout [String]) throws(SystemError) -> [TUNDevice] {
        let existing = (try? netlink.linkIfPresent(named: device))?.flatMap { $0.kind == "tun" ? $0 : nil }
        let queues: [TUNDevice]
        do {
            queues = try TUNDevice.openQueues(name: device, count: count, offloads: offloads)
        } catch {
            // EINVAL: a device of ours with other flags; EBUSY means a live process holds it
            // (another agent?), which is never taken away from under it.
            guard let existing, error.errno == EINVAL else { throw error }
            notes.append("\(device) was left with other settings (\(error)); made it again")
            try? netlink.deleteLink(index: existing.index)
            return try TUNDevice.openQueues(name: device, count: count, offloads: offloads)
        }
        if count > 1, queues.count == 1, !queues[0].isMultiQueue, let existing {
            // A single-queue device of an earlier run made the open fall back: make it again
            // with the queues asked for.
            queues[0].close()
            try? netlink.deleteLink(index: existing.index)
            notes.append("\(device) was a single-queue device; made it again for \(count) queues")
            return try TUNDevice.openQueues(name: device, count: count, offloads: offloads)
        }
        return queues
    }

    /// Closes a descriptor taken from the store or a previous engine for good.
    private func letGo(_ fd: Int32, name: String) {
        keeper.forget(name)
        Glibc.close(fd)
    }
}
