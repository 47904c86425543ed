import Testing

@testable import TwillAddress

/// Parses an address that the test author knows is valid.
private func addr(_ text: String) throws(AddressError) -> IPv6Address {
    try IPv6Address(parsing: text)
}

@Suite("IPv6Address")
struct IPv6AddressTests {
    // MARK: Canonical formatting (RFC 5952)

    @Test(
        "parses any RFC 4291 form and prints the RFC 5952 canonical form",
        arguments: [
            // RFC 5952 section 4 examples.
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:0db8::0001", "2001:db8::1"),
            ("2001:0db8:0:0:0:0:2:1", "2001:db8::2:1"),
            ("2001:db8::0:1", "2001:db8::1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("2001:db8::1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::"),
            ("2001:DB8::AbCd", "2001:db8::abcd"),
            ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:0001", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1"),
            // Unspecified, loopback and edges.
            ("::", "::"),
            ("0:0:0:0:0:0:0:0", "::"),
            ("0000:0000:0000:0000:0000:0000:0000:0000", "::"),
            ("::1", "::1"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("fe80::", "fe80::"),
            ("fe80:0:0:0:0:0:0:0", "fe80::"),
            ("FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            // Longest run wins; leftmost on ties; a lone zero is never compressed.
            ("fd00:0:0:1:0:0:0:1", "fd00:0:0:1::1"),
            ("fd00:0:0:1:0:0:1:1", "fd00::1:0:0:1:1"),
            ("0:0:fd00:0:0:0:0:1", "0:0:fd00::1"),
            ("0:fd00:0:fd00:0:fd00:0:fd00", "0:fd00:0:fd00:0:fd00:0:fd00"),
            ("fd00:0:1:2:3:4:5:6", "fd00:0:1:2:3:4:5:6"),
            ("fd00::1:2:3:4:5:6", "fd00:0:1:2:3:4:5:6"),
            ("::fd00:1:2:3:4:5:6", "0:fd00:1:2:3:4:5:6"),
            ("fd00:1:2:3:4:5:6::", "fd00:1:2:3:4:5:6:0"),
            ("0:0:0:0:0:0:0:fd00", "::fd00"),
            ("fd00:0:0:0:0:0:0:0", "fd00::"),
            // Embedded IPv4 tails.
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
            ("::FFFF:0a00:0001", "::ffff:10.0.0.1"),
            ("0:0:0:0:0:ffff:198.51.100.7", "::ffff:198.51.100.7"),
            ("::ffff:0.0.0.0", "::ffff:0.0.0.0"),
            ("::ffff:255.255.255.255", "::ffff:255.255.255.255"),
            ("2001:db8:1::198.51.100.1", "2001:db8:1::c633:6401"),
            ("2001:db8:1:2:3:4:203.0.113.9", "2001:db8:1:2:3:4:cb00:7109"),
            ("::10.0.0.1", "::a00:1"),
            ("::1:ffff:10.0.0.1", "::1:ffff:a00:1"),
        ])
    func canonical(input: String, canonical: String) throws {
        let address = try addr(input)
        #expect(address.description == canonical)
        #expect(try addr(canonical) == address)
        #expect(IPv6Address(input) == address)
        #expect(losslessRoundTrip(address))
    }

    @Test func halvesAreBigEndian() throws {
        let address = try addr("2001:db8::1")
        #expect(address.high == 0x2001_0DB8_0000_0000)
        #expect(address.low == 1)
        #expect(IPv6Address(high: 0x2001_0DB8_0000_0000, low: 1) == address)
        #expect(address.groups == [0x2001, 0xDB8, 0, 0, 0, 0, 0, 1])
        let mixed = try addr("fd00:1:2:3:4:5:6:7")
        #expect(mixed.high == 0xFD00_0001_0002_0003)
        #expect(mixed.low == 0x0004_0005_0006_0007)
    }

    /// Reference formatter written independently of the library: tries every run.
    private static func referenceCanonical(_ groups: [UInt16]) -> String {
        var best: (start: Int, length: Int) = (-1, 0)
        for start in 0..<8 {
            var length = 0
            while start + length < 8, groups[start + length] == 0 { length += 1 }
            if length >= 2, length > best.length { best = (start, length) }
        }
        let hex = groups.map { String($0, radix: 16) }
        guard best.start >= 0 else { return hex.joined(separator: ":") }
        let head = hex[..<best.start].joined(separator: ":")
        let tail = hex[(best.start + best.length)...].joined(separator: ":")
        return head + "::" + tail
    }

    @Test("every zero/non-zero group pattern formats canonically", arguments: 0..<256)
    func everyZeroPattern(pattern: Int) throws {
        // Bit i set means group i is non-zero; the first group is fd00 when set so that
        // IPv4-mapped addresses (which use the mixed form) never occur.
        let groups: [UInt16] = (0..<8).map { index in
            pattern & (1 << index) == 0 ? 0 : (index == 0 ? 0xFD00 : UInt16(index) * 0x1111)
        }
        let address = try IPv6Address(groups: groups)
        if address.ipv4Mapped == nil {
            #expect(address.description == Self.referenceCanonical(groups))
        }
        #expect(try addr(address.description) == address)
        #expect(address.groups == groups)
        // Never more than one "::", and never a ":::".
        #expect(!address.description.contains(":::"))
        #expect(
            address.description.split(separator: ":", omittingEmptySubsequences: false)
                .count <= 9)
    }

    // MARK: Rejections

    @Test(
        "rejects malformed text with a specific reason",
        arguments: [
            ("", "address is empty"),
            ("2001:db8::12345", "group \"12345\" has more than 4 hex digits"),
            ("2001:db8::00001", "group \"00001\" has more than 4 hex digits"),
            ("2001:db8::1::1", "\"::\" may appear only once"),
            ("::1::", "\"::\" may appear only once"),
            ("2001:db8:1:2:3:4:5", "expected 8 groups, found 7"),
            ("2001:db8:1:2:3:4:5:6:7", "expected 8 groups, found 9"),
            ("2001:db8", "expected 8 groups, found 2"),
            ("2001:db8:1:2:3:4:5:10.0.0.1", "expected 8 groups, found 9"),
            ("2001:db8:1:2:3:4:5::6", "\"::\" must stand for at least one zero group, but 8 groups are present"),
            ("::2001:db8:1:2:3:4:5:6", "\"::\" must stand for at least one zero group, but 8 groups are present"),
            ("fe80::1%eth0", "zone identifiers (\"%eth0\") are not supported; strip the zone before parsing"),
            ("fe80::1%25", "zone identifiers (\"%25\") are not supported; strip the zone before parsing"),
            ("fe80::1%", "zone identifiers (\"%\") are not supported; strip the zone before parsing"),
            (":2001:db8::1", "address must not start with a single \":\""),
            (":1:2:3:4:5:6:7", "address must not start with a single \":\""),
            ("2001:db8::1:", "address must not end with a single \":\""),
            ("2001:db8:1:2:3:4:5:6:", "address must not end with a single \":\""),
            (":", "address must not start with a single \":\""),
            (":::", "\":::\" is not valid"),
            ("2001:db8:::1", "\":::\" is not valid"),
            ("2001:db8::g", "unexpected character \"g\""),
            ("2001:db8::-1", "unexpected character \"-\""),
            (" ::1", "whitespace (\" \") is not allowed"),
            ("::1 ", "whitespace (\" \") is not allowed"),
            ("[::1]", "brackets are not part of an address"),
            ("fd00::/8", "\"/\" is not allowed (is this a network?)"),
            ("10.0.0.1", "no \":\" found"),
            ("fd00", "no \":\" found"),
            ("::ffff:10.0.0.256", "embedded IPv4 address \"10.0.0.256\": octet 256 is larger than 255"),
            ("::ffff:10.0.0.01", "embedded IPv4 address \"10.0.0.01\": leading zeros are not allowed in \"01\""),
            ("::ffff:10.0.0", "embedded IPv4 address \"10.0.0\": expected 4 octets, found 3"),
            ("::ffff:10.0.0.a", "embedded IPv4 address \"10.0.0.a\": unexpected character \"a\""),
            ("10.0.0.1::", "an embedded IPv4 address is only allowed as the last part"),
            ("::ffff:10.0.0.1:1", "an embedded IPv4 address is only allowed as the last part"),
        ])
    func rejects(text: String, reason: String) throws {
        let error = try #require(addressError { try IPv6Address(parsing: text) })
        #expect(error.kind == .ipv6Address)
        #expect(error.input == text)
        #expect(error.reason == reason)
        #expect(error.description == "invalid IPv6 address \(String(reflecting: text)): \(reason)")
        #expect(IPv6Address(text) == nil)
    }

    @Test func zoneErrorDescription() throws {
        let error = try #require(addressError { try IPv6Address(parsing: "fe80::1%eth0") })
        #expect(
            error.description
                == #"invalid IPv6 address "fe80::1%eth0": zone identifiers ("%eth0") are not supported; strip the zone before parsing"#)
    }

    // MARK: Bytes and groups

    @Test func bytesRoundTrip() throws {
        let address = try addr("2001:db8:1:2:3:4:5:6")
        #expect(address.bytes == [0x20, 0x01, 0x0D, 0xB8, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6])
        #expect(try IPv6Address(bytes: address.bytes) == address)
        #expect(
            try IPv6Address(bytes: [UInt8](repeating: 0xFF, count: 16)).description
                == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
        #expect(try IPv6Address(groups: address.groups) == address)
    }

    @Test("init(bytes:) demands exactly sixteen", arguments: [0, 4, 15, 17])
    func bytesWrongCount(count: Int) throws {
        let error = try #require(addressError { try IPv6Address(bytes: [UInt8](repeating: 0, count: count)) })
        #expect(error.kind == .ipv6Address)
        #expect(error.reason == "expected 16 bytes, found \(count)")
    }

    @Test func groupsWrongCount() throws {
        let error = try #require(addressError { try IPv6Address(groups: [UInt16](repeating: 0, count: 7)) })
        #expect(error.reason == "expected 8 groups, found 7")
    }

    // MARK: Arithmetic

    @Test(
        "advanced(by:)",
        arguments: [
            ("fd00::ffff:ffff:ffff:ffff", Int64(1), "fd00:0:0:1::" as String?),
            ("fd00:0:0:1::", -1, "fd00::ffff:ffff:ffff:ffff"),
            ("2001:db8::1", 0, "2001:db8::1"),
            ("2001:db8::", 255, "2001:db8::ff"),
            ("::", .max, "::7fff:ffff:ffff:ffff"),
            ("::ffff:ffff:ffff:ffff", .min, "::7fff:ffff:ffff:ffff"),
            ("0:0:0:1::", .min, "::8000:0:0:0"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 1, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, nil),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", .max, nil),
            ("ffff:ffff:ffff:ffff:8000::", .max, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("::", -1, nil),
            ("::", .min, nil),
            ("::7fff:ffff:ffff:ffff", .min, nil),
        ])
    func advanced(start: String, by n: Int64, expected: String?) throws {
        #expect(try addr(start).advanced(by: n)?.description == expected)
    }

    // MARK: Classification

    @Test func classification() throws {
        #expect(IPv6Address.any.isUnspecified)
        #expect(!IPv6Address.loopback.isUnspecified)
        #expect(IPv6Address.loopback.isLoopback)
        #expect(IPv6Address.loopback.description == "::1")
        #expect(!(try addr("::2")).isLoopback)
        #expect(!(try addr("fd00::1")).isLoopback)

        #expect(try addr("ff00::").isMulticast)
        #expect(try addr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").isMulticast)
        #expect(!(try addr("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")).isMulticast)

        #expect(try addr("fe80::").isLinkLocal)
        #expect(try addr("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff").isLinkLocal)
        #expect(!(try addr("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff")).isLinkLocal)
        #expect(!(try addr("fec0::")).isLinkLocal)

        #expect(try addr("fd00::1").isUniqueLocal)
        #expect(try addr("fc00::").isUniqueLocal)
        #expect(try addr("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").isUniqueLocal)
        #expect(!(try addr("fe00::")).isUniqueLocal)
        #expect(!(try addr("2001:db8::1")).isUniqueLocal)
    }

    @Test func ipv4Mapped() throws {
        let v4 = try IPv4Address(parsing: "198.51.100.7")
        let mapped = IPv6Address(ipv4Mapped: v4)
        #expect(mapped.description == "::ffff:198.51.100.7")
        #expect(mapped.ipv4Mapped == v4)
        #expect(try addr("::ffff:c633:6407") == mapped)
        #expect(try addr("::fffe:c633:6407").ipv4Mapped == nil)
        #expect(try addr("1::ffff:c633:6407").ipv4Mapped == nil)
        #expect(try addr("::10.0.0.1").ipv4Mapped == nil)
    }

    // MARK: Protocols

    @Test func ordering() throws {
        let texts = ["fd00::1", "::", "2001:db8::ffff", "2001:db8::1:0", "ffff::", "::1", "2001:db8:0:0:1::"]
        let sorted = try texts.map { text throws(AddressError) in try addr(text) }.sorted()
        #expect(sorted.map(\.description) == ["::", "::1", "2001:db8::ffff", "2001:db8::1:0", "2001:db8:0:0:1::", "fd00::1", "ffff::"])
    }

    @Test func hashable() throws {
        let set: Set = [try addr("2001:db8::1"), try addr("2001:0DB8:0:0:0:0:0:0001"), try addr("2001:db8::2")]
        #expect(set.count == 2)
    }

    @Test func codableRoundTrip() throws {
        let address = try addr("2001:0DB8:0:0:1:0:0:1")
        let json = try jsonText(address)
        #expect(json == #"{"value":"2001:db8::1:0:0:1"}"#)
        #expect(try decodeJSON(IPv6Address.self, from: json) == address)
        #expect(
            try decodeJSON(IPv6Address.self, from: #"{"value":"::FFFF:10.0.0.1"}"#).description
                == "::ffff:10.0.0.1")
    }

    @Test func codableRejectsBadText() throws {
        #expect(
            try dataCorruptedDescription(IPv6Address.self, decoding: "fe80::1%eth0")
                == #"invalid IPv6 address "fe80::1%eth0": zone identifiers ("%eth0") are not supported; strip the zone before parsing"#)
    }
}
