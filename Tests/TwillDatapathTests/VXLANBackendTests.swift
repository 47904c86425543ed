import Foundation
import Synchronization
import Testing
import TwillAddress
import TwillDatapath
import TwillNetlink
import TwillTestSupport

/// flannel's exact vxlan BackendData for a MAC.
private func flannelJSON(_ mac: MACAddress, vni: Int = 1) -> Data {
    Data(#"{"VNI":\#(vni),"VtepMAC":"\#(mac)"}"#.utf8)
}

private func vtepMAC(_ h: OverlayHost) throws -> MACAddress {
    try #require(try h.netlink.link(named: "flannel.1").mac)
}

/// The lease exactly as flannel would write it (BackendData built by hand, not by Twill).
private func flannelLease(_ h: OverlayHost) throws -> PeerLease {
    PeerLease(subnet: h.subnet, publicIP: h.external.publicIP, backendType: "vxlan", backendData: flannelJSON(try vtepMAC(h)))
}

@Suite("vxlan backend", .serialized, .requiresRoot)
struct VXLANBackendTests {
    private let make: (Netlink, ExternalInterface) -> any Backend = { VXLANBackend(netlink: $0, external: $1) }

    @Test("flannel.1 as flannel makes it; three hosts given flannel's exact lease JSON reach each other")
    func deviceAdvertAndReach() async throws {
        try await withOverlayHosts(makeBackend: make) { hosts in
            let h = hosts[0]
            let mac = try vtepMAC(h)
            #expect(h.advert.mtu == 1450)
            #expect(h.advert.backendType == "vxlan")
            #expect(h.advert.backendData == flannelJSON(mac))
            let dev = try h.ns.ip("-d", "addr", "show", "flannel.1")
            for part in ["mtu 1450", "vxlan id 1 local 198.51.100.1 dev eth0", "dstport 8472", "nolearning", "inet 198.18.1.0/32"] {
                #expect(dev.contains(part), "\(part) missing from: \(dev)")
            }
            for a in hosts {
                for b in hosts where b.ns != a.ns { try await a.backend.peerAdded(try flannelLease(b)) }
            }
            let macB = try vtepMAC(hosts[1])
            #expect(try h.route("198.18.2.0/24") == "198.18.2.0/24 via 198.18.2.0 dev flannel.1 proto 84 onlink")
            #expect(try h.ns.ip("neigh", "show", "dev", "flannel.1").contains("198.18.2.0 lladdr \(macB) PERMANENT"))
            #expect(
                try run("/usr/sbin/bridge", ["-n", h.ns.name, "fdb", "show", "dev", "flannel.1"]).contains(
                    "\(macB) dst 198.51.100.2 self permanent"))
            #expect(allReachEachOther(hosts) == [])
        }
    }

    @Test("peerRemoved removes exactly that peer's route, neighbour and fdb entry")
    func peerRemoved() async throws {
        try await withOverlayHosts(makeBackend: make) { hosts in
            try await connectAll(hosts)
            let h = hosts[0]
            let mac2 = try vtepMAC(hosts[1])
            let mac3 = try vtepMAC(hosts[2])
            try await h.backend.peerRemoved(hosts[2].lease)
            #expect(try h.route("198.18.3.0/24") == "")
            let neigh = try h.ns.ip("neigh", "show", "dev", "flannel.1")
            #expect(!neigh.contains("198.18.3.0"))
            #expect(neigh.contains("198.18.2.0 lladdr \(mac2)"))
            let fdb = try run("/usr/sbin/bridge", ["-n", h.ns.name, "fdb", "show", "dev", "flannel.1"])
            #expect(!fdb.contains("\(mac3)"))
            #expect(fdb.contains("\(mac2) dst 198.51.100.2"))
            #expect(h.canReach(hosts[1]))
            #expect(try hosts[1].route("198.18.3.0/24") != "")
        }
    }

    @Test("reconcile repairs routes, neighbours, fdb entries and a deleted device, and keeps foreign routes")
    func reconcile() async throws {
        try await withOverlayHosts(makeBackend: make) { hosts in
            try await connectAll(hosts)
            let h = hosts[0]
            let leases = hosts.map(\.lease)
            let mac2 = try vtepMAC(hosts[1])
            try h.ns.ip("route", "del", "198.18.2.0/24")
            try h.ns.ip("neigh", "del", "198.18.3.0", "dev", "flannel.1")
            try h.ns.ip("neigh", "add", "198.18.77.0", "lladdr", "02:00:00:00:77:77", "dev", "flannel.1", "nud", "permanent")
            try run(
                "/usr/sbin/bridge",
                ["-n", h.ns.name, "fdb", "add", "02:00:00:00:77:77", "dev", "flannel.1", "dst", "198.51.100.77", "self", "permanent"])
            try h.ns.ip("route", "add", "198.18.77.0/24", "via", "198.18.77.0", "dev", "flannel.1", "onlink", "proto", "84")
            try h.ns.ip("route", "add", "198.18.99.0/24", "via", "198.51.100.3", "proto", "static")

            try await h.backend.reconcile(peers: leases)
            #expect(try h.route("198.18.2.0/24") == "198.18.2.0/24 via 198.18.2.0 dev flannel.1 proto 84 onlink")
            #expect(try h.route("198.18.77.0/24") == "")
            #expect(try h.route("198.18.99.0/24").contains("proto static"))
            let neigh = try h.ns.ip("neigh", "show", "dev", "flannel.1")
            #expect(neigh.contains("198.18.3.0 lladdr"))
            #expect(!neigh.contains("198.18.77.0"))
            let fdb = try run("/usr/sbin/bridge", ["-n", h.ns.name, "fdb", "show", "dev", "flannel.1"])
            #expect(!fdb.contains("02:00:00:00:77:77"))
            #expect(fdb.contains("\(mac2) dst 198.51.100.2"))
            #expect(allReachEachOther(hosts) == [])

            // Nothing to do: nothing is written (the kernel announces no change), so an agent
            // that reconciles on the monitor's events cannot feed itself.
            let vx = try #require(h.backend as? VXLANBackend)
            let monitor = try h.netlink.monitor()
            defer { monitor.stop() }
            let log = MonitorLog(monitor)
            defer { log.cancel() }
            try await h.backend.reconcile(peers: leases)
            try await Task.sleep(for: .milliseconds(300))
            #expect(log.changes.filter { vx.needsReconcile(after: $0) } == [])

            // The device deleted by hand comes back with the same MAC (the published VtepMAC).
            let mac1 = try vtepMAC(h)
            try h.ns.ip("link", "del", "flannel.1")
            #expect(try await log.waitFor(within: .seconds(20)) { vx.needsReconcile(after: $0) })
            try await h.backend.reconcile(peers: leases)
            #expect(try vtepMAC(h) == mac1)
            #expect(try h.ns.ip("addr", "show", "flannel.1").contains("inet 198.18.1.0/32"))
            #expect(try h.route("198.18.3.0/24") == "198.18.3.0/24 via 198.18.3.0 dev flannel.1 proto 84 onlink")
            #expect(try h.route("198.18.99.0/24") != "")
            #expect(allReachEachOther(hosts) == [])
        }
    }

    @Test("a restarted backend (after SIGKILL, a lease deleted meanwhile) keeps the VtepMAC and leaves nothing stale")
    func restartAfterKill() async throws {
        try await withOverlayHosts(makeBackend: make) { hosts in
            try await connectAll(hosts)
            let h = hosts[0]
            let mac = try vtepMAC(h)
            // The old backend is gone without stop(); hosts[2]'s lease was deleted meanwhile.
            let again = VXLANBackend(netlink: h.netlink, external: h.external)
            let advert = try await again.prepare()
            #expect(advert.backendData == flannelJSON(mac))
            try await again.start(local: h.local)
            try await again.reconcile(peers: [hosts[0].lease, hosts[1].lease])
            #expect(try h.route("198.18.3.0/24") == "")
            #expect(!(try h.ns.ip("neigh", "show", "dev", "flannel.1").contains("198.18.3.0")))
            #expect(
                !(try run("/usr/sbin/bridge", ["-n", h.ns.name, "fdb", "show", "dev", "flannel.1"]).contains("\(try vtepMAC(hosts[2]))")))
            #expect(try h.route("198.18.2.0/24") == "198.18.2.0/24 via 198.18.2.0 dev flannel.1 proto 84 onlink")
            #expect(h.canReach(hosts[1]))
        }
    }

    @Test("leases of other backend types are ignored and malformed BackendData is skipped")
    func ignoredAndMalformed() async throws {
        try await withOverlayHosts(count: 2, makeBackend: make) { hosts in
            let h = hosts[0]
            let other = PeerLease(
                subnet: IPv4Network("198.18.5.0/24")!, publicIP: IPv4Address("198.51.100.2")!,
                backendType: "host-gw", backendData: nil)
            let udp = PeerLease(
                subnet: IPv4Network("198.18.6.0/24")!, publicIP: IPv4Address("198.51.100.2")!,
                backendType: nil, backendData: nil)
            let malformed = PeerLease(
                subnet: IPv4Network("198.18.7.0/24")!, publicIP: IPv4Address("198.51.100.2")!,
                backendType: "vxlan", backendData: Data(#"{"VNI":1,"VtepMAC":"not-a-mac"}"#.utf8))
            let garbage = PeerLease(
                subnet: IPv4Network("198.18.8.0/24")!, publicIP: IPv4Address("198.51.100.2")!,
                backendType: "vxlan", backendData: Data("[1,2".utf8))
            for p in [other, udp, malformed, garbage] { try await h.backend.peerAdded(p) }
            try await h.backend.peerAdded(hosts[1].lease)
            #expect(
                try h.ns.ip("route", "show", "proto", "84").trimmingCharacters(in: .whitespacesAndNewlines)
                    == "198.18.2.0/24 via 198.18.2.0 dev flannel.1 onlink")
            try await h.backend.reconcile(peers: [other, udp, malformed, garbage, hosts[1].lease])
            #expect(
                try h.ns.ip("route", "show", "proto", "84").trimmingCharacters(in: .whitespacesAndNewlines)
                    == "198.18.2.0/24 via 198.18.2.0 dev flannel.1 onlink")
            #expect(try h.netlink.neighbours(interfaceIndex: h.netlink.link(named: "flannel.1").index).filter(\.isPermanent).count == 1)
        }
    }

    @Test("DirectRouting routes peers on the same segment via their public IP")
    func directRouting() async throws {
        try await withOverlayHosts(makeBackend: { VXLANBackend(netlink: $0, external: $1, directRouting: true) }) { hosts in
            try await connectAll(hosts)
            let h = hosts[0]
            #expect(try h.route("198.18.2.0/24").contains("198.18.2.0/24 via 198.51.100.2 dev eth0 proto 84"))
            #expect(try run("/usr/sbin/bridge", ["-n", h.ns.name, "fdb", "show", "dev", "flannel.1"]).contains("permanent") == false)
            #expect(allReachEachOther(hosts) == [])
            try await h.backend.reconcile(peers: hosts.map(\.lease))
            #expect(try h.route("198.18.3.0/24").contains("via 198.51.100.3 dev eth0"))
        }
    }
}
