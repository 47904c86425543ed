import Testing

@testable import TwillAddress

/// Parses a network that the test author knows is valid.
private func net(_ text: String) throws(AddressError) -> IPv6Network {
    try IPv6Network(parsing: text)
}

/// Parses an address that the test author knows is valid.
private func addr(_ text: String) throws(AddressError) -> IPv6Address {
    try IPv6Address(parsing: text)
}

private let allOnes = IPv6Address(high: .max, low: .max)

@Suite("IPv6Network")
struct IPv6NetworkTests {
    // MARK: Parsing and formatting

    @Test(
        "parse/format round trip",
        arguments: [
            "::/0", "2001:db8::/32", "fd00::/8", "fd00:1:2:3::/64", "fd00:0:0:ab00::/56",
            "2001:db8::1/128", "::/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "8000::/1",
            "::ffff:10.0.0.0/104",
        ])
    func roundTrip(text: String) throws {
        let network = try net(text)
        #expect(network.description == text)
        #expect(IPv6Network(text) == network)
        #expect(losslessRoundTrip(network))
        #expect(try IPv6Network(address: network.address, prefixLength: network.prefixLength) == network)
    }

    @Test func nonCanonicalInputPrintsCanonically() throws {
        #expect(try net("2001:0DB8:0:0:0:0:0:0/32").description == "2001:db8::/32")
        #expect(try net("FD00:0000::/8").description == "fd00::/8")
    }

    @Test(
        "rejects malformed text with a specific reason",
        arguments: [
            ("fd00::", "missing prefix length (\"/n\")"),
            ("fd00::/", "prefix length after \"/\" is empty"),
            ("fd00::/129", "prefix length 129 is larger than 128"),
            ("fd00::/08", "leading zeros are not allowed in prefix length \"08\""),
            ("fd00::/x", "prefix length \"x\" is not a decimal number"),
            ("2001:db8::/32/1", "more than one \"/\""),
            ("/64", "address is empty"),
            ("2001:db8::12345/64", "group \"12345\" has more than 4 hex digits"),
            ("fd00::1%eth0/64", "zone identifiers (\"%eth0\") are not supported; strip the zone before parsing"),
            ("10.0.0.0/8", "no \":\" found"),
            ("fd00::1/64", "fd00::1/64 has host bits set; the network is fd00::/64"),
            ("fd00:0:0:0:0:0:0:1/127", "fd00::1/127 has host bits set; the network is fd00::/127"),
            ("2001:db8::/16", "2001:db8::/16 has host bits set; the network is 2001::/16"),
        ])
    func rejects(text: String, reason: String) throws {
        let error = try #require(addressError { try IPv6Network(parsing: text) })
        #expect(error.kind == .ipv6Network)
        #expect(error.input == text)
        #expect(error.reason == reason)
        #expect(error.description == "invalid IPv6 network \(String(reflecting: text)): \(reason)")
        #expect(IPv6Network(text) == nil)
    }

    @Test(
        "non-strict parsing masks host bits",
        arguments: [
            ("fd00::1/64", "fd00::/64"),
            ("2001:db8:ffff::1/32", "2001:db8::/32"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/0", "::/0"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/65", "ffff:ffff:ffff:ffff:8000::/65"),
            ("fd00::1/128", "fd00::1/128"),
        ])
    func nonStrict(text: String, expected: String) throws {
        #expect(try IPv6Network(parsing: text, strict: false).description == expected)
    }

    @Test func memberwiseInitialisers() throws {
        let address = try addr("fd00::1")
        let error = try #require(addressError { try IPv6Network(address: address, prefixLength: 64) })
        #expect(error.input == "fd00::1/64")
        #expect(error.reason == "fd00::1/64 has host bits set; the network is fd00::/64")
        #expect(try IPv6Network(containing: address, prefixLength: 64).description == "fd00::/64")
        #expect(try IPv6Network(containing: address, prefixLength: 128).description == "fd00::1/128")
        for bad in [-1, 129, Int.min, Int.max] {
            let rangeError = try #require(addressError { try IPv6Network(containing: address, prefixLength: bad) })
            #expect(rangeError.reason == "prefix length \(bad) is outside 0...128")
            #expect(addressError { try IPv6Network(address: .any, prefixLength: bad) } != nil)
        }
    }

    // MARK: Derived properties

