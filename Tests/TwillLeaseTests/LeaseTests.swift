import Foundation
import Testing
import TwillAddress

@testable import TwillLease

@Suite struct LeaseTests {
    @Test func keyFormatMatchesFlannel() throws {
        let layout = EtcdLayout()
        let key = SubnetKey(ipv4: IPv4Network("10.244.5.0/24")!)
        #expect(layout.key(for: key) == "/coreos.com/network/subnets/10.244.5.0-24")
        #expect(try layout.subnet(fromKey: "/coreos.com/network/subnets/10.244.5.0-24") == key)
        #expect(try layout.subnet(fromKey: "/coreos.com/network/config") == nil)
        #expect(EtcdLayout(prefix: "/custom/").configKey == "/custom/config")
    }

    @Test func dualStackKey() throws {
        let k = try SubnetKey(parsing: "10.244.5.0-24&fd00:10:244:5::-64")
        #expect(k.ipv4 == IPv4Network("10.244.5.0/24"))
        #expect(k.ipv6 == IPv6Network("fd00:10:244:5::/64"))
        #expect(k.description == "10.244.5.0-24&fd00:10:244:5::-64")
    }

    @Test(arguments: ["10.244.5.0", "10.244.5.0-33", "10.244.5.1-24", "x-24", "10.244.5.0-24&nope", "a&b&c"])
    func badKeysAreRejected(text: String) {
        #expect(throws: LeaseError.self) { try SubnetKey(parsing: text) }
    }

    @Test func vxlanValueIsByteCompatible() throws {
        let flannel =
            #"{"PublicIP":"198.51.100.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        let attrs = LeaseAttributes(
            publicIP: IPv4Address("198.51.100.3")!, backendType: "vxlan",
            backendData: Data(#"{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}"#.utf8))
        #expect(String(decoding: attrs.json(), as: UTF8.self) == flannel)
        let parsed = try LeaseAttributes(json: Data(flannel.utf8), key: "k")
        #expect(parsed.publicIP == attrs.publicIP)
        #expect(parsed.backendType == "vxlan")
        #expect(String(decoding: parsed.backendData ?? Data(), as: UTF8.self) == #"{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}"#)
        #expect(String(decoding: parsed.json(), as: UTF8.self) == flannel)
    }

    @Test func udpValueHasNoBackendType() {
        let attrs = LeaseAttributes(publicIP: IPv4Address("203.0.113.9")!)
        #expect(String(decoding: attrs.json(), as: UTF8.self) == #"{"PublicIP":"203.0.113.9","PublicIPv6":null}"#)
    }

    @Test func unknownFieldsAndCaseAreTolerated() throws {
        let json = #"{"publicip":"203.0.113.9","PublicIPv6":"2001:db8::9","BackendType":"host-gw","Future":{"x":1}}"#
        let a = try LeaseAttributes(json: Data(json.utf8), key: "k")
        #expect(a.publicIP == IPv4Address("203.0.113.9"))
        #expect(a.publicIPv6 == IPv6Address("2001:db8::9"))
        #expect(a.backendType == "host-gw")
        #expect(a.backendData == nil)
    }

    @Test(arguments: [
        ("not json", "value is not JSON"),
        ("[1,2]", "value is not a JSON object"),
        (#"{"BackendType":"udp"}"#, "PublicIP is missing"),
        (#"{"PublicIP":"300.1.1.1"}"#, "PublicIP \"300.1.1.1\" is not an IPv4 address"),
    ])
    func malformedValuesNameTheKey(json: String, reason: String) {
        do {
            _ = try LeaseAttributes(json: Data(json.utf8), key: "/coreos.com/network/subnets/10.1.2.0-24")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("/coreos.com/network/subnets/10.1.2.0-24"))
            #expect(error.description.contains(reason))
        }
    }
}
