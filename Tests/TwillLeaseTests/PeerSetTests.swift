import Foundation
import Testing
import TwillAddress
import TwillEtcd

@testable import TwillLease

@Suite struct PeerSetTests {
    static let layout = EtcdLayout()
    static let ownKey = "/coreos.com/network/subnets/198.18.1.0-24"

    static func context(own: String? = ownKey) -> PeerSet.Context {
        PeerSet.Context(
            network: IPv4Network("198.18.0.0/16")!, subnetLength: 24, ownKey: own,
            ownSubnet: own == nil ? nil : IPv4Network("198.18.1.0/24"), ownPublicIP: IPv4Address("198.51.100.1")!)
    }

    static func kv(_ name: String, _ value: String, created: Int64 = 5) -> KeyValue {
        KeyValue(
            key: "/coreos.com/network/subnets/\(name)", value: Data(value.utf8), createRevision: created, modRevision: created, lease: 7)
    }

    static func lease(_ name: String, ip: String, created: Int64 = 5) -> KeyValue {
        kv(name, #"{"PublicIP":"\#(ip)","PublicIPv6":null}"#, created: created)
    }

    /// Each hostile or broken lease is rejected for its own reason, and nothing of it reaches
    /// the peers; the good one does.
    @Test func hostileLeasesAreRejectedWithTheirReason() {
        var set = PeerSet(layout: Self.layout, context: Self.context())
        let change = set.reset([
            Self.lease("198.18.1.0-24", ip: "198.51.100.1"), // our own: never a peer
            Self.lease("198.18.2.0-24", ip: "198.51.100.2"), // good
            Self.lease("198.18.1.0-25", ip: "198.51.100.3"), // half of our subnet
            Self.lease("198.18.0.0-16", ip: "198.51.100.3"), // the whole network
            Self.lease("0.0.0.0-0", ip: "198.51.100.3"), // everything
            Self.lease("10.9.0.0-24", ip: "198.51.100.3"), // outside the network
            Self.lease("198.18.3.0-26", ip: "198.51.100.3"), // wrong length
            Self.lease("198.18.4.7-24", ip: "198.51.100.3"), // host bits in the key
            Self.kv("198.18.5.0-24", "{not json"), // garbage
            Self.kv("198.18.6.0-24", #"{"PublicIPv6":null}"#), // no PublicIP
            Self.lease("198.18.7.0-24", ip: "0.0.0.0"), // not a unicast address
            Self.lease("198.18.8.0-24", ip: "224.0.0.5"),
            Self.lease("198.18.9.0-24", ip: "127.0.0.1"),
            Self.lease("198.18.10.0-24", ip: "198.51.100.1"), // names us, not our lease
            Self.kv("not-a-subnet", "{}"),
        ])
        #expect(change.added.map(\.subnet.description) == ["198.18.2.0-24"])
        #expect(set.peers.map(\.subnet.description) == ["198.18.2.0-24"])
        let reasons = Dictionary(uniqueKeysWithValues: change.rejected.map { (String($0.key.split(separator: "/").last!), $0.reason) })
        #expect(reasons["198.18.1.0-25"] == .wrongLength)
        #expect(reasons["198.18.0.0-16"] == .wrongLength)
        #expect(reasons["0.0.0.0-0"] == .wrongLength)
        #expect(reasons["10.9.0.0-24"] == .outsideNetwork)
        #expect(reasons["198.18.3.0-26"] == .wrongLength)
        #expect(reasons["198.18.4.7-24"] == .keyMismatch || reasons["198.18.4.7-24"] == .malformed)
        #expect(reasons["198.18.5.0-24"] == .malformed)
        #expect(reasons["198.18.6.0-24"] == .malformed)
        #expect(reasons["198.18.7.0-24"] == .badPublicIP)
        #expect(reasons["198.18.8.0-24"] == .badPublicIP)
        #expect(reasons["198.18.9.0-24"] == .badPublicIP)
        #expect(reasons["198.18.10.0-24"] == .ownPublicIP)
        #expect(reasons["not-a-subnet"] == .malformed)
        #expect(reasons[Self.ownKey.split(separator: "/").last.map(String.init) ?? ""] == nil)
        #expect(set.rejectionCounts[.wrongLength] == 4)
        // Judging again finds nothing new to log.
        #expect(set.put(Self.lease("198.18.3.0-26", ip: "198.51.100.3")).isEmpty)
    }

    /// A lease of another length that overlaps ours is refused even when the network's
    /// length is changed to match it: overlap with our subnet is checked on its own.
    @Test func overlapWithOurSubnetIsRefusedWhateverTheLength() {
        var context = Self.context()
        context.subnetLength = 25
        var set = PeerSet(layout: Self.layout, context: context)
        let change = set.reset([Self.lease("198.18.1.128-25", ip: "198.51.100.3"), Self.lease("198.18.2.0-25", ip: "198.51.100.2")])
        #expect(change.rejected.map(\.reason) == [.overlapsOwnSubnet])
        #expect(set.peers.map(\.subnet.description) == ["198.18.2.0-25"])
    }

    /// Two keys for one subnet: the lease created first keeps it, whichever arrives first.
    @Test func theOlderOfTwoOverlappingLeasesWins() {
        var set = PeerSet(layout: Self.layout, context: Self.context())
        _ = set.reset([])
        let younger = Self.kv("198.18.2.0-24&2001:db8:100:2::-64", #"{"PublicIP":"198.51.100.9","PublicIPv6":null}"#, created: 20)
        let older = Self.lease("198.18.2.0-24", ip: "198.51.100.2", created: 10)
        var change = set.put(younger)
        #expect(change.added.first?.attributes.publicIP == IPv4Address("198.51.100.9"))
        change = set.put(older)
        #expect(change.added.first?.attributes.publicIP == IPv4Address("198.51.100.2"))
        #expect(change.removed.first?.attributes.publicIP == IPv4Address("198.51.100.9"))
        #expect(change.rejected.map(\.reason) == [.conflict])
        #expect(set.peers.count == 1)
        // The older one gone: the younger one is a peer again.
        change = set.delete(key: older.key)
        #expect(change.added.first?.attributes.publicIP == IPv4Address("198.51.100.9"))
    }

    /// Changes: a new value of a peer is `changed`; our own key turning up under another
    /// context (we moved) is judged like any other lease.
    @Test func changesAndContextUpdates() {
        var set = PeerSet(layout: Self.layout, context: Self.context())
        _ = set.reset([Self.lease("198.18.2.0-24", ip: "198.51.100.2"), Self.lease("198.18.1.0-24", ip: "198.51.100.3")])
        #expect(set.peers.map(\.subnet.description) == ["198.18.2.0-24"])
        let change = set.put(Self.lease("198.18.2.0-24", ip: "198.51.100.22"))
        #expect(change.changed.map { "\($0.attributes.publicIP)" } == ["198.51.100.22"])
        // We moved to .5: the old own key (now another node's) becomes a peer.
        var moved = Self.context(own: "/coreos.com/network/subnets/198.18.5.0-24")
        moved.ownSubnet = IPv4Network("198.18.5.0/24")
        let after = set.update(context: moved)
        #expect(after.added.map(\.subnet.description) == ["198.18.1.0-24"])
    }

    /// A key holding exactly this node's value (its new lease, seen before the node knows it
    /// moved) is left out quietly.
    @Test func ourOwnValueUnderAnotherKeyIsLeftOutQuietly() {
        var context = Self.context()
        let ours = LeaseAttributes(publicIP: IPv4Address("198.51.100.1")!)
        context.ownAttributes = ours
        var set = PeerSet(layout: Self.layout, context: context)
        let change = set.reset([Self.kv("198.18.9.0-24", String(decoding: ours.json(), as: UTF8.self))])
        #expect(change.isEmpty)
        #expect(set.peers.isEmpty && set.rejections.isEmpty)
    }
}
