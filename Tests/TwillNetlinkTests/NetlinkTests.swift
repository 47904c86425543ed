import Foundation
import Synchronization
import Testing
import TwillAddress
import TwillSystem
import TwillTestSupport

@testable import TwillNetlink

/// Runs `body` with a Netlink opened inside a fresh namespace (deleted afterwards).
private func withNamespacedNetlink(_ body: (TestNamespace, Netlink) async throws -> Void) async throws {
    try await withNamespaces(["nl"]) { spaces in
        let ns = spaces[0]
        let nl = try Netlink(namespacePath: ns.path)
        try await body(ns, nl)
    }
}

private func v4(_ s: String) -> IPv4Address { IPv4Address(s)! }
private func net(_ s: String) -> IPv4Network { IPv4Network(s)! }

@Suite("Netlink", .serialized, .requiresRoot)
struct NetlinkTests {
    @Test("a Netlink opened in a namespace acts there, not in the caller's namespace")
    func namespaceIsolation() async throws {
        try await withNamespacedNetlink { ns, nl in
            let names = try nl.links().map(\.name)
            #expect(names == ["lo"])
            try nl.createLink(name: "twdummy0", kind: "bridge")
            #expect(try ns.ip("link", "show", "twdummy0").contains("twdummy0"))
            // The helper thread joined the namespace; the caller's thread did not.
            let inside = try NetworkNamespace.run(inNamespace: ns.path) {
                try String(contentsOfFile: "/proc/thread-self/net/dev", encoding: .utf8).contains("twdummy0")
            }
            #expect(inside)
            let outside = try String(contentsOfFile: "/proc/thread-self/net/dev", encoding: .utf8).contains("twdummy0")
            #expect(!outside)
            // The body's error comes back as it was thrown.
            struct Marker: Error, Equatable {}
            #expect(throws: Marker()) { try NetworkNamespace.run(inNamespace: ns.path) { () throws -> Int in throw Marker() } }
            let missing = #expect(throws: SystemError.self) { try NetworkNamespace.run(inNamespace: "/run/netns/twt-missing-ns") { 1 } }
            #expect(missing?.description == "open network namespace /run/netns/twt-missing-ns: No such file or directory (ENOENT)")
        }
    }