    @Test(
        "netmask, hostmask, lastAddress, addressCount",
        arguments: [
            ("::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", UInt64.max),
            ("fd00::/8", "ff00::", "ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", .max),
            ("2001:db8::/32", "ffff:ffff::", "::ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", .max),
            ("fd00:1:2:3::/64", "ffff:ffff:ffff:ffff::", "::ffff:ffff:ffff:ffff", "fd00:1:2:3:ffff:ffff:ffff:ffff", .max),
            ("fd00:1:2:3::/65", "ffff:ffff:ffff:ffff:8000::", "::7fff:ffff:ffff:ffff", "fd00:1:2:3:7fff:ffff:ffff:ffff", 1 << 63),
            ("2001:db8::100/120", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00", "::ff", "2001:db8::1ff", 256),
            ("2001:db8::2/127", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "::1", "2001:db8::3", 2),
            ("2001:db8::1/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::", "2001:db8::1", 1),
        ])
    func derived(text: String, netmask: String, hostmask: String, last: String, count: UInt64) throws {
        let network = try net(text)
        #expect(network.netmask.description == netmask)
        #expect(network.hostmask.description == hostmask)
        #expect(network.lastAddress.description == last)
        #expect(network.addressCount == count)
        #expect(network.hostBits == 128 - network.prefixLength)
    }

    @Test func netmaskForEveryLength() throws {
        for length in 0...128 {
            let network = try IPv6Network(containing: allOnes, prefixLength: length)
            let mask = network.netmask
            #expect(mask.high.nonzeroBitCount + mask.low.nonzeroBitCount == length)
            #expect(network.address == mask)
            #expect(network.lastAddress == allOnes)
            #expect((network.addressCount == .max) == (length <= 64))
        }
    }

    // MARK: Containment and overlap

    @Test func containsAddress() throws {
        let network = try net("2001:db8::/32")
        #expect(network.contains(try addr("2001:db8::")))
        #expect(network.contains(try addr("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")))
        #expect(!network.contains(try addr("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff")))
        #expect(!network.contains(try addr("2001:db9::")))
        #expect(IPv6Network.all.contains(IPv6Address.any))
        #expect(IPv6Network.all.contains(allOnes))
        let long = try net("fd00::100/120")
        #expect(long.contains(try addr("fd00::1ff")))
        #expect(!long.contains(try addr("fd00::200")))
        #expect(!long.contains(try addr("fd00::ff")))
    }

    @Test(
        "containment and overlap between networks",
        arguments: [
            // (a, b, a contains b, b contains a)
            ("fd00::/8", "fd00:1::/32", true, false),
            ("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", true, false),
            ("2001:db8::/32", "2001:db8::/32", true, true),
            ("fd00:0:0:ff00::/56", "fd00:0:0:ff80::/57", true, false),
            ("fd00::/8", "fc00::/7", false, true),
            ("fd00::/64", "fd00:0:0:1::/64", false, false),
            ("fd00::/65", "fd00:0:0:0:8000::/65", false, false),
            ("2001:db8::/32", "fd00::/8", false, false),
        ])
    func networkRelations(a: String, b: String, aContainsB: Bool, bContainsA: Bool) throws {
        let first = try net(a)
        let second = try net(b)
        #expect(first.contains(second) == aContainsB)
        #expect(second.contains(first) == bContainsA)
        #expect(first.overlaps(second) == (aContainsB || bContainsA))
        #expect(second.overlaps(first) == (aContainsB || bContainsA))
    }

    // MARK: Hosts and neighbours

    @Test func host() throws {
        let small = try net("2001:db8::100/120")
        #expect(small.host(0) == small.address)
        #expect(small.host(255)?.description == "2001:db8::1ff")
        #expect(small.host(256) == nil)

        let half = try net("fd00:1:2:3::/65")
        #expect(half.host((1 << 63) - 1)?.description == "fd00:1:2:3:7fff:ffff:ffff:ffff")
        #expect(half.host(1 << 63) == nil)

        let subnet64 = try net("fd00:1:2:3::/64")
        #expect(subnet64.host(.max) == subnet64.lastAddress)
        #expect(try net("fd00::/48").host(5)?.description == "fd00::5")
        #expect(IPv6Network.all.host(.max)?.description == "::ffff:ffff:ffff:ffff")
        #expect(try net("ffff:ffff:ffff:ffff::/64").host(.max) == allOnes)

        let single = try net("2001:db8::1/128")
        #expect(single.host(0) == single.address)
        #expect(single.host(1) == nil)
    }

    @Test(
        "next() and previous()",
        arguments: [
            ("fd00::/64", "fd00:0:0:1::/64" as String?, "fcff:ffff:ffff:ffff::/64" as String?),
            ("fd00::ff00/120", "fd00::1:0/120", "fd00::fe00/120"),
            ("fd00::ffff:ffff:ffff:ff00/120", "fd00:0:0:1::/120", "fd00::ffff:ffff:ffff:fe00/120"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120", nil, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fe00/120"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", nil, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/128"),
            ("::/128", "::1/128", nil),
            ("::/64", "0:0:0:1::/64", nil),
            ("8000::/1", nil, "::/1"),
            ("fd00::/8", "fe00::/8", "fc00::/8"),
            ("::/0", nil, nil),
        ])
    func neighbours(text: String, next: String?, previous: String?) throws {
        let network = try net(text)
        #expect(network.next()?.description == next)
        #expect(network.previous()?.description == previous)
        if let following = network.next() { #expect(following.previous() == network) }
        if let preceding = network.previous() { #expect(preceding.next() == network) }
    }

    @Test func supernet() throws {
        let network = try net("fd00:0:0:ab00::/56")
        #expect(network.supernet(length: 48)?.description == "fd00::/48")
        #expect(network.supernet(length: 0) == .all)
        #expect(network.supernet(length: 56) == network)
        #expect(network.supernet(length: 57) == nil)
    }

    // MARK: Subnets

    @Test(
        "subnetCount(length:)",
        arguments: [
            ("fd00::/56", 64, UInt64(256) as UInt64?),
            ("fd00::/56", 56, 1),
            ("fd00::/56", 55, 0),
            ("fd00::/56", 129, 0),
            ("fd00::/8", 71, 1 << 63),
            ("fd00::/8", 72, nil),
            ("::/0", 128, nil),
            ("::/0", 64, nil),
            ("::/0", 63, 1 << 63),
            ("::/0", 0, 1),
            ("2001:db8::/32", 64, 4_294_967_296),
            ("2001:db8::1/128", 128, 1),
        ])
    func subnetCount(text: String, length: Int, expected: UInt64?) throws {
        #expect(try net(text).subnetCount(length: length) == expected)
    }

    @Test func splitSlash56IntoSlash64() throws {
        let parent = try net("fd00:0:0:ab00::/56")
        let sequence = try parent.subnets(length: 64)
        #expect(sequence.count == 256)
        let subnets = Array(sequence)
        #expect(subnets.count == 256)
        for (index, subnet) in subnets.enumerated() {
            #expect(subnet.description == "fd00:0:0:\(String(0xAB00 + index, radix: 16))::/64")
            #expect(parent.subnet(at: UInt64(index), length: 64) == subnet)
            #expect(parent.index(of: subnet) == UInt64(index))
            #expect(parent.contains(subnet))
        }
        for (a, b) in zip(subnets, subnets.dropFirst()) {
            #expect(a.next() == b)
            #expect(a.address < b.address)
        }
        #expect(parent.subnet(at: 256, length: 64) == nil)
        #expect(subnets.last?.lastAddress == parent.lastAddress)
    }

    @Test func splitAcrossTheHalfBoundary() throws {
        #expect(
            Array(try net("fd00::/63").subnets(length: 64)).map(\.description)
                == ["fd00::/64", "fd00:0:0:1::/64"])
        #expect(
            Array(try net("fd00::ffff:ffff:ffff:fe00/119").subnets(length: 120)).map(\.description)
                == ["fd00::ffff:ffff:ffff:fe00/120", "fd00::ffff:ffff:ffff:ff00/120"])
        let parent = try net("fd00::/120")
        let hosts = Array(try parent.subnets(length: 128))
        #expect(hosts.count == 256)
        #expect(hosts.enumerated().allSatisfy { parent.index(of: $0.element) == UInt64($0.offset) })
    }

    @Test func hugeSplitsAreLazy() throws {
        let everything = try IPv6Network.all.subnets(length: 128)
        #expect(everything.count == nil)
        #expect(Array(everything.prefix(3)).map(\.description) == ["::/128", "::1/128", "::2/128"])

        let sixtyFours = try net("fd00::/8").subnets(length: 64)
        #expect(sixtyFours.count == 1 << 56)
        var iterator = sixtyFours.makeIterator()
        #expect(iterator.next()?.description == "fd00::/64")
        #expect(iterator.next()?.description == "fd00:0:0:1::/64")
    }

    @Test func iterationStopsAtTheTopWithoutWrapping() throws {
        let hosts = Array(try net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120").subnets(length: 128))
        #expect(hosts.count == 256)
        #expect(hosts.last?.address == allOnes)
        #expect(Array(try IPv6Network.all.subnets(length: 1)).map(\.description) == ["::/1", "8000::/1"])
        #expect(Array(try IPv6Network.all.subnets(length: 0)) == [.all])
        #expect(Array(try net("fd00::/56").subnets(length: 56)) == [try net("fd00::/56")])
    }

    @Test func subnetsRejectsBadLengths() throws {
        let parent = try net("fd00::/56")
        let short = try #require(addressError { try parent.subnets(length: 48) })
        #expect(short.description == #"invalid IPv6 network "fd00::/56": subnet length 48 is outside 56...128"#)
        #expect(addressError { try parent.subnets(length: 129) } != nil)
    }

    @Test func subnetAtEdges() throws {
        #expect(IPv6Network.all.subnet(at: 5, length: 128)?.description == "::5/128")
        #expect(IPv6Network.all.subnet(at: 1, length: 64)?.description == "0:0:0:1::/64")
        #expect(IPv6Network.all.subnet(at: .max, length: 64)?.description == "ffff:ffff:ffff:ffff::/64")
        #expect(IPv6Network.all.subnet(at: 0, length: 0) == .all)
        #expect(IPv6Network.all.subnet(at: 1, length: 0) == nil)

        let ula = try net("fd00::/8")
        #expect(ula.subnet(at: 1, length: 72)?.description == "fd00::100:0:0:0/72")
        #expect(ula.subnet(at: .max, length: 72)?.description == "fdff:ffff:ffff:ffff:ff00::/72")

        let doc = try net("2001:db8::/32")
        #expect(doc.subnet(at: 0xABCD, length: 48)?.description == "2001:db8:abcd::/48")
        #expect(doc.subnet(at: 7, length: 64)?.description == "2001:db8:0:7::/64")
        #expect(doc.subnet(at: 3, length: 31) == nil)
        #expect(doc.subnet(at: 0, length: 129) == nil)
        #expect(doc.subnet(at: 1 << 32, length: 64) == nil)
    }

    @Test(
        "index(of:)",
        arguments: [
            ("::/0", "::1/128", UInt64(1) as UInt64?),
            ("::/0", "::ffff:ffff:ffff:ffff/128", .max),
            ("::/0", "0:0:0:1::/128", nil),
            ("::/0", "ffff::/128", nil),
            ("::/0", "8000::/1", 1),
            ("::/0", "ffff:ffff:ffff:ffff::/64", .max),
            ("fd00::/8", "fd00::/8", 0),
            ("fd00::/8", "fdff:ffff:ffff:ffff:ff00::/72", .max),
            ("fd00::/8", "fd00::1:0/112", 1),
            ("fd00::/8", "fd00:0:0:1::/112", 1 << 48),
            ("2001:db8::/32", "2001:db8:abcd::/48", 0xABCD),
            ("2001:db8::/32", "2001:db8:0:7::/64", 7),
            ("2001:db8::/32", "2001:db9::/48", nil),
            ("fd00::/56", "fd00::/48", nil),
            ("fd00::/64", "fd00::ff/128", 255),
        ])
    func indexOf(parent: String, child: String, expected: UInt64?) throws {
        let parentNetwork = try net(parent)
        let childNetwork = try net(child)
        #expect(parentNetwork.index(of: childNetwork) == expected)
        if let expected {
            #expect(parentNetwork.subnet(at: expected, length: childNetwork.prefixLength) == childNetwork)
        }
    }

    // MARK: Protocols

    @Test func hashableAndEquatable() throws {
        let a = try net("fd00::/8")
        #expect(a == (try IPv6Network(containing: addr("fd12:3456::1"), prefixLength: 8)))
        #expect(a != (try net("fd00::/9")))
        #expect(Set([a, try net("FD00::/8"), try net("fd00::/16")]).count == 2)
    }

    @Test func codableRoundTrip() throws {
        let network = try net("2001:db8:0:0:1::/80")
        let json = try jsonText(network)
        #expect(json == #"{"value":"2001:db8:0:0:1::/80"}"#)
        #expect(try decodeJSON(IPv6Network.self, from: json) == network)
        #expect(try decodeJSON(IPv6Network.self, from: #"{"value":"2001:0DB8::/32"}"#).description == "2001:db8::/32")
    }

    @Test func codableRejectsBadText() throws {
        #expect(
            try dataCorruptedDescription(IPv6Network.self, decoding: "fd00::1/64")
                == #"invalid IPv6 network "fd00::1/64": fd00::1/64 has host bits set; the network is fd00::/64"#)
    }
}
