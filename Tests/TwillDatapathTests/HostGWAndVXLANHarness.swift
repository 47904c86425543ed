import Foundation
import Synchronization
import TwillAddress
import TwillDatapath
import TwillNetlink
import TwillTestSupport

/// The overlay network of the datapath tests (inside 198.18.0.0/15).
let overlayNetwork = IPv4Network("198.18.0.0/16")!

/// One test host: a namespace on the shared segment, a Netlink opened in it, a "container
/// bridge" `twc0` holding the first address of its subnet, and a backend driven in-process.
struct OverlayHost: Sendable {
    let ns: TestNamespace
    let netlink: Netlink
    let external: ExternalInterface
    let subnet: IPv4Network
    let backend: any Backend
    let advert: BackendAdvert
    /// 198.18.N.1: an address inside this host's subnet that answers ping.
    var hostAddress: String { subnet.host(1)!.description }
    var local: NodeAddressing { NodeAddressing(v4: OverlayPart(network: overlayNetwork, subnet: subnet)) }
    /// This host's lease as its peers see it.
    var lease: PeerLease {
        PeerLease(subnet: subnet, publicIP: external.publicIP, backendType: advert.backendType, backendData: advert.backendData)
    }

    /// Pings `other`'s host address from this host's own subnet address (so both directions
    /// cross the overlay).
    func canReach(_ other: OverlayHost) -> Bool {
        ns.pingEventually(other.hostAddress, from: hostAddress, attempts: 2)
    }

    /// `ip route show PREFIX` in this host, trimmed.
    func route(_ prefix: String) throws -> String {
        try ns.ip("route", "show", prefix).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Builds `count` hosts on one bridge, each with its backend prepared and started (but no
/// peers added), runs `body`, and removes everything.
func withOverlayHosts(
    count: Int = 3,
    makeBackend: @escaping (Netlink, ExternalInterface) -> any Backend,
    _ body: ([OverlayHost]) async throws -> Void
) async throws {
    try await withBridgedHosts(count: count) { segment in
        var hosts: [OverlayHost] = []
        for (i, ns) in segment.hosts.enumerated() {
            let nl = try Netlink(namespacePath: ns.path)
            let eth0 = try nl.link(named: segment.interface)
            let ip = IPv4Address(segment.underlayAddresses[i])!
            let ext = ExternalInterface(name: eth0.name, index: eth0.index, publicIP: ip, localIP: ip, mtu: eth0.mtu)
            let subnet = IPv4Network("198.18.\(i + 1).0/24")!
            let bridge = try nl.createLink(name: "twc0", kind: "bridge")
            try nl.addAddress(InterfaceAddress(interfaceIndex: bridge.index, address: subnet.host(1)!, prefixLength: 24))
            try nl.setLinkUp(index: bridge.index)
            let backend = makeBackend(nl, ext)
            let advert = try await backend.prepare()
            try await backend.start(local: NodeAddressing(v4: OverlayPart(network: overlayNetwork, subnet: subnet)))
            hosts.append(OverlayHost(ns: ns, netlink: nl, external: ext, subnet: subnet, backend: backend, advert: advert))
        }
        do {
            try await body(hosts)
        } catch {
            for h in hosts { await h.backend.stop() }
            throw error
        }
        for h in hosts { await h.backend.stop() }
    }
}

/// Tells every host about every other host's lease.
func connectAll(_ hosts: [OverlayHost]) async throws {
    for h in hosts {
        for other in hosts where other.ns != h.ns {
            try await h.backend.peerAdded(other.lease)
        }
    }
}

/// Whether every host reaches every other host's subnet.
func allReachEachOther(_ hosts: [OverlayHost]) -> [String] {
    var failures: [String] = []
    for a in hosts {
        for b in hosts where b.ns != a.ns && !a.canReach(b) {
            failures.append("\(a.hostAddress) -> \(b.hostAddress)")
        }
    }
    return failures
}

/// Collects a monitor's changes on one consuming task.
final class MonitorLog: Sendable {
    private final class Items: Sendable {
        let list = Mutex<[NetlinkChange]>([])
    }
    private let items = Items()
    private let task: Task<Void, Never>

    init(_ monitor: NetlinkMonitor) {
        let items = self.items
        task = Task {
            for await c in monitor.changes { items.list.withLock { $0.append(c) } }
        }
    }

    var changes: [NetlinkChange] { items.list.withLock { $0 } }
    func cancel() { task.cancel() }

    /// Waits (bounded, polling every 20 ms) for a change matching `predicate`.
    func waitFor(within limit: Duration, _ predicate: (NetlinkChange) -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if changes.contains(where: predicate) { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}
