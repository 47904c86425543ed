import Testing

@testable import TwillAddress

@Suite("IPv4Address")
struct IPv4AddressTests {
    // MARK: Parsing and formatting

    @Test(
        "parse/format round trip",
        arguments: [
            ("0.0.0.0", UInt32(0)),
            ("255.255.255.255", 0xFFFF_FFFF),
            ("10.0.0.1", 0x0A00_0001),
            ("10.255.0.9", 0x0AFF_0009),
            ("198.18.0.1", 0xC612_0001),
            ("198.19.255.254", 0xC613_FFFE),
            ("198.51.100.200", 0xC633_64C8),
            ("203.0.113.99", 0xCB00_7163),
            ("127.0.0.1", 0x7F00_0001),
        ])
    func roundTrip(text: String, raw: UInt32) throws {
        let address = try IPv4Address(parsing: text)
        #expect(address.rawValue == raw)
        #expect(address.description == text)
        #expect(IPv4Address(text) == address)
        #expect(IPv4Address(rawValue: raw) == address)
        #expect(losslessRoundTrip(address))
    }

    @Test func octetInitialiserUsesNetworkOrder() {
        #expect(IPv4Address(10, 0, 0, 1).rawValue == 0x0A00_0001)
        #expect(IPv4Address(10, 0, 0, 1).octets == [10, 0, 0, 1])
        #expect(IPv4Address(203, 0, 113, 9).description == "203.0.113.9")
    }

    @Test("every octet value in every position round trips", arguments: 0...255)
    func everyOctet(value: Int) throws {
        let octet = UInt8(value)
        let placements: [IPv4Address] = [
            IPv4Address(octet, 0, 0, 0), IPv4Address(10, octet, 0, 0),
            IPv4Address(10, 0, octet, 0), IPv4Address(10, 0, 0, octet),
        ]
        for address in placements {
            #expect(try IPv4Address(parsing: address.description) == address)
        }
        #expect(IPv4Address(10, 0, 0, octet).description == "10.0.0.\(value)")
    }

