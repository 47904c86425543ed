import Foundation
import Testing
import TwillAddress
import TwillEtcd
import TwillTestSupport

@testable import TwillLease

/// Dual-stack leases: flannel's key and value forms, the config rules, the IPv6 checks of the
/// peer set, and acquisition against a real etcd.
@Suite(.serialized) struct DualStackLeaseTests {
    static let dual = #"{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/48"}"#

    @Test("flannel's dual-stack and IPv6-only key forms, canonical IPv6 text")
    func keyForms() throws {
        let k = try SubnetKey(parsing: "10.5.34.0-24&fc00:0:0:22::-64")
        #expect(k.ipv4Subnet == IPv4Network("10.5.34.0/24") && k.ipv6 == IPv6Network("fc00:0:0:22::/64"))
        #expect(k.description == "10.5.34.0-24&fc00:0:0:22::-64")
        let only6 = try SubnetKey(parsing: "0.0.0.0-0&2001:db8:100:5::-64")
        #expect(only6.ipv4Subnet == nil && only6.ipv6 == IPv6Network("2001:db8:100:5::/64"))
        #expect(SubnetKey(ipv4: SubnetKey.ipv6OnlyPart, ipv6: only6.ipv6).description == "0.0.0.0-0&2001:db8:100:5::-64")
        #expect(throws: LeaseError.self) { try SubnetKey(parsing: "10.5.34.0-24&fc00::zz-64") }
        #expect(throws: LeaseError.self) { try SubnetKey(parsing: "10.5.34.0-24&fc00::-64&fd00::-64") }
    }

