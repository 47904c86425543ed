import Foundation
import Testing
import TwillAddress
import TwillDatapath
import TwillNetlink
import TwillTestSupport

/// host-gw's rules on the in-memory kernel: which routes it writes, what reconcile restores,
/// removes and leaves alone, what it refuses. That packets then flow is `HostGWBackendTests`,
/// in namespaces (integration tier).
@Suite struct HostGWBackendKernelTests {
    static let network = IPv4Network("198.18.0.0/16")!
    static let local = NodeAddressing(v4: OverlayPart(network: network, subnet: IPv4Network("198.18.1.0/24")!))

    static func peer(_ n: UInt8, type: String? = "host-gw") -> PeerLease {
        PeerLease(
            subnet: IPv4Network("198.18.\(n).0/24")!, publicIP: IPv4Address(198, 51, 100, n), backendType: type, backendData: nil)
    }

    static func node() async throws -> (FakeKernel, HostGWBackend, Int32) {
        let kernel = FakeKernel()
        let eth0 = kernel.addInterface("eth0", addresses: [(.v4(IPv4Address(198, 51, 100, 1)), 24)])
        kernel.plant(Route(destination: IPv4Network("198.51.100.0/24")!, outputInterface: eth0.index, scope: 253, routeProtocol: 2))
        let external = ExternalInterface(
            name: "eth0", index: eth0.index, publicIP: IPv4Address(198, 51, 100, 1), localIP: IPv4Address(198, 51, 100, 1), mtu: 1500)
        let backend = HostGWBackend(netlink: kernel, external: external)
        #expect(try await backend.prepare() == BackendAdvert(mtu: 1500, backendType: "host-gw"))
        try await backend.start(local: local)
        return (kernel, backend, eth0.index)
    }

    static func twillRoutes(_ kernel: FakeKernel) throws -> [String] {
        try kernel.routes().filter(\.isTwillOwned).map { "\($0.destination) via \($0.gateway.map(\.description) ?? "-")" }.sorted()
    }

    @Test func peersGetOneRouteEachAndARemovedPeerLosesExactlyItsOwn() async throws {
        let (kernel, backend, eth0) = try await Self.node()
        for n: UInt8 in [2, 3] { try await backend.peerAdded(Self.peer(n)) }
        #expect(try Self.twillRoutes(kernel) == ["198.18.2.0/24 via 198.51.100.2", "198.18.3.0/24 via 198.51.100.3"])
        #expect(try kernel.routes().filter(\.isTwillOwned).allSatisfy { $0.outputInterface == eth0 })
        try await backend.peerRemoved(Self.peer(3))
        #expect(try Self.twillRoutes(kernel) == ["198.18.2.0/24 via 198.51.100.2"])
    }

    @Test func reconcileRestoresRemovesStaleAndKeepsForeignRoutesAndIsQuietWhenDone() async throws {
        let (kernel, backend, eth0) = try await Self.node()
        let peers = [Self.peer(2), Self.peer(3)]
        try await backend.reconcile(peers: peers)
        try kernel.deleteRoute(Route(destination: IPv4Network("198.18.2.0/24")!))
        kernel.plant(Route(destination: IPv4Network("198.18.8.0/24")!, gateway: IPv4Address(198, 51, 100, 3), outputInterface: eth0))
        kernel.plant(
            Route(
                destination: IPv4Network("198.18.9.0/24")!, gateway: IPv4Address(198, 51, 100, 3), outputInterface: eth0,
                routeProtocol: 4))
        try await backend.reconcile(peers: peers)
        #expect(try Self.twillRoutes(kernel) == ["198.18.2.0/24 via 198.51.100.2", "198.18.3.0/24 via 198.51.100.3"])
        #expect(try kernel.routes().contains { $0.destination == IPv4Network("198.18.9.0/24")! && $0.routeProtocol == 4 })
        // Nothing to do: nothing written (the kernel monitor would otherwise see churn).
        kernel.clearLog()
        try await backend.reconcile(peers: peers)
        #expect(kernel.log == [])
    }

    @Test func leasesItDoesNotRouteAreLeftOut() async throws {
        let (kernel, backend, _) = try await Self.node()
        // Another backend's lease, our own subnet, a subnet outside the network, a peer not on-link.
        try? await backend.peerAdded(Self.peer(4, type: "vxlan"))
        try? await backend.peerAdded(Self.peer(1))
        try? await backend.peerAdded(
            PeerLease(
                subnet: IPv4Network("198.19.5.0/24")!, publicIP: IPv4Address(198, 51, 100, 5), backendType: "host-gw", backendData: nil))
        let offLink = PeerLease(
            subnet: IPv4Network("198.18.6.0/24")!, publicIP: IPv4Address(203, 0, 113, 6), backendType: "host-gw", backendData: nil)
        await #expect(throws: (any Error).self) { try await backend.peerAdded(offLink) }
        #expect(try Self.twillRoutes(kernel) == [])
    }

    @Test func aPublicIPThatIsNotTheInterfacesIsRefusedAtPrepare() async throws {
        let kernel = FakeKernel()
        let eth0 = kernel.addInterface("eth0", addresses: [(.v4(IPv4Address(198, 51, 100, 1)), 24)])
        let behindNAT = ExternalInterface(
            name: "eth0", index: eth0.index, publicIP: IPv4Address(203, 0, 113, 1), localIP: IPv4Address(198, 51, 100, 1), mtu: 1500)
        let error = await #expect(throws: BackendError.self) { _ = try await HostGWBackend(netlink: kernel, external: behindNAT).prepare() }
        #expect(error?.description.contains("public IP 203.0.113.1 is not an address of interface eth0") == true)
    }
}