    @Test func everyDecimalSpellingOfTheLastOctet() {
        // 0...999 plus zero-padded forms: only canonical 0...255 may be accepted.
        for number in 0...999 {
            for text in ["\(number)", "0\(number)", "00\(number)"] {
                let parsed = IPv4Address("10.0.0.\(text)")
                let shouldAccept = number <= 255 && text == "\(number)"
                #expect((parsed != nil) == shouldAccept, "10.0.0.\(text)")
                if let parsed { #expect(parsed.rawValue & 0xFF == UInt32(number)) }
            }
        }
    }

    // MARK: Rejections

    @Test(
        "rejects malformed text with a specific reason",
        arguments: [
            ("", "address is empty"),
            ("1.2.3", "expected 4 octets, found 3"),
            ("1.2.3.4.5", "expected 4 octets, found 5"),
            ("10", "expected 4 octets, found 1"),
            ("256.0.0.1", "octet 256 is larger than 255"),
            ("10.0.0.256", "octet 256 is larger than 255"),
            ("10.0.0.1000", "octet 1000 is larger than 255"),
            ("10.0.0.99999999999999999999999", "octet 99999999999999999999999 is larger than 255"),
            ("01.2.3.4", "leading zeros are not allowed in \"01\""),
            ("10.0.0.010", "leading zeros are not allowed in \"010\""),
            ("10.00.0.1", "leading zeros are not allowed in \"00\""),
            (" 1.2.3.4", "whitespace (\" \") is not allowed"),
            ("1.2.3.4 ", "whitespace (\" \") is not allowed"),
            ("1.2.3.4\n", "whitespace (\"\\n\") is not allowed"),
            ("10.0.\t0.1", "whitespace (\"\\t\") is not allowed"),
            ("+1.2.3.4", "signs (\"+\") are not allowed"),
            ("-1.2.3.4", "signs (\"-\") are not allowed"),
            ("10.0.0.-1", "signs (\"-\") are not allowed"),
            ("1..2.3", "empty octet between dots"),
            (".1.2.3", "address must not start with \".\""),
            ("1.2.3.", "address must not end with \".\""),
            ("1.2.3.4.", "address must not end with \".\""),
            ("...", "address must not start with \".\""),
            ("a.b.c.d", "unexpected character \"a\""),
            ("0x0A.0.0.1", "unexpected character \"x\""),
            ("10.0.0.1e", "unexpected character \"e\""),
            ("１0.0.0.1", "unexpected character \"１\""),
            ("10.0.0.0/8", "\"/\" is not allowed (is this a network?)"),
            ("::1", "\":\" is not allowed (is this an IPv6 address?)"),
        ])
    func rejects(text: String, reason: String) throws {
        let error = try #require(addressError { try IPv4Address(parsing: text) })
        #expect(error.kind == .ipv4Address)
        #expect(error.input == text)
        #expect(error.reason == reason)
        #expect(error.description == "invalid IPv4 address \(String(reflecting: text)): \(reason)")
        #expect(IPv4Address(text) == nil)
    }

    // MARK: Octets

    @Test func octetsRoundTrip() throws {
        let address = IPv4Address(198, 51, 100, 17)
        #expect(address.octets == [198, 51, 100, 17])
        #expect(try IPv4Address(octets: address.octets) == address)
        #expect(try IPv4Address(octets: [UInt8]([10, 0, 0, 1])[...]) == IPv4Address(10, 0, 0, 1))
    }

    @Test("init(octets:) demands exactly four", arguments: [0, 3, 5, 16])
    func octetsWrongCount(count: Int) throws {
        let bytes = [UInt8](repeating: 10, count: count)
        let error = try #require(addressError { try IPv4Address(octets: bytes) })
        #expect(error.reason == "expected 4 octets, found \(count)")
        #expect(error.input == "\(bytes)")
    }

    // MARK: Arithmetic

    @Test(
        "advanced(by:)",
        arguments: [
            ("10.0.0.255", Int64(1), "10.0.1.0" as String?),
            ("10.0.1.0", -1, "10.0.0.255"),
            ("10.0.0.1", 0, "10.0.0.1"),
            ("0.0.0.0", Int64(UInt32.max), "255.255.255.255"),
            ("255.255.255.255", -Int64(UInt32.max), "0.0.0.0"),
            ("255.255.255.254", 1, "255.255.255.255"),
            ("255.255.255.255", 1, nil),
            ("0.0.0.0", -1, nil),
            ("0.0.0.0", Int64(UInt32.max) + 1, nil),
            ("10.0.0.1", .max, nil),
            ("10.0.0.1", .min, nil),
            ("255.255.255.255", .max, nil),
        ])
    func advanced(start: String, by n: Int64, expected: String?) throws {
        let address = try IPv4Address(parsing: start)
        #expect(address.advanced(by: n)?.description == expected)
    }

    // MARK: Classification

    @Test func classification() throws {
        #expect(IPv4Address.any.isUnspecified)
        #expect(IPv4Address.any.description == "0.0.0.0")
        #expect(!IPv4Address(10, 0, 0, 0).isUnspecified)

        #expect(IPv4Address.loopback.isLoopback)
        #expect(IPv4Address(127, 0, 0, 0).isLoopback)
        #expect(IPv4Address(127, 255, 255, 255).isLoopback)
        #expect(!IPv4Address(126, 255, 255, 255).isLoopback)
        #expect(!IPv4Address(128, 0, 0, 0).isLoopback)

        #expect(IPv4Address(224, 0, 0, 0).isMulticast)
        #expect(IPv4Address(239, 255, 255, 255).isMulticast)
        #expect(!IPv4Address(223, 255, 255, 255).isMulticast)
        #expect(!IPv4Address(240, 0, 0, 0).isMulticast)

        #expect(IPv4Address(169, 254, 0, 0).isLinkLocal)
        #expect(IPv4Address(169, 254, 255, 255).isLinkLocal)
        #expect(!IPv4Address(169, 255, 0, 0).isLinkLocal)

        #expect(IPv4Address(10, 0, 0, 0).isPrivate)
        #expect(IPv4Address(10, 255, 255, 255).isPrivate)
        #expect(IPv4Address(172, 16, 0, 0).isPrivate)
        #expect(IPv4Address(172, 31, 255, 255).isPrivate)
        #expect(!IPv4Address(172, 32, 0, 0).isPrivate)
        #expect(IPv4Address(192, 168, 0, 0).isPrivate)
        #expect(!IPv4Address(198, 51, 100, 1).isPrivate)
        #expect(!IPv4Address(11, 0, 0, 0).isPrivate)

        #expect(IPv4Address.allOnes.description == "255.255.255.255")
    }

    // MARK: Protocols

    @Test func ordering() throws {
        let texts = ["203.0.113.1", "10.0.0.2", "255.255.255.255", "0.0.0.0", "10.0.0.10", "198.51.100.0"]
        let sorted = try texts.map { text throws(AddressError) in try IPv4Address(parsing: text) }.sorted()
        #expect(sorted.map(\.description) == ["0.0.0.0", "10.0.0.2", "10.0.0.10", "198.51.100.0", "203.0.113.1", "255.255.255.255"])
    }

    @Test func hashable() {
        let set: Set = [IPv4Address(10, 0, 0, 1), IPv4Address(rawValue: 0x0A00_0001), IPv4Address(10, 0, 0, 2)]
        #expect(set.count == 2)
    }

    @Test func codableRoundTrip() throws {
        let address = IPv4Address(198, 51, 100, 7)
        let json = try jsonText(address)
        #expect(json == #"{"value":"198.51.100.7"}"#)
        #expect(try decodeJSON(IPv4Address.self, from: json) == address)
    }

    @Test func codableRejectsBadText() throws {
        let message = try dataCorruptedDescription(IPv4Address.self, decoding: "10.0.0.256")
        #expect(message == #"invalid IPv4 address "10.0.0.256": octet 256 is larger than 255"#)
    }

    @Test func codableRejectsNonString() {
        #expect(throws: DecodingError.self) {
            try decodeJSON(IPv4Address.self, from: #"{"value":167772161}"#)
        }
    }
}
