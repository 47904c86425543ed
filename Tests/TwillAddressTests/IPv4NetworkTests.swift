import Testing

@testable import TwillAddress

/// Parses a network that the test author knows is valid.
private func net(_ text: String) throws(AddressError) -> IPv4Network {
    try IPv4Network(parsing: text)
}

/// Parses an address that the test author knows is valid.
private func addr(_ text: String) throws(AddressError) -> IPv4Address {
    try IPv4Address(parsing: text)
}

@Suite("IPv4Network")
struct IPv4NetworkTests {
    // MARK: Parsing and formatting

    @Test(
        "parse/format round trip",
        arguments: [
            "0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
            "203.0.113.128/25", "203.0.113.7/32", "255.255.255.255/32", "0.0.0.0/32", "10.0.0.0/31",
        ])
    func roundTrip(text: String) throws {
        let network = try net(text)
        #expect(network.description == text)
        #expect(IPv4Network(text) == network)
        #expect(losslessRoundTrip(network))
        #expect(try IPv4Network(address: network.address, prefixLength: network.prefixLength) == network)
    }

    @Test(
        "rejects malformed text with a specific reason",
        arguments: [
            ("10.0.0.0", "missing prefix length (\"/n\")"),
            ("", "missing prefix length (\"/n\")"),
            ("10.0.0.0/", "prefix length after \"/\" is empty"),
            ("10.0.0.0/33", "prefix length 33 is larger than 32"),
            ("10.0.0.0/99999999999999999999", "prefix length 99999999999999999999 is larger than 32"),
            ("10.0.0.0/08", "leading zeros are not allowed in prefix length \"08\""),
            ("10.0.0.0/00", "leading zeros are not allowed in prefix length \"00\""),
            ("10.0.0.0/-1", "prefix length \"-1\" is not a decimal number"),
            ("10.0.0.0/+8", "prefix length \"+8\" is not a decimal number"),
            ("10.0.0.0/ 8", "prefix length \" 8\" is not a decimal number"),
            ("10.0.0.0/8 ", "prefix length \"8 \" is not a decimal number"),
            ("10.0.0.0/8/8", "more than one \"/\""),
            ("10.0.0.0/255.0.0.0", "prefix length \"255.0.0.0\" is not a decimal number"),
            ("/8", "address is empty"),
            ("10.0.0.256/24", "octet 256 is larger than 255"),
            ("010.0.0.0/8", "leading zeros are not allowed in \"010\""),
            (" 10.0.0.0/8", "whitespace (\" \") is not allowed"),
            ("10.0.0/24", "expected 4 octets, found 3"),
            ("10.0.0.5/24", "10.0.0.5/24 has host bits set; the network is 10.0.0.0/24"),
            ("10.0.0.1/0", "10.0.0.1/0 has host bits set; the network is 0.0.0.0/0"),
            ("198.19.0.0/15", "198.19.0.0/15 has host bits set; the network is 198.18.0.0/15"),
        ])
    func rejects(text: String, reason: String) throws {
        let error = try #require(addressError { try IPv4Network(parsing: text) })
        #expect(error.kind == .ipv4Network)
        #expect(error.input == text)
        #expect(error.reason == reason)
        #expect(error.description == "invalid IPv4 network \(String(reflecting: text)): \(reason)")
        #expect(IPv4Network(text) == nil)
    }

    @Test func hostBitsErrorDescription() throws {
        let error = try #require(addressError { try IPv4Network(parsing: "10.0.0.5/24") })
        #expect(error.description == #"invalid IPv4 network "10.0.0.5/24": 10.0.0.5/24 has host bits set; the network is 10.0.0.0/24"#)
    }

    @Test(
        "non-strict parsing masks host bits",
        arguments: [
            ("10.0.0.5/24", "10.0.0.0/24"),
            ("203.0.113.77/0", "0.0.0.0/0"),
            ("198.19.4.5/15", "198.18.0.0/15"),
            ("255.255.255.255/31", "255.255.255.254/31"),
            ("10.0.0.7/32", "10.0.0.7/32"),
        ])
    func nonStrict(text: String, expected: String) throws {
        #expect(try IPv4Network(parsing: text, strict: false).description == expected)
    }

    @Test func nonStrictStillRejectsBadPrefix() throws {
        let error = try #require(addressError { try IPv4Network(parsing: "10.0.0.5/33", strict: false) })
        #expect(error.reason == "prefix length 33 is larger than 32")
    }

