import Foundation
import Testing
import TwillAddress
import TwillDatapath
import TwillNetlink
import TwillTestSupport

@Suite("host-gw backend", .serialized, .requiresRoot)
struct HostGWBackendTests {
    private let make: (Netlink, ExternalInterface) -> any Backend = { HostGWBackend(netlink: $0, external: $1) }

    @Test("three hosts reach each other's subnets; peerRemoved removes exactly that peer's route")
    func reachAndRemove() async throws {
        try await withOverlayHosts(makeBackend: make) { hosts in
            #expect(hosts[0].advert == BackendAdvert(mtu: 1500, backendType: "host-gw"))
            try await connectAll(hosts)
            #expect(try hosts[0].route("198.18.2.0/24").contains("198.18.2.0/24 via 198.51.100.2 dev eth0 proto 84"))
            #expect(allReachEachOther(hosts) == [])

            try await hosts[0].backend.peerRemoved(hosts[2].lease)
            #expect(try hosts[0].route("198.18.3.0/24") == "")
            #expect(try hosts[0].route("198.18.2.0/24") != "")
            #expect(try hosts[1].route("198.18.3.0/24") != "")
            #expect(hosts[0].canReach(hosts[1]))
            #expect(!hosts[0].ns.ping(hosts[2].hostAddress, from: hosts[0].hostAddress, timeoutSeconds: 1))
        }
    }

    @Test("reconcile restores a deleted route, removes a stale Twill route and keeps foreign routes")
    func reconcile() async throws {
        try await withOverlayHosts(makeBackend: make) { hosts in
            try await connectAll(hosts)
            let h = hosts[0]
            try h.ns.ip("route", "del", "198.18.2.0/24")
            try h.ns.ip("route", "add", "198.18.9.0/24", "via", "198.51.100.3", "proto", "static")
            try h.ns.ip("route", "add", "198.18.8.0/24", "via", "198.51.100.3", "proto", "84")
            try h.ns.ip("route", "add", "198.18.2.128/25", "via", "198.51.100.3") // foreign, inside a peer's subnet

            try await h.backend.reconcile(peers: hosts.map(\.lease))
            #expect(try h.route("198.18.2.0/24").contains("via 198.51.100.2 dev eth0 proto 84"))
            #expect(try h.route("198.18.8.0/24") == "")
            #expect(try h.route("198.18.9.0/24").contains("proto static"))
            #expect(try h.route("198.18.2.128/25") != "")
            try h.ns.ip("route", "del", "198.18.2.128/25")
            #expect(h.canReach(hosts[1]))

            // A second reconcile with nothing to do writes nothing (no churn for the monitor),
            // and a route deleted by hand is a change that asks for a reconcile.
            let hg = try #require(h.backend as? HostGWBackend)
            let monitor = try h.netlink.monitor()
            defer { monitor.stop() }
            let log = MonitorLog(monitor)
            defer { log.cancel() }
            try await h.backend.reconcile(peers: hosts.map(\.lease))
            try await Task.sleep(for: .milliseconds(300))
            #expect(log.changes.filter { hg.needsReconcile(after: $0) } == [])
            try h.ns.ip("route", "del", "198.18.2.0/24")
            #expect(try await log.waitFor(within: .seconds(20)) { hg.needsReconcile(after: $0) })
            try await h.backend.reconcile(peers: hosts.map(\.lease))
            #expect(try h.route("198.18.2.0/24").contains("via 198.51.100.2 dev eth0 proto 84"))

            // A lease gone while "the agent was down": reconcile without it removes its route.
            try await h.backend.reconcile(peers: [hosts[1].lease])
            #expect(try h.route("198.18.3.0/24") == "")
            #expect(try h.route("198.18.2.0/24") != "")
            #expect(try h.route("198.18.9.0/24") != "")
        }
    }

    @Test("a restarted backend (after SIGKILL, a lease deleted meanwhile) leaves no stale route")
    func restartAfterKill() async throws {
        try await withOverlayHosts(makeBackend: make) { hosts in
            try await connectAll(hosts)
            let h = hosts[0]
            let again = HostGWBackend(netlink: h.netlink, external: h.external)
            _ = try await again.prepare()
            try await again.start(local: h.local)
            try await again.reconcile(peers: [hosts[0].lease, hosts[1].lease])
            #expect(try h.route("198.18.3.0/24") == "")
            #expect(try h.route("198.18.2.0/24").contains("via 198.51.100.2 dev eth0 proto 84"))
            #expect(h.canReach(hosts[1]))
        }
    }

    @Test("refuses a peer that is not on-link and a node behind NAT; ignores other backend types")
    func refusals() async throws {
        try await withOverlayHosts(count: 1, makeBackend: make) { hosts in
            let h = hosts[0]
            let far = PeerLease(
                subnet: IPv4Network("198.18.7.0/24")!, publicIP: IPv4Address("203.0.113.50")!,
                backendType: "host-gw", backendData: nil)
            let error = await #expect(throws: BackendError.self) { try await h.backend.peerAdded(far) }
            #expect(error?.description.contains("peer 198.18.7.0/24 at 203.0.113.50 is not directly reachable on eth0") == true)
            #expect(try h.route("198.18.7.0/24") == "")

            let vx = PeerLease(
                subnet: IPv4Network("198.18.6.0/24")!, publicIP: IPv4Address("198.51.100.6")!,
                backendType: "vxlan", backendData: Data(#"{"VNI":1,"VtepMAC":"02:00:00:00:00:06"}"#.utf8))
            try await h.backend.peerAdded(vx)
            #expect(try h.route("198.18.6.0/24") == "")

            var natted = h.external
            natted.publicIP = IPv4Address("203.0.113.9")!
            let nat = HostGWBackend(netlink: h.netlink, external: natted)
            let natError = await #expect(throws: BackendError.self) { _ = try await nat.prepare() }
            #expect(natError?.description.contains("public IP 203.0.113.9 is not an address of interface eth0") == true)
        }
    }
}