    @Test("flannel's literal dual-stack lease value reads back byte for byte")
    func literalValue() throws {
        let text =
            #"{"PublicIP":"198.51.100.3","PublicIPv6":"2001:db8:1::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:77:04"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:77:06"}}"#
        let a = try LeaseAttributes(json: Data(text.utf8), key: "k")
        #expect(a.publicIPv6 == IPv6Address("2001:db8:1::3"))
        #expect(String(decoding: a.backendV6Data ?? Data(), as: UTF8.self) == #"{"VNI":1,"VtepMAC":"02:00:00:00:77:06"}"#)
        #expect(String(decoding: a.json(), as: UTF8.self) == text)
        #expect(throws: LeaseError.self) {
            try LeaseAttributes(json: Data(#"{"PublicIP":"198.51.100.3","PublicIPv6":"fe80::zz"}"#.utf8), key: "k")
        }
    }

    @Test("config: IPv6 ranges, which keys fit, and the rules named")
    func configRules() throws {
        let c = try NetworkConfig(json: Data(Self.dual.utf8))
        #expect(
            c.ipv6SubnetLength == 64 && c.ipv6SubnetMin == IPv6Address("2001:db8:100:1::")
                && c.ipv6SubnetMax == IPv6Address("2001:db8:100:ffff::"))
        #expect(c.ipv6SubnetRange?.count == 0xFFFF)
        #expect(c.fits(try SubnetKey(parsing: "198.18.5.0-24&2001:db8:100:5::-64")))
        #expect(!c.fits(try SubnetKey(parsing: "198.18.5.0-24")), "a dual-stack network's key names an IPv6 subnet")
        #expect(!c.fits(try SubnetKey(parsing: "198.18.5.0-24&2001:db8:100::-64")), "below IPv6SubnetMin")
        #expect(!c.fits(try SubnetKey(parsing: "198.18.5.0-24&2001:db8:200:5::-64")), "outside IPv6Network")
        #expect(!c.fits(try SubnetKey(parsing: "198.18.5.0-24&2001:db8:100:5::-80")), "wrong length")
        let v4 = try NetworkConfig(json: Data(#"{"Network":"198.18.0.0/16"}"#.utf8))
        #expect(!v4.fits(try SubnetKey(parsing: "198.18.5.0-24&2001:db8:100:5::-64")), "an IPv4 network's key names no IPv6 subnet")
        for (json, says) in [
            (#"{"Network":"198.18.0.0/16","EnableIPv6":true}"#, "IPv6Network is missing"),
            (#"{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/125"}"#, "too small"),
            (#"{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","IPv6SubnetLen":127}"#, "larger than /126"),
            (#"{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","IPv6SubnetLen":49}"#, "at least /50"),
            (
                #"{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","IPv6SubnetMin":"2001:db8:100:5::1"}"#,
                "boundary"
            ),
            (
                #"{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","IPv6SubnetMin":"2001:db8:100:9::","IPv6SubnetMax":"2001:db8:100:5::"}"#,
                "above IPv6SubnetMax"
            ),
        ] {
            var message = ""
            do { _ = try NetworkConfig(json: Data(json.utf8)) } catch { message = error.reason }
            #expect(message.contains(says), "\(json): \(message)")
        }
    }

    @Test("peer set: a lease's IPv6 part is checked as its IPv4 part; the older of two keys holding one IPv6 subnet wins")
    func peerSet6() {
        let layout = EtcdLayout()
        func kv(_ name: String, _ value: String, created: Int64 = 5) -> KeyValue {
            KeyValue(key: layout.subnetsPrefix + name, value: Data(value.utf8), createRevision: created, modRevision: created, lease: 7)
        }
        let context = PeerSet.Context(
            network: IPv4Network("198.18.0.0/16")!, subnetLength: 24, ownKey: layout.subnetsPrefix + "198.18.1.0-24&2001:db8:100:1::-64",
            ownSubnet: IPv4Network("198.18.1.0/24"), ownPublicIP: IPv4Address("198.51.100.1")!,
            ipv6Network: IPv6Network("2001:db8:100::/48"), ipv6SubnetLength: 64, ownSubnet6: IPv6Network("2001:db8:100:1::/64"))
        var set = PeerSet(layout: layout, context: context)
        let change = set.reset([
            kv("198.18.2.0-24&2001:db8:100:2::-64", #"{"PublicIP":"198.51.100.2","PublicIPv6":"2001:db8:1::2"}"#), // good
            kv("198.18.3.0-24", #"{"PublicIP":"198.51.100.3","PublicIPv6":null}"#), // IPv4 only: a peer still
            // outside the IPv6 network
            kv("198.18.4.0-24&2001:db8:200:4::-64", #"{"PublicIP":"198.51.100.4","PublicIPv6":"2001:db8:1::4"}"#),
            kv("198.18.5.0-24&2001:db8:100:5::-80", #"{"PublicIP":"198.51.100.5","PublicIPv6":"2001:db8:1::5"}"#), // wrong IPv6 length
            kv("198.18.6.0-24&2001:db8:100:1::-64", #"{"PublicIP":"198.51.100.6","PublicIPv6":"2001:db8:1::6"}"#), // our IPv6 subnet
            kv("198.18.7.0-24&2001:db8:100:7::-64", #"{"PublicIP":"198.51.100.7","PublicIPv6":"ff02::1"}"#), // multicast PublicIPv6
            // a younger holder of ::2
            kv("198.18.8.0-24&2001:db8:100:2::-64", #"{"PublicIP":"198.51.100.8","PublicIPv6":"2001:db8:1::8"}"#, created: 9),
            kv("0.0.0.0-0&2001:db8:100:9::-64", #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:1::9"}"#), // IPv6-only node
        ])
        #expect(set.peers.map { $0.subnet.description } == ["198.18.2.0-24&2001:db8:100:2::-64", "198.18.3.0-24"])
        let reasons = Dictionary(
            uniqueKeysWithValues: change.rejected.map { (String($0.key.dropFirst(layout.subnetsPrefix.count)), $0.reason) })
        #expect(reasons["198.18.4.0-24&2001:db8:200:4::-64"] == .outsideNetwork)
        #expect(reasons["198.18.5.0-24&2001:db8:100:5::-80"] == .wrongLength)
        #expect(reasons["198.18.6.0-24&2001:db8:100:1::-64"] == .overlapsOwnSubnet)
        #expect(reasons["198.18.7.0-24&2001:db8:100:7::-64"] == .badPublicIP)
        #expect(reasons["198.18.8.0-24&2001:db8:100:2::-64"] == .conflict)
        #expect(reasons["0.0.0.0-0&2001:db8:100:9::-64"] == .wrongLength)
        // A node whose network is IPv4 only ignores the IPv6 part rather than the peer.
        var v4only = context
        v4only.ipv6Network = nil
        v4only.ownSubnet6 = nil
        var set4 = PeerSet(layout: layout, context: v4only)
        _ = set4.reset([kv("198.18.4.0-24&2001:db8:200:4::-64", #"{"PublicIP":"198.51.100.4","PublicIPv6":"2001:db8:1::4"}"#)])
        #expect(set4.peers.count == 1)
    }

    @Test(
        "acquire: both subnets in one key; a restart and subnet.env keep both; enabling IPv6 keeps the IPv4 subnet; an older key's IPv6 subnet is never shared",
        .requiresEtcd
    )
    func acquire() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let layout = EtcdLayout()
            try await c.put(layout.configKey, #"{"Network":"198.18.0.0/16"}"#)
            let r = SubnetRegistry(etcd: c)
            let node = LeaseAttributes(publicIP: IPv4Address("198.51.100.1")!, publicIPv6: IPv6Address("2001:db8:1::1"))
            let v4 = try await r.acquire(config: try await r.networkConfig(), attributes: node, previous: nil, ttl: 60)
            #expect(v4.subnet.ipv6 == nil)
            // IPv6 enabled: the node keeps its IPv4 subnet and adds an IPv6 one, in one key.
            try await c.put(layout.configKey, Self.dual)
            let config = try await r.networkConfig()
            let dual = try await r.acquire(config: config, attributes: node, previous: nil, ttl: 60)
            #expect(dual.subnet.ipv4 == v4.subnet.ipv4 && dual.subnet.ipv6.map { config.fits($0) } == true)
            var keys = try await c.list(prefix: layout.subnetsPrefix).kvs.map(\.key)
            #expect(keys == [layout.key(for: dual.subnet)], "the IPv4-only key is gone: \(keys)")
            #expect(keys.first?.contains("&2001:db8:100:") == true)
            // A restart takes the same lease over.
            let again = try await r.acquire(config: config, attributes: node, previous: nil, ttl: 60)
            #expect(again.subnet == dual.subnet && again.etcdLease == dual.etcdLease)
            // Released, then subnet.env's two subnets come back.
            try await r.release(again)
            let back = try await r.acquire(
                config: config, attributes: node, previous: dual.subnet.ipv4, previous6: dual.subnet.ipv6, ttl: 60)
            #expect(back.subnet == dual.subnet)
            // Another node asking for the same IPv6 subnet (an old subnet.env) gets another one.
            let other = LeaseAttributes(publicIP: IPv4Address("198.51.100.2")!, publicIPv6: IPv6Address("2001:db8:1::2"))
            let second = try await r.acquire(config: config, attributes: other, previous: nil, previous6: dual.subnet.ipv6, ttl: 60)
            #expect(second.subnet.ipv6 != dual.subnet.ipv6 && second.subnet.ipv4 != dual.subnet.ipv4)
            // A key written by hand that shares a subnet with an older key: the registry's
            // check sees it, so a node that raced that way would give it up.
            let sharing = SubnetKey(ipv4: IPv4Network("198.18.99.0/24")!, ipv6: dual.subnet.ipv6)
            try await c.put(layout.key(for: sharing), #"{"PublicIP":"198.51.100.9","PublicIPv6":null}"#)
            let kv = try #require(try await c.get(layout.key(for: sharing)).kvs.first)
            let racer = Lease(
                subnet: sharing, attributes: LeaseAttributes(publicIP: IPv4Address("198.51.100.9")!), etcdLease: 0,
                modRevision: kv.modRevision, createRevision: kv.createRevision)
            #expect(try await r.olderHolder(of: racer, config: config) == dual.subnet)
            #expect(try await r.olderHolder(of: back, config: config) == nil)
            keys = try await c.list(prefix: layout.subnetsPrefix).kvs.map(\.key)
            #expect(keys.count == 3)
        }
    }

    @Test(
        "IPv6-only: leases judged by their IPv6 part and PublicIPv6; a node's own found by PublicIPv6; subnet.env without IPv4 lines is complete",
        .requiresEtcd
    )
    func ipv6Only() async throws {
        let layout = EtcdLayout()
        func kv(_ name: String, _ value: String, created: Int64 = 5) -> KeyValue {
            KeyValue(key: layout.subnetsPrefix + name, value: Data(value.utf8), createRevision: created, modRevision: created, lease: 7)
        }
        let context = PeerSet.Context(
            network: .all, subnetLength: 0, ownKey: layout.subnetsPrefix + "0.0.0.0-0&2001:db8:100:1::-64",
            ownSubnet: nil, ownPublicIP: .any, ipv6Network: IPv6Network("2001:db8:100::/48"), ipv6SubnetLength: 64,
            ownSubnet6: IPv6Network("2001:db8:100:1::/64"), ipv4: false, ownPublicIPv6: IPv6Address("2001:db8:1::1"))
        var set = PeerSet(layout: layout, context: context)
        let change = set.reset([
            kv("0.0.0.0-0&2001:db8:100:2::-64", #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:1::2","BackendType":"host-gw"}"#),
            kv("0.0.0.0-0&2001:db8:100:3::-64", #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:1::3","BackendType":"host-gw"}"#),
            kv("0.0.0.0-0&2001:db8:100:4::-64", #"{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"host-gw"}"#), // no PublicIPv6
            // names us
            kv("0.0.0.0-0&2001:db8:100:5::-64", #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:1::1","BackendType":"host-gw"}"#),
            kv("198.18.6.0-24", #"{"PublicIP":"198.51.100.6","PublicIPv6":null}"#), // IPv4 only
            kv("198.18.8.0-24&2001:db8:100:8::-64", #"{"PublicIP":"198.51.100.8","PublicIPv6":"2001:db8:1::8"}"#), // dual stack: not here
            kv("0.0.0.0-0&2001:db8:100:3::-64&x", #"{}"#),
        ])
        #expect(set.peers.map(\.subnet.description) == ["0.0.0.0-0&2001:db8:100:2::-64", "0.0.0.0-0&2001:db8:100:3::-64"])
        let reasons = Dictionary(
            uniqueKeysWithValues: change.rejected.map { (String($0.key.dropFirst(layout.subnetsPrefix.count)), $0.reason) })
        #expect(reasons["0.0.0.0-0&2001:db8:100:4::-64"] == .badPublicIP)
        #expect(reasons["0.0.0.0-0&2001:db8:100:5::-64"] == .ownPublicIP)
        #expect(reasons["198.18.6.0-24"] == .wrongLength)
        #expect(reasons["198.18.8.0-24&2001:db8:100:8::-64"] == .wrongLength, "an IPv4 part is never routed on an IPv6-only node")

        let env = try SubnetEnv(
            text:
                "FLANNEL_IPV6_NETWORK=2001:db8:100::/48\nFLANNEL_IPV6_SUBNET=2001:db8:100:2::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n",
            requireComplete: true)
        #expect(env.subnet == nil && env.ipv6Subnet == IPv6Network("2001:db8:100:2::/64"))
        #expect(throws: LeaseError.self) {
            try SubnetEnv(text: "FLANNEL_IPV6_NETWORK=2001:db8:100::/48\nFLANNEL_MTU=1430\n", requireComplete: true)
        }

        try await withEtcd { etcd in
            let c = try etcd.client()
            try await c.put(
                layout.configKey, #"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","Backend":{"Type":"host-gw"}}"#)
            let r = SubnetRegistry(etcd: c)
            let config = try await r.networkConfig()
            let a = LeaseAttributes(publicIP: .any, publicIPv6: IPv6Address("2001:db8:1::1"), backendType: "host-gw")
            let b = LeaseAttributes(publicIP: .any, publicIPv6: IPv6Address("2001:db8:1::2"), backendType: "host-gw")
            let la = try await r.acquire(config: config, attributes: a, previous: nil, ttl: 60)
            let lb = try await r.acquire(config: config, attributes: b, previous: nil, ttl: 60)
            #expect(la.subnet.ipv4Subnet == nil && la.subnet.description.hasPrefix("0.0.0.0-0&2001:db8:100:"))
            #expect(la.subnet != lb.subnet, "two IPv6-only nodes (both PublicIP 0.0.0.0) are told apart by PublicIPv6")
            // A restart of node a takes its own lease over, not b's.
            let again = try await r.acquire(config: config, attributes: a, previous: nil, ttl: 60)
            #expect(again.subnet == la.subnet && again.etcdLease == la.etcdLease)
            #expect(try await c.list(prefix: layout.subnetsPrefix).kvs.count == 2)
        }
    }
}
