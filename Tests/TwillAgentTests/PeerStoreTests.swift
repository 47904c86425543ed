import Foundation
import Logging
import Testing
import TwillAddress
import TwillDatapath
import TwillEtcd
import TwillLease
import TwillTestSupport

@testable import TwillAgent

/// The session's door to its backend, on a recording backend: the order of a change, one
/// call at a time, what a failure leaves for the next reconcile.
@Suite struct PeerStoreTests {
    static let layout = EtcdLayout()
    static let context = PeerSet.Context(
        network: IPv4Network("198.18.0.0/16")!, subnetLength: 24, ownKey: layout.subnetsPrefix + "198.18.1.0-24",
        ownSubnet: IPv4Network("198.18.1.0/24")!, ownPublicIP: IPv4Address(198, 51, 100, 1), ownAttributes: nil)

    static func kv(_ n: Int, ip: Int? = nil, revision: Int64 = 5) -> KeyValue {
        let attributes = LeaseAttributes(publicIP: IPv4Address(198, 51, 100, UInt8(ip ?? n)), backendType: "host-gw")
        return KeyValue(
            key: layout.subnetsPrefix + "198.18.\(n).0-24", value: attributes.json(), createRevision: revision, modRevision: revision)
    }

    @Test func aChangeRemovesBeforeItAddsAndTheStoreFollows() async throws {
        let backend = RecordingBackend()
        let store = PeerStore(backend: backend, logger: Logger(label: "test"))
        var peers = PeerSet(layout: Self.layout, context: Self.context)
        try await store.reset(peers.reset([Self.kv(2), Self.kv(3)]).added.map(Agent.peer))
        #expect(backend.log == ["reconcile [198.18.2.0/24,198.18.3.0/24]"])
        backend.clear()
        await store.apply(peers.delete(key: Self.kv(3).key))
        await store.apply(peers.put(Self.kv(2, ip: 22, revision: 9)))
        await store.apply(peers.put(Self.kv(4)))
        #expect(backend.log == ["removed 198.18.3.0/24", "added 198.18.2.0/24", "added 198.18.4.0/24"])
        #expect(Set(store.peers.map(\.subnet.description)) == ["198.18.2.0/24", "198.18.4.0/24"])
        #expect(store.peers.first { $0.subnet.description == "198.18.2.0/24" }?.publicIP == IPv4Address(198, 51, 100, 22))
        // The own lease never reaches the backend.
        await store.apply(peers.put(Self.kv(1)))
        #expect(backend.log.count == 3)
        #expect(!store.takeDirty())
    }

    @Test func aFailedChangeAsksForAReconcileWithTheWholeSet() async throws {
        let backend = RecordingBackend()
        let store = PeerStore(backend: backend, logger: Logger(label: "test"))
        var peers = PeerSet(layout: Self.layout, context: Self.context)
        try await store.reset(peers.reset([Self.kv(2)]).added.map(Agent.peer))
        backend.failNext("added")
        await store.apply(peers.put(Self.kv(3)))
        #expect(store.takeDirty())
        #expect(!store.takeDirty())
        backend.clear()
        try await store.reconcile()
        #expect(backend.log == ["reconcile [198.18.2.0/24,198.18.3.0/24]"])
    }

    @Test func changesAndReconcilesNeverInterleaveInsideTheBackend() async throws {
        let backend = RecordingBackend()
        let store = PeerStore(backend: backend, logger: Logger(label: "test"))
        var peers = PeerSet(layout: Self.layout, context: Self.context)
        var changes: [PeerSet.Change] = []
        for n in 2..<60 { changes.append(peers.put(Self.kv(n))) }
        await withTaskGroup(of: Void.self) { group in
            for change in changes { group.addTask { await store.apply(change) } }
            for _ in 0..<20 { group.addTask { try? await store.reconcile() } }
        }
        #expect(!backend.overlapped)
        #expect(store.peers.count == 58)
    }
}