    @Test func memberwiseInitialisers() throws {
        let address = try addr("10.0.0.5")
        let error = try #require(addressError { try IPv4Network(address: address, prefixLength: 24) })
        #expect(error.input == "10.0.0.5/24")
        #expect(error.reason == "10.0.0.5/24 has host bits set; the network is 10.0.0.0/24")
        #expect(try IPv4Network(containing: address, prefixLength: 24).description == "10.0.0.0/24")
        #expect(try IPv4Network(containing: address, prefixLength: 0).description == "0.0.0.0/0")
        #expect(try IPv4Network(containing: address, prefixLength: 32).description == "10.0.0.5/32")
        for bad in [-1, 33, Int.min, Int.max] {
            let rangeError = try #require(addressError { try IPv4Network(containing: address, prefixLength: bad) })
            #expect(rangeError.reason == "prefix length \(bad) is outside 0...32")
            #expect(addressError { try IPv4Network(address: .any, prefixLength: bad) } != nil)
        }
    }

    // MARK: Derived properties

    @Test(
        "netmask, hostmask, broadcast, addressCount",
        arguments: [
            ("0.0.0.0/0", "0.0.0.0", "255.255.255.255", "255.255.255.255", UInt64(4_294_967_296)),
            ("10.0.0.0/8", "255.0.0.0", "0.255.255.255", "10.255.255.255", 16_777_216),
            ("198.18.0.0/15", "255.254.0.0", "0.1.255.255", "198.19.255.255", 131_072),
            ("198.51.100.0/24", "255.255.255.0", "0.0.0.255", "198.51.100.255", 256),
            ("203.0.113.128/25", "255.255.255.128", "0.0.0.127", "203.0.113.255", 128),
            ("10.0.0.2/31", "255.255.255.254", "0.0.0.1", "10.0.0.3", 2),
            ("203.0.113.7/32", "255.255.255.255", "0.0.0.0", "203.0.113.7", 1),
            ("255.255.255.255/32", "255.255.255.255", "0.0.0.0", "255.255.255.255", 1),
        ])
    func derived(text: String, netmask: String, hostmask: String, broadcast: String, count: UInt64) throws {
        let network = try net(text)
        #expect(network.netmask.description == netmask)
        #expect(network.hostmask.description == hostmask)
        #expect(network.broadcast.description == broadcast)
        #expect(network.addressCount == count)
        #expect(network.hostBits == 32 - network.prefixLength)
    }

    @Test func netmaskForEveryLength() throws {
        for length in 0...32 {
            let network = try IPv4Network(containing: .allOnes, prefixLength: length)
            #expect(network.netmask.rawValue.nonzeroBitCount == length)
            #expect(network.netmask.rawValue.leadingZeroBitCount == (length == 0 ? 32 : 0))
            #expect(network.address == network.netmask)
            #expect(network.broadcast == .allOnes)
            #expect(network.addressCount == UInt64(1) << UInt64(32 - length))
        }
    }

    // MARK: Containment and overlap

    @Test func containsAddress() throws {
        let network = try net("198.51.100.0/24")
        #expect(network.contains(try addr("198.51.100.0")))
        #expect(network.contains(try addr("198.51.100.255")))
        #expect(!network.contains(try addr("198.51.99.255")))
        #expect(!network.contains(try addr("198.51.101.0")))

        #expect(IPv4Network.all.contains(IPv4Address.any))
        #expect(IPv4Network.all.contains(IPv4Address.allOnes))
        let single = try net("10.0.0.7/32")
        #expect(single.contains(try addr("10.0.0.7")))
        #expect(!single.contains(try addr("10.0.0.6")))
        #expect(!single.contains(try addr("10.0.0.8")))
    }

    @Test(
        "containment and overlap between networks",
        arguments: [
            // (outer, inner, outer contains inner, overlap)
            ("10.0.0.0/8", "10.1.0.0/16", true, true),
            ("10.0.0.0/8", "10.0.0.0/8", true, true),
            ("0.0.0.0/0", "203.0.113.0/24", true, true),
            ("0.0.0.0/0", "255.255.255.255/32", true, true),
            ("198.18.0.0/15", "198.19.255.255/32", true, true),
            ("198.18.0.0/15", "198.20.0.0/32", false, false),
            ("10.0.0.0/24", "10.0.1.0/24", false, false),
            ("198.51.100.0/25", "198.51.100.128/25", false, false),
            ("10.0.0.0/8", "198.51.100.0/24", false, false),
        ])
    func networkRelations(outer: String, inner: String, contains: Bool, overlaps: Bool) throws {
        let a = try net(outer)
        let b = try net(inner)
        #expect(a.contains(b) == contains)
        #expect(a.overlaps(b) == overlaps)
        #expect(b.overlaps(a) == overlaps)
        // The reverse direction only holds for identical networks.
        #expect(b.contains(a) == (a == b))
    }

    // MARK: Hosts and neighbours

