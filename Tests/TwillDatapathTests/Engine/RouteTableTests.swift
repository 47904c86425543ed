import Testing
import TwillAddress

@testable import TwillDatapath

@Suite("RouteTable")
struct RouteTableTests {
    func lease(_ subnet: String, _ ip: String) -> PeerLease {
        PeerLease(subnet: IPv4Network(subnet)!, publicIP: IPv4Address(ip)!, backendType: nil, backendData: nil)
    }

    @Test("longest prefix wins among nested subnets")
    func longestPrefix() {
        let table = RouteTable(peers: [
            lease("198.18.0.0/16", "198.51.100.1"),
            lease("198.18.2.0/24", "198.51.100.2"),
            lease("198.18.2.128/25", "198.51.100.3"),
            lease("198.18.3.0/24", "198.51.100.4"),
        ])
        func via(_ d: String) -> String? { table.lookup(IPv4Address(d)!).map { table.peers[$0].publicIP.description } }
        #expect(via("198.18.2.1") == "198.51.100.2")
        #expect(via("198.18.2.200") == "198.51.100.3")
        #expect(via("198.18.3.255") == "198.51.100.4")
        #expect(via("198.18.77.1") == "198.51.100.1")
        #expect(via("198.19.0.1") == nil)
    }

    @Test("empty table misses everything")
    func empty() {
        let table = RouteTable(peers: [])
        #expect(table.lookup(IPv4Address(198, 18, 1, 1)) == nil)
        #expect(table.checkSender(outerSource: IPv4Address(198, 51, 100, 2), innerSource: IPv4Address(198, 18, 2, 1)) == .unknownSender)
    }

    @Test("lookup agrees with a linear scan on many random peers")
    func randomAgainstLinear() {
        var rng = SplitMix64(seed: 42)
        var leases: [PeerLease] = []
        for i in 0..<300 {
            let length = [16, 20, 24, 24, 24, 26, 28][Int.random(in: 0..<7, using: &rng)]
            let address = IPv4Address(rawValue: 0xC612_0000 | UInt32.random(in: 0...0xFFFF, using: &rng))
            let subnet = try! IPv4Network(containing: address, prefixLength: length)
            leases.append(
                PeerLease(
                    subnet: subnet, publicIP: IPv4Address(rawValue: 0xC633_6400 | UInt32(i % 250)), backendType: nil, backendData: nil))
        }
        let table = RouteTable(peers: leases)
        for _ in 0..<5000 {
            let d = IPv4Address(rawValue: 0xC612_0000 | UInt32.random(in: 0...0xFFFF, using: &rng))
            let best = table.peers.indices.filter { table.peers[$0].subnet.contains(d) }
                .max { table.peers[$0].subnet.prefixLength < table.peers[$1].subnet.prefixLength }
            #expect(table.lookup(d).map { table.peers[$0].subnet } == best.map { table.peers[$0].subnet })
        }
    }

    @Test("duplicate subnets keep the first lease")
    func duplicates() {
        let table = RouteTable(peers: [lease("198.18.2.0/24", "198.51.100.2"), lease("198.18.2.0/24", "198.51.100.9")])
        #expect(table.peers.count == 1)
        #expect(table.peers[0].publicIP == IPv4Address(198, 51, 100, 2))
    }

    @Test("sender checks: peer, unknown sender, spoofed inner source, several leases per node")
    func senders() {
        let table = RouteTable(peers: [
            lease("198.18.2.0/24", "198.51.100.2"),
            lease("198.18.4.0/24", "198.51.100.2"),
            lease("198.18.3.0/24", "198.51.100.3"),
        ])
        let two = IPv4Address(198, 51, 100, 2)
        #expect(table.checkSender(outerSource: two, innerSource: IPv4Address(198, 18, 2, 7)) == .peer(0))
        #expect(table.checkSender(outerSource: two, innerSource: IPv4Address(198, 18, 4, 7)) == .peer(1))
        #expect(table.checkSender(outerSource: two, innerSource: IPv4Address(198, 18, 3, 7)) == .spoofedInnerSource)
        #expect(table.checkSender(outerSource: IPv4Address(198, 51, 100, 99), innerSource: IPv4Address(198, 18, 2, 7)) == .unknownSender)
        #expect(table.peer(publicIP: IPv4Address(198, 51, 100, 3)) == 2)
        #expect(table.peer(publicIP: IPv4Address(198, 51, 100, 4)) == nil)
    }
}
