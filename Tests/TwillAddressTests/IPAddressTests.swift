import Testing

@testable import TwillAddress

@Suite("IPAddress")
struct IPAddressTests {
    @Test(
        "chooses the family by the presence of \":\"",
        arguments: [
            ("10.0.0.1", "10.0.0.1", true),
            ("203.0.113.255", "203.0.113.255", true),
            ("2001:0db8::1", "2001:db8::1", false),
            ("::ffff:198.51.100.1", "::ffff:198.51.100.1", false),
            ("::", "::", false),
        ])
    func parses(text: String, canonical: String, isV4: Bool) throws {
        let address = try IPAddress(parsing: text)
        #expect(address.description == canonical)
        #expect((address.v4 != nil) == isV4)
        #expect((address.v6 != nil) == !isV4)
        #expect(IPAddress(text) == address)
        #expect(losslessRoundTrip(address))
    }

    @Test func casesWrapTheFamilyTypes() throws {
        #expect(try IPAddress(parsing: "10.0.0.1") == .v4(IPv4Address(10, 0, 0, 1)))
        #expect(try IPAddress(parsing: "::1") == .v6(.loopback))
    }

    @Test(
        "rejections keep the family reason but say \"IP address\"",
        arguments: [
            ("10.0.0.256", "octet 256 is larger than 255"),
            ("", "address is empty"),
            ("1.2.3", "expected 4 octets, found 3"),
            ("fe80::1%eth0", "zone identifiers (\"%eth0\") are not supported; strip the zone before parsing"),
            ("2001:db8::1::1", "\"::\" may appear only once"),
            ("fd00::/8", "\"/\" is not allowed (is this a network?)"),
        ])
    func rejects(text: String, reason: String) throws {
        let error = try #require(addressError { try IPAddress(parsing: text) })
        #expect(error.kind == .ipAddress)
        #expect(error.input == text)
        #expect(error.reason == reason)
        #expect(error.description == "invalid IP address \(String(reflecting: text)): \(reason)")
        #expect(IPAddress(text) == nil)
    }

    @Test func classification() throws {
        #expect(try IPAddress(parsing: "127.0.0.1").isLoopback)
        #expect(try IPAddress(parsing: "::1").isLoopback)
        #expect(try IPAddress(parsing: "224.0.0.0").isMulticast)
        #expect(try IPAddress(parsing: "ff00::").isMulticast)
        #expect(try IPAddress(parsing: "0.0.0.0").isUnspecified)
        #expect(try IPAddress(parsing: "::").isUnspecified)
        #expect(!(try IPAddress(parsing: "10.0.0.1")).isLoopback)
        #expect(!(try IPAddress(parsing: "fd00::1")).isMulticast)
    }

    @Test func orderingPutsIPv4First() throws {
        let texts = ["fd00::1", "203.0.113.1", "::", "10.0.0.1", "255.255.255.255"]
        let sorted = try texts.map { text throws(AddressError) in try IPAddress(parsing: text) }.sorted()
        #expect(sorted.map(\.description) == ["10.0.0.1", "203.0.113.1", "255.255.255.255", "::", "fd00::1"])
    }

    @Test func codableRoundTrip() throws {
        let addresses = try ["10.0.0.1", "2001:db8::1"].map { text throws(AddressError) in try IPAddress(parsing: text) }
        let json = try jsonText(addresses)
        #expect(json == #"{"value":["10.0.0.1","2001:db8::1"]}"#)
        #expect(try decodeJSON([IPAddress].self, from: json) == addresses)
    }

    @Test func codableRejectsBadText() throws {
        #expect(
            try dataCorruptedDescription(IPAddress.self, decoding: "10.0.0.256")
                == #"invalid IP address "10.0.0.256": octet 256 is larger than 255"#)
    }
}
