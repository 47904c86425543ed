import Synchronization
import Testing
import TwillAddress
import TwillNetlink
import TwillSystem
import TwillTestSupport

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

/// A keeper in memory standing in for systemd's store: `keep` holds a duplicate (as systemd
/// does), `take` hands it to the next run once.
final class RecordingKeeper: DescriptorKeeper, @unchecked Sendable {
    let store = Mutex<[String: Int32]>([:])
    var persists: Bool { true }
    func take(_ name: String) -> Int32? { store.withLock { $0.removeValue(forKey: name) } }
    func untaken() -> [String] { store.withLock { Array($0.keys) } }
    func keep(_ fd: Int32, name: String) {
        let copy = dup(fd)
        store.withLock { if let old = $0.updateValue(copy, forKey: name) { close(old) } }
    }
    func forget(_ name: String) { store.withLock { if let old = $0.removeValue(forKey: name) { close(old) } } }
    func closeAll() {
        store.withLock {
            for fd in $0.values { close(fd) }
            $0 = [:]
        }
    }
}

/// The packet engine's TUN queues and sockets across engine rebuilds and restarts, on a real
/// TUN in a namespace of its own: taken over when they match (same device, no packet lost
/// between), made anew when the queues, offloads or address changed, let go of for good by
/// ``EngineDescriptors/discard(_:)``.
@Suite(.serialized, .requiresRoot) struct EngineDescriptorsTests {
    static let underlay = IPv4Address("198.51.100.1")!

    func withNamespace(_ body: (String, Netlink) throws -> Void) throws {
        let namespaces = TestNamespaces()
        defer { namespaces.cleanup() }
        let ns = try namespaces.add("descriptors")
        try ip("-n", ns, "link", "add", "twd0", "type", "bridge")
        try ip("-n", ns, "addr", "add", "198.51.100.1/24", "dev", "twd0")
        try ip("-n", ns, "link", "set", "twd0", "up")
        try body(ns, try Netlink(namespacePath: NetworkNamespace.path(named: ns)))
    }

    func open(_ d: EngineDescriptors, in ns: String, queues: Int, offloads: Bool = true, port: UInt16 = 8285) throws -> (
        PacketEngine, [String]
    ) {
        try NetworkNamespace.run(inNamespace: NetworkNamespace.path(named: ns)) {
            var configuration = EngineConfiguration(localSubnet: IPv4Network("198.18.1.0/24")!, peerPort: port, queues: queues)
            configuration.udpOffloads = true
            let (engine, notes) = try d.open(tunOffloads: offloads, address: Self.underlay, address6: nil, configuration: configuration)
            return (engine, notes)
        }
    }

    func index(_ ns: String) -> String? {
        (try? ip("-n", ns, "-o", "link", "show", "twill0"))?.split(separator: ":").first.map(String.init)
    }

    @Test func takenOverWhenTheyMatchAndMadeAnewWhenNot() throws {
        try withNamespace { ns, netlink in
            let keeper = RecordingKeeper()
            defer { keeper.closeAll() }
            let first = EngineDescriptors(device: "twill0", keeper: keeper, netlink: netlink)
            let (engine, notes) = try open(first, in: ns, queues: 2)
            #expect(notes.isEmpty, "\(notes)")
            first.keep(engine)
            #expect(Set(keeper.untaken()) == ["twill0.tun.0", "twill0.tun.1", "twill0.udp.0", "twill0.udp.1"])
            let device = index(ns)
            engine.stop()
            // The next run: the same settings take everything over, and the device is the same.
            let second = EngineDescriptors(device: "twill0", keeper: keeper, netlink: netlink)
            let (again, notes2) = try open(second, in: ns, queues: 2)
            #expect(
                notes2.contains("took over 2 queue(s) of twill0 (now 2)")
                    && notes2.contains("took over 2 listening socket(s) on port 8285"), "\(notes2)")
            #expect(again.queueCount == 2 && again.hasTUNOffloads && index(ns) == device)
            second.keep(again)
            again.stop()
            // One queue where two ran: the device is made anew (a multi-queue device cannot
            // serve as a single-queue one), the second socket let go.
            let third = EngineDescriptors(device: "twill0", keeper: keeper, netlink: netlink)
            let (one, notes3) = try open(third, in: ns, queues: 1)
            #expect(notes3.contains { $0.contains("multi-queue, one queue wanted") && $0.contains("made twill0 anew") }, "\(notes3)")
            #expect(one.queueCount == 1 && index(ns) != device)
            third.keep(one)
            #expect(Set(keeper.untaken()) == ["twill0.tun.0", "twill0.udp.0"])
            // A rebuild in the same run hands its descriptors to the next engine.
            third.handBack(one)
            let (rebuilt, notes4) = try open(third, in: ns, queues: 1)
            #expect(notes4.contains("took over 1 queue(s) of twill0 (now 1)"), "\(notes4)")
            // Another port: that socket is let go and a new one bound.
            third.handBack(rebuilt)
            let (moved, notes5) = try open(third, in: ns, queues: 1, port: 8286)
            #expect(notes5.contains { $0.contains("not 198.51.100.1:8286") }, "\(notes5)")
            third.keep(moved)
            // The end: nothing kept, no device.
            third.discard(moved)
            #expect(keeper.untaken().isEmpty)
            #expect(index(ns) == nil)
        }
    }

    /// The TUN is persistent: with the engine's descriptors closed it stays, with its address.
    @Test func theDeviceOutlivesItsDescriptors() throws {
        try withNamespace { ns, netlink in
            let d = EngineDescriptors(device: "twill0", keeper: NoDescriptorKeeper(), netlink: netlink)
            let (engine, _) = try open(d, in: ns, queues: 1)
            try ip("-n", ns, "addr", "add", "198.18.1.0/32", "dev", "twill0")
            engine.stop()
            #expect(try ip("-n", ns, "addr", "show", "dev", "twill0").contains("198.18.1.0/32"))
            // A device held by a live process is never taken from it.
            let (holder, _) = try open(d, in: ns, queues: 1)
            let other = EngineDescriptors(device: "twill0", keeper: NoDescriptorKeeper(), netlink: netlink)
            #expect(throws: SystemError.self) { try open(other, in: ns, queues: 1, port: 0) }
            #expect(index(ns) != nil)
            holder.stop()
        }
    }
}