    @Test("links: create, look up, list, set MTU and up/down, vxlan attributes, delete")
    func links() async throws {
        try await withNamespacedNetlink { ns, nl in
            let dummy = try nl.createLink(name: "twdummy0", kind: "bridge", mtu: 1400)
            #expect(dummy.kind == "bridge")
            #expect(dummy.mtu == 1400)
            #expect(dummy.mac != nil)
            #expect(!dummy.isUp)
            try nl.setMTU(1450, index: dummy.index)
            try nl.setLinkUp(index: dummy.index)
            var again = try nl.link(named: "twdummy0")
            #expect(again.mtu == 1450)
            #expect(again.isUp)
            #expect(try nl.link(index: dummy.index).name == "twdummy0")
            try nl.setLinkDown(index: dummy.index)
            again = try nl.link(index: dummy.index)
            #expect(!again.isUp)

            try nl.addAddress(InterfaceAddress(interfaceIndex: dummy.index, address: v4("198.51.100.1"), prefixLength: 24))
            let mac = MACAddress("02:11:22:33:44:55")!
            let vx = try nl.createVXLAN(
                VXLANLinkSpec(
                    name: "twvx42", vni: 42, local: v4("198.51.100.1"),
                    underlayIndex: dummy.index, mtu: 1400, mac: mac))
            #expect(vx.kind == "vxlan")
            #expect(vx.mac == mac)
            #expect(vx.mtu == 1400)
            #expect(
                vx.vxlan == VXLANAttributes(vni: 42, local: v4("198.51.100.1"), underlayIndex: dummy.index, port: 8472, learning: false))
            let shown = try ns.ip("-d", "link", "show", "twvx42")
            #expect(shown.contains("vxlan id 42"))
            #expect(shown.contains("dstport 8472"))
            #expect(shown.contains("nolearning"))

            let names = Set(try nl.links().map(\.name))
            #expect(names.isSuperset(of: ["lo", "twdummy0", "twvx42"]))
            try nl.deleteLink(index: vx.index)
            try nl.deleteLink(index: dummy.index)
            #expect(try nl.linkIfPresent(named: "twvx42") == nil)
            #expect(try nl.links().map(\.name) == ["lo"])
        }
    }

    @Test("addresses: add, list and delete IPv4 and IPv6")
    func addresses() async throws {
        try await withNamespacedNetlink { ns, nl in
            let d = try nl.createLink(name: "twdummy0", kind: "bridge")
            let a4 = InterfaceAddress(interfaceIndex: d.index, address: v4("198.51.100.7"), prefixLength: 24)
            let a6 = InterfaceAddress(interfaceIndex: d.index, address: .v6(IPv6Address("fd00:7477::7")!), prefixLength: 64)
            try nl.addAddress(a4)
            try nl.addAddress(a6)
            let listed = try nl.addresses(interfaceIndex: d.index)
            #expect(listed.contains { $0.address == a4.address && $0.prefixLength == 24 && $0.label == "twdummy0" })
            #expect(listed.contains { $0.address == a6.address && $0.prefixLength == 64 })
            #expect(try nl.addresses(interfaceIndex: d.index, family: AF_INET).count == 1)
            #expect(try ns.ip("addr", "show", "dev", "twdummy0").contains("198.51.100.7/24"))
            let dup = #expect(throws: NetlinkError.self) { try nl.addAddress(a4) }
            #expect(dup?.isExists == true)
            try nl.deleteAddress(a4)
            try nl.deleteAddress(a6)
            #expect(try nl.addresses(interfaceIndex: d.index).filter { !$0.address.isLinkLocalV6 }.isEmpty)
        }
    }

    @Test("routes: add with Twill's protocol, list, replace, onlink, delete")
    func routes() async throws {
        try await withNamespacedNetlink { ns, nl in
            let d = try nl.createLink(name: "twdummy0", kind: "bridge")
            try nl.setLinkUp(index: d.index)
            try nl.addAddress(InterfaceAddress(interfaceIndex: d.index, address: v4("198.51.100.1"), prefixLength: 24))
            let r = Route(destination: net("198.18.5.0/24"), gateway: v4("198.51.100.9"), outputInterface: d.index)
            try nl.addRoute(r)
            var listed = try nl.routes().filter { $0.destination == r.destination }
            #expect(listed.count == 1)
            #expect(listed.first?.gateway == v4("198.51.100.9"))
            #expect(listed.first?.outputInterface == d.index)
            #expect(listed.first?.isTwillOwned == true)
            #expect(try ns.ip("route", "show", "proto", "\(twillRouteProtocol)").contains("198.18.5.0/24 via 198.51.100.9"))
            let dup = #expect(throws: NetlinkError.self) { try nl.addRoute(r) }
            #expect(dup?.isExists == true)

            var r2 = r
            r2.gateway = v4("198.51.100.10")
            try nl.replaceRoute(r2)
            listed = try nl.routes().filter { $0.destination == r.destination }
            #expect(listed.map(\.gateway) == [v4("198.51.100.10")])

            // A gateway outside every prefix of the device needs onlink.
            let off = Route(destination: net("198.18.6.0/24"), gateway: v4("198.18.6.0"), outputInterface: d.index)
            #expect(throws: NetlinkError.self) { try nl.addRoute(off) }
            var on = off
            on.onLink = true
            try nl.addRoute(on)
            #expect(try nl.routes().first { $0.destination == on.destination }?.onLink == true)

            // Another table.
            let t100 = Route(destination: net("198.18.5.0/24"), gateway: v4("198.51.100.11"), outputInterface: d.index, table: 100)
            try nl.addRoute(t100)
            #expect(try nl.routes(table: 100).map(\.gateway) == [v4("198.51.100.11")])
            #expect(try ns.ip("route", "show", "table", "100").contains("198.18.5.0/24 via 198.51.100.11"))
            try nl.deleteRoute(t100)
            #expect(try nl.routes(table: 100).isEmpty)

            // A delete with another protocol does not match Twill's route.
            var foreign = r2
            foreign.routeProtocol = 4
            #expect(throws: NetlinkError.self) { try nl.deleteRoute(foreign) }
            try nl.deleteRoute(r2)
            try nl.deleteRoute(on)
            #expect(try nl.routes().filter(\.isTwillOwned).isEmpty)
            let gone = #expect(throws: NetlinkError.self) { try nl.deleteRoute(r2) }
            #expect(gone?.isNotFound == true)
        }
    }

    @Test("neighbours and fdb entries: add, replace, list, delete")
    func neighboursAndFDB() async throws {
        try await withNamespacedNetlink { ns, nl in
            let d = try nl.createLink(name: "twdummy0", kind: "bridge")
            try nl.setLinkUp(index: d.index)
            try nl.addAddress(InterfaceAddress(interfaceIndex: d.index, address: v4("198.51.100.1"), prefixLength: 24))
            let m1 = MACAddress("02:00:00:00:00:01")!
            let m2 = MACAddress("02:00:00:00:00:02")!
            let n = Neighbour(interfaceIndex: d.index, address: .v4(v4("198.51.100.7")), mac: m1)
            try nl.addNeighbour(n)
            var listed = try nl.neighbours(interfaceIndex: d.index)
            #expect(listed.contains { $0.address == n.address && $0.mac == m1 && $0.isPermanent })
            var n2 = n
            n2.mac = m2
            try nl.replaceNeighbour(n2)
            listed = try nl.neighbours(interfaceIndex: d.index)
            #expect(listed.first { $0.address == n.address }?.mac == m2)
            #expect(try ns.ip("neigh", "show", "dev", "twdummy0").contains("02:00:00:00:00:02"))
            try nl.deleteNeighbour(n2)
            #expect(try nl.neighbours(interfaceIndex: d.index).allSatisfy { $0.address != n.address })

            let vx = try nl.createVXLAN(VXLANLinkSpec(name: "twvx1", vni: 1, local: v4("198.51.100.1"), underlayIndex: d.index))
            let f = FDBEntry(interfaceIndex: vx.index, mac: m1, destination: .v4(v4("198.51.100.2")))
            try nl.addFDBEntry(f)
            var fdb = try nl.fdbEntries(interfaceIndex: vx.index)
            #expect(
                fdb.contains {
                    $0.mac == m1 && $0.destination == .v4(v4("198.51.100.2")) && $0.isPermanent && $0.flags & FDBEntry.ntfSelf != 0
                })
            #expect(
                try run("/usr/sbin/bridge", ["-n", ns.name, "fdb", "show", "dev", "twvx1"]).contains("02:00:00:00:00:01 dst 198.51.100.2"))
            var f2 = f
            f2.destination = .v4(v4("198.51.100.3"))
            try nl.replaceFDBEntry(f2)
            fdb = try nl.fdbEntries(interfaceIndex: vx.index)
            #expect(fdb.filter { $0.mac == m1 }.map(\.destination) == [.v4(v4("198.51.100.3"))])
            try nl.deleteFDBEntry(f2)
            #expect(try nl.fdbEntries(interfaceIndex: vx.index).allSatisfy { $0.mac != m1 })
        }
    }

    @Test("IPv6: routes with Twill's protocol (gateway, onlink, replace, delete), a vxlan device over IPv6 and its FDB")
    func ipv6RoutesAndVXLAN() async throws {
        try await withNamespacedNetlink { ns, nl in
            let d = try nl.createLink(name: "twdummy0", kind: "bridge")
            try nl.setLinkUp(index: d.index)
            let local6 = try IPv6Address(parsing: "2001:db8:1::1")
            var a6 = InterfaceAddress(interfaceIndex: d.index, address: .v6(local6), prefixLength: 64)
            a6.flags = InterfaceAddress.noDAD
            try nl.addAddress(a6)
            let dst = try IPv6Network(parsing: "2001:db8:100:5::/64")
            let r = Route6(destination: dst, gateway: try IPv6Address(parsing: "2001:db8:1::9"), outputInterface: d.index)
            try nl.replaceRoute6(r)
            var listed = try nl.routes6().filter { $0.destination == dst }
            #expect(listed.count == 1)
            #expect(listed.first?.gateway == r.gateway)
            #expect(listed.first?.isTwillOwned == true)
            #expect(try ns.ip("-6", "route", "show", "proto", "\(twillRouteProtocol)").contains("2001:db8:100:5::/64 via 2001:db8:1::9"))
            // IPv4 listings never show IPv6 routes, and the other way round.
            #expect(try nl.routes().allSatisfy { $0.destination.prefixLength != 64 })
            var r2 = r
            r2.gateway = try IPv6Address(parsing: "2001:db8:1::a")
            try nl.replaceRoute6(r2)
            listed = try nl.routes6().filter { $0.destination == dst }
            #expect(listed.map(\.gateway) == [r2.gateway])

            let vx = try nl.createVXLAN(VXLANLinkSpec(name: "twvx6", vni: 7, local: nil, local6: local6, underlayIndex: d.index))
            #expect(vx.vxlan?.local6 == local6)
            #expect(vx.vxlan?.local == nil)
            try nl.setLinkUp(index: vx.index)
            let gw = try IPv6Address(parsing: "2001:db8:100:6::")
            let on = Route6(
                destination: try IPv6Network(parsing: "2001:db8:100:6::/64"), gateway: gw, outputInterface: vx.index, onLink: true)
            try nl.replaceRoute6(on)
            #expect(try nl.routes6().first { $0.destination == on.destination }?.onLink == true)
            let mac = try #require(MACAddress("02:00:00:00:00:06"))
            try nl.replaceNeighbour(Neighbour(interfaceIndex: vx.index, address: .v6(gw), mac: mac))
            #expect(try nl.neighbours(interfaceIndex: vx.index).contains { $0.address == .v6(gw) && $0.mac == mac && $0.isPermanent })
            let peer6 = try IPv6Address(parsing: "2001:db8:1::2")
            try nl.replaceFDBEntry(FDBEntry(interfaceIndex: vx.index, mac: mac, destination: .v6(peer6)))
            #expect(try nl.fdbEntries(interfaceIndex: vx.index).contains { $0.mac == mac && $0.destination == .v6(peer6) })
            #expect(
                try run("/usr/sbin/bridge", ["-n", ns.name, "fdb", "show", "dev", "twvx6"]).contains("02:00:00:00:00:06 dst 2001:db8:1::2"))

            try nl.deleteRoute6(Route6(destination: dst))
            try nl.deleteRoute6(Route6(destination: on.destination))
            #expect(try nl.routes6().filter(\.isTwillOwned).isEmpty)
            // Someone else's route to the same place is not Twill's to delete.
            try ns.ip("-6", "route", "add", "2001:db8:100:7::/64", "via", "2001:db8:1::9")
            #expect(throws: NetlinkError.self) { try nl.deleteRoute6(Route6(destination: try IPv6Network(parsing: "2001:db8:100:7::/64"))) }
        }
    }

    @Test("dumps spanning many datagrams, and concurrent callers sharing one instance")
    func bigDumpsAndConcurrency() async throws {
        try await withNamespacedNetlink { _, nl in
            let d = try nl.createLink(name: "twdummy0", kind: "bridge")
            try nl.setLinkUp(index: d.index)
            try nl.addAddress(InterfaceAddress(interfaceIndex: d.index, address: v4("198.51.100.1"), prefixLength: 24))
            // 8 tasks x 128 routes, added concurrently through the one socket.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for t in 0..<8 {
                    group.addTask {
                        for i in 0..<128 {
                            let dst = try IPv4Network(
                                address: IPv4Address(198, 18, UInt8(t * 16 + i / 8), UInt8((i % 8) * 32)), prefixLength: 27)
                            try nl.addRoute(Route(destination: dst, gateway: v4("198.51.100.9"), outputInterface: d.index))
                            if i % 32 == 0 { _ = try nl.links() }
                        }
                    }
                }
                try await group.waitForAll()
            }
            // About 100 bytes each: the dump needs several datagrams.
            let twill = try nl.routes().filter(\.isTwillOwned)
            #expect(twill.count == 1024)
            #expect(Set(twill.map(\.destination)).count == 1024)
            for r in twill { try nl.deleteRoute(r) }
            #expect(try nl.routes().filter(\.isTwillOwned).isEmpty)
        }
    }

    @Test("errors name the object and the errno")
    func errors() async throws {
        try await withNamespacedNetlink { _, nl in
            let missing = #expect(throws: NetlinkError.self) { try nl.link(named: "twt-nope") }
            #expect(missing?.errno == ENODEV)
            #expect(missing?.description == "link \"twt-nope\": No such device (ENODEV)")

            let r = Route(destination: net("198.18.1.0/24"), gateway: v4("203.0.113.2"), outputInterface: 9999, onLink: true)
            let noDev = #expect(throws: NetlinkError.self) { try nl.addRoute(r) }
            #expect(noDev?.errno == ENODEV)
            #expect(
                noDev?.description.hasPrefix("adding route 198.18.1.0/24 via 203.0.113.2 dev #9999 onlink: No such device (ENODEV)") == true
            )
            let unreachable = #expect(throws: NetlinkError.self) {
                try nl.addRoute(Route(destination: net("198.18.1.0/24"), gateway: v4("203.0.113.2")))
            }
            #expect(unreachable?.errno == ENETUNREACH)

            let d = try nl.createLink(name: "twdummy0", kind: "bridge")
            let bad = #expect(throws: NetlinkError.self) {
                try nl.addAddress(InterfaceAddress(interfaceIndex: d.index, address: v4("198.51.100.1"), prefixLength: 33))
            }
            #expect(bad?.errno == EINVAL)
            #expect(bad?.description.hasPrefix("adding address 198.51.100.1/33 dev twdummy0: Invalid argument (EINVAL)") == true)

            let dupName = #expect(throws: NetlinkError.self) { try nl.createLink(name: "twdummy0", kind: "bridge") }
            #expect(dupName?.description.hasPrefix("creating bridge link \"twdummy0\": File exists (EEXIST)") == true)

            let ns = #expect(throws: NetlinkError.self) { try Netlink(namespacePath: "/run/netns/twt-does-not-exist") }
            #expect(ns?.errno == ENOENT)
        }
    }

    @Test("the monitor sees a route deleted from outside")
    func monitorSeesRouteDeletion() async throws {
        try await withNamespacedNetlink { ns, nl in
            let d = try nl.createLink(name: "twdummy0", kind: "bridge")
            try nl.setLinkUp(index: d.index)
            try nl.addAddress(InterfaceAddress(interfaceIndex: d.index, address: v4("198.51.100.1"), prefixLength: 24))
            let r = Route(destination: net("198.18.7.0/24"), gateway: v4("198.51.100.9"), outputInterface: d.index)
            try nl.addRoute(r)
            let monitor = try nl.monitor()
            defer { monitor.stop() }
            let collector = ChangeCollector(monitor)
            defer { collector.cancel() }
            try ns.ip("route", "del", "198.18.7.0/24")
            let seen = try await collector.waitFor(within: .seconds(20)) { change in
                if case .routeRemoved(let gone) = change { return gone.destination == r.destination && gone.isTwillOwned }
                return false
            }
            #expect(seen)
            // And a link deleted from outside.
            try ns.ip("link", "del", "twdummy0")
            let linkGone = try await collector.waitFor(within: .seconds(20)) { change in
                if case .linkRemoved(let l) = change { return l.name == "twdummy0" }
                return false
            }
            #expect(linkGone)
            monitor.stop()
        }
    }
}