    @Test func host() throws {
        let network = try net("198.51.100.0/24")
        #expect(network.host(0) == network.address)
        #expect(network.host(1)?.description == "198.51.100.1")
        #expect(network.host(255) == network.broadcast)
        #expect(network.host(256) == nil)
        #expect(network.host(.max) == nil)

        let single = try net("203.0.113.7/32")
        #expect(single.host(0) == single.address)
        #expect(single.host(1) == nil)
    }

    @Test func hostAtTheTopOfTheAddressSpace() throws {
        let top = try net("255.255.255.0/24")
        #expect(top.host(255) == .allOnes)
        #expect(top.host(256) == nil)

        #expect(IPv4Network.all.host(0) == .any)
        #expect(IPv4Network.all.host(4_294_967_295) == .allOnes)
        #expect(IPv4Network.all.host(4_294_967_296) == nil)
    }

    @Test(
        "next() and previous()",
        arguments: [
            ("10.0.0.0/24", "10.0.1.0/24" as String?, "9.255.255.0/24" as String?),
            ("10.255.255.0/24", "11.0.0.0/24", "10.255.254.0/24"),
            ("198.18.0.0/15", "198.20.0.0/15", "198.16.0.0/15"),
            ("10.0.0.0/8", "11.0.0.0/8", "9.0.0.0/8"),
            ("255.255.255.0/24", nil, "255.255.254.0/24"),
            ("255.255.255.255/32", nil, "255.255.255.254/32"),
            ("0.0.0.0/32", "0.0.0.1/32", nil),
            ("0.0.0.0/24", "0.0.1.0/24", nil),
            ("128.0.0.0/1", nil, "0.0.0.0/1"),
            ("0.0.0.0/0", nil, nil),
        ])
    func neighbours(text: String, next: String?, previous: String?) throws {
        let network = try net(text)
        #expect(network.next()?.description == next)
        #expect(network.previous()?.description == previous)
        // Stepping forward then back (and back then forward) returns to the start.
        if let following = network.next() { #expect(following.previous() == network) }
        if let preceding = network.previous() { #expect(preceding.next() == network) }
    }

    @Test func supernet() throws {
        let network = try net("198.51.100.128/25")
        #expect(network.supernet(length: 24)?.description == "198.51.100.0/24")
        #expect(network.supernet(length: 0) == .all)
        #expect(network.supernet(length: 25) == network)
        #expect(network.supernet(length: 26) == nil)
        #expect(network.supernet(length: -1) == nil)
    }

    // MARK: Subnets

    @Test(
        "subnetCount(length:)",
        arguments: [
            ("10.0.0.0/16", 24, UInt64(256)),
            ("10.0.0.0/16", 16, 1),
            ("10.0.0.0/16", 32, 65_536),
            ("10.0.0.0/16", 15, 0),
            ("10.0.0.0/16", 33, 0),
            ("10.0.0.0/16", -1, 0),
            ("0.0.0.0/0", 32, 4_294_967_296),
            ("0.0.0.0/0", 0, 1),
            ("0.0.0.0/0", 1, 2),
            ("203.0.113.7/32", 32, 1),
        ])
    func subnetCount(text: String, length: Int, expected: UInt64) throws {
        #expect(try net(text).subnetCount(length: length) == expected)
    }

    @Test func splitSlash16IntoSlash24() throws {
        let parent = try net("10.0.0.0/16")
        let sequence = try parent.subnets(length: 24)
        #expect(sequence.count == 256)
        let subnets = Array(sequence)
        #expect(subnets.count == 256)
        for (index, subnet) in subnets.enumerated() {
            #expect(subnet.description == "10.0.\(index).0/24")
            #expect(parent.subnet(at: UInt64(index), length: 24) == subnet)
            #expect(parent.index(of: subnet) == UInt64(index))
            #expect(parent.contains(subnet))
        }
        // Consecutive and ordered: each is the next() of the one before.
        for (a, b) in zip(subnets, subnets.dropFirst()) {
            #expect(a.next() == b)
            #expect(a.address < b.address)
        }
        #expect(parent.subnet(at: 256, length: 24) == nil)
        #expect(subnets.first?.address == parent.address)
        #expect(subnets.last?.broadcast == parent.broadcast)
    }

    @Test func splitIntoEveryLength() throws {
        let parent = try net("198.51.100.0/24")
        for length in 24...32 {
            let subnets = Array(try parent.subnets(length: length))
            #expect(UInt64(subnets.count) == parent.subnetCount(length: length))
            #expect(subnets.allSatisfy { $0.prefixLength == length && parent.contains($0) })
            #expect(subnets.map(\.address.rawValue) == subnets.map(\.address.rawValue).sorted())
            #expect(Set(subnets).count == subnets.count)
        }
    }

    @Test func largeSplitsAreLazy() throws {
        // A /8 into /32s has 16 million elements; creating and starting it must be instant.
        let sequence = try net("10.0.0.0/8").subnets(length: 32)
        #expect(sequence.count == 16_777_216)
        var iterator = sequence.makeIterator()
        #expect(iterator.next()?.description == "10.0.0.0/32")
        #expect(iterator.next()?.description == "10.0.0.1/32")
        #expect(Array(sequence.prefix(3)).map(\.description) == ["10.0.0.0/32", "10.0.0.1/32", "10.0.0.2/32"])

        let everything = try IPv4Network.all.subnets(length: 32)
        #expect(everything.count == 4_294_967_296)
        #expect(everything.first(where: { _ in true })?.description == "0.0.0.0/32")
        #expect(everything.dropFirst(1000).first(where: { _ in true })?.description == "0.0.3.232/32")
    }

    @Test func fullIterationOfAMediumSplit() throws {
        // 131072 elements: exercises the iterator over many steps without building an array.
        var expected = try addr("198.18.0.0").rawValue
        var count = 0
        for subnet in try net("198.18.0.0/15").subnets(length: 32) {
            #expect(subnet.address.rawValue == expected)
            expected &+= 1
            count += 1
        }
        #expect(count == 131_072)
    }

    @Test func iterationStopsAtTheTopWithoutWrapping() throws {
        let subnets = Array(try net("255.255.255.0/24").subnets(length: 32))
        #expect(subnets.count == 256)
        #expect(subnets.last?.address == .allOnes)
        #expect(Array(try IPv4Network.all.subnets(length: 1)).map(\.description) == ["0.0.0.0/1", "128.0.0.0/1"])
        #expect(Array(try IPv4Network.all.subnets(length: 0)) == [.all])
    }

    @Test func subnetsRejectsBadLengths() throws {
        let parent = try net("10.0.0.0/16")
        let short = try #require(addressError { try parent.subnets(length: 8) })
        #expect(short.description == #"invalid IPv4 network "10.0.0.0/16": subnet length 8 is outside 16...32"#)
        #expect(addressError { try parent.subnets(length: 33) } != nil)
        #expect(addressError { try parent.subnets(length: 16) } == nil)
    }

    @Test func subnetAtEdges() throws {
        #expect(IPv4Network.all.subnet(at: 4_294_967_295, length: 32)?.description == "255.255.255.255/32")
        #expect(IPv4Network.all.subnet(at: 4_294_967_296, length: 32) == nil)
        #expect(IPv4Network.all.subnet(at: 0, length: 0) == .all)
        #expect(IPv4Network.all.subnet(at: 1, length: 0) == nil)
        let parent = try net("10.0.0.0/16")
        #expect(parent.subnet(at: 0, length: 15) == nil)
        #expect(parent.subnet(at: 0, length: 33) == nil)
        #expect(parent.subnet(at: 3, length: 18)?.description == "10.0.192.0/18")
    }

    @Test func indexOf() throws {
        let parent = try net("10.0.0.0/16")
        #expect(parent.index(of: parent) == 0)
        #expect(parent.index(of: try net("10.0.255.255/32")) == 65_535)
        #expect(parent.index(of: try net("10.0.128.0/17")) == 1)
        #expect(parent.index(of: try net("10.1.0.0/24")) == nil)
        #expect(parent.index(of: try net("10.0.0.0/8")) == nil)
        #expect(IPv4Network.all.index(of: try net("255.255.255.255/32")) == 4_294_967_295)
        #expect(IPv4Network.all.index(of: try net("203.0.113.0/24")) == 0xCB_0071)
    }

    // MARK: Protocols

    @Test func hashableAndEquatable() throws {
        let a = try net("10.0.0.0/8")
        #expect(a == (try IPv4Network(containing: addr("10.9.8.7"), prefixLength: 8)))
        #expect(a != (try net("10.0.0.0/9")))
        #expect(Set([a, try net("10.0.0.0/8"), try net("10.0.0.0/16")]).count == 2)
    }

    @Test func codableRoundTrip() throws {
        let network = try net("198.18.0.0/15")
        let json = try jsonText(network)
        #expect(json == #"{"value":"198.18.0.0/15"}"#)
        #expect(try decodeJSON(IPv4Network.self, from: json) == network)
        #expect(
            try decodeJSON([IPv4Network].self, from: #"{"value":["10.0.0.0/8","0.0.0.0/0"]}"#)
                == [try net("10.0.0.0/8"), .all])
    }

    @Test func codableRejectsBadText() throws {
        #expect(
            try dataCorruptedDescription(IPv4Network.self, decoding: "10.0.0.5/24")
                == #"invalid IPv4 network "10.0.0.5/24": 10.0.0.5/24 has host bits set; the network is 10.0.0.0/24"#)
        #expect(
            try dataCorruptedDescription(IPv4Network.self, decoding: "10.0.0.0")
                == #"invalid IPv4 network "10.0.0.0": missing prefix length ("/n")"#)
    }
}
