import Testing

@testable import TwillAddress

@Suite("AddressError")
struct AddressErrorTests {
    @Test(
        "description names the kind, the quoted input and the reason",
        arguments: [
            (AddressError.Kind.ipv4Address, "invalid IPv4 address \"x\": why"),
            (.ipv4Network, "invalid IPv4 network \"x\": why"),
            (.ipv6Address, "invalid IPv6 address \"x\": why"),
            (.ipv6Network, "invalid IPv6 network \"x\": why"),
            (.ipAddress, "invalid IP address \"x\": why"),
        ])
    func descriptionPerKind(kind: AddressError.Kind, expected: String) {
        let error = AddressError(kind: kind, input: "x", reason: "why")
        #expect(error.description == expected)
        #expect(error.input == "x")
        #expect(error.reason == "why")
    }

    @Test func descriptionEscapesControlCharactersAndQuotes() {
        let error = AddressError(kind: .ipv4Address, input: "10.0.0.1\n\"", reason: "bad")
        #expect(error.description == #"invalid IPv4 address "10.0.0.1\n\"": bad"#)
    }

    @Test func equatable() {
        let a = AddressError(kind: .ipv4Address, input: "a", reason: "r")
        #expect(a == AddressError(kind: .ipv4Address, input: "a", reason: "r"))
        #expect(a != AddressError(kind: .ipv6Address, input: "a", reason: "r"))
        #expect(a != AddressError(kind: .ipv4Address, input: "b", reason: "r"))
        #expect(a != AddressError(kind: .ipv4Address, input: "a", reason: "s"))
    }

    @Test func exampleFromSpecification() throws {
        let error = try #require(addressError { try IPv4Address(parsing: "10.0.0.256") })
        #expect(error.description == #"invalid IPv4 address "10.0.0.256": octet 256 is larger than 255"#)
    }
}