/// Collects a monitor's changes on one consuming task (an AsyncStream has one consumer).
final class ChangeCollector: Sendable {
    private let task: Task<Void, Never>

    init(_ monitor: NetlinkMonitor) {
        let box = SeenBox()
        task = Task { for await c in monitor.changes { box.append(c) } }
        self.box = box
    }
    private let box: SeenBox

    /// Waits (bounded, polling every 20 ms) for a change matching `predicate`.
    func waitFor(within limit: Duration, _ predicate: (NetlinkChange) -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if box.snapshot().contains(where: predicate) { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    func cancel() { task.cancel() }
}

final class SeenBox: Sendable {
    private let items = Mutex<[NetlinkChange]>([])
    func append(_ c: NetlinkChange) { items.withLock { $0.append(c) } }
    func snapshot() -> [NetlinkChange] { items.withLock { $0 } }
}

extension IPAddress {
    var isLinkLocalV6: Bool {
        if case .v6(let a) = self { return a.isLinkLocal }
        return false
    }
}

/// A consumer that falls behind the monitor's buffer is told (an overrun), not left to miss
/// changes silently.
@Suite(.requiresRoot) struct NetlinkMonitorOverflowTests {
    @Test func aFullBufferEndsInAnOverrun() async {
        let (stream, continuation) = AsyncStream.makeStream(of: NetlinkChange.self, bufferingPolicy: .bufferingNewest(3))
        for _ in 0..<10 { NetlinkMonitor.deliver(.routeRemoved(Route(destination: .all)), continuation) }
        continuation.finish()
        var seen: [NetlinkChange] = []
        for await c in stream { seen.append(c) }
        #expect(seen.count == 3)
        guard case .overrun? = seen.last else {
            Issue.record("the last change must be an overrun, got \(seen)")
            return
        }
    }
}
