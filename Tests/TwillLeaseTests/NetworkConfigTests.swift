import Foundation
import Testing
import TwillAddress

@testable import TwillLease

@Suite struct NetworkConfigTests {
    func config(_ json: String) throws -> NetworkConfig { try NetworkConfig(json: Data(json.utf8)) }

    func error(_ json: String) -> String {
        do {
            _ = try NetworkConfig(json: Data(json.utf8))
            return "no error"
        } catch {
            return error.reason
        }
    }

    @Test func flannelDefaultsForA16() throws {
        let c = try config(#"{"Network":"10.244.0.0/16"}"#)
        #expect(c.network == IPv4Network("10.244.0.0/16"))
        #expect(c.subnetLength == 24)
        #expect(c.subnetMin == IPv4Address("10.244.1.0")) // the first subnet is skipped
        #expect(c.subnetMax == IPv4Address("10.244.255.0"))
        #expect(c.backendType == "udp") // flannel's code default
        #expect(c.enableIPv4 && !c.enableIPv6)
        #expect(c.subnetRange?.count == 255)
    }

    @Test(arguments: [
        ("10.0.0.0/8", 24), ("10.244.0.0/22", 24), ("10.244.0.0/23", 25), ("10.244.0.0/26", 28), ("10.244.0.0/28", 30),
    ])
    func subnetLenDefaults(network: String, expected: Int) throws {
        #expect(try config(#"{"Network":"\#(network)"}"#).subnetLength == expected)
    }

    @Test func keysAreCaseInsensitiveAndUnknownKeysIgnored() throws {
        let c = try config(#"{"network":"10.5.0.0/16","SUBNETLEN":26,"backend":{"type":"VXLAN","vni":4,"port":4789},"Extra":[1,2]}"#)
        #expect(c.subnetLength == 26)
        #expect(c.backendType == "vxlan")
        #expect(c.backendInt("VNI") == 4)
        #expect(c.backendInt("Port") == 4789)
    }

    @Test func explicitRange() throws {
        let c = try config(#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}"#)
        #expect(c.subnetRange?.count == 11)
        #expect(c.fits(IPv4Network("10.5.10.0/24")!))
        #expect(!c.fits(IPv4Network("10.5.9.0/24")!))
        #expect(!c.fits(IPv4Network("10.5.21.0/24")!))
        #expect(!c.fits(IPv4Network("10.5.10.0/25")!))
        #expect(!c.fits(IPv4Network("10.6.10.0/24")!))
    }

    @Test(arguments: [
        (#"{"Network":"10.1.0.0/16","SubnetLen":31}"#, "SubnetLen 31 is larger than /30"),
        (
            #"{"Network":"10.1.0.0/16","SubnetLen":17}"#,
            "SubnetLen 17 is too short for Network 10.1.0.0/16: it must be at least /18 so the network holds at least four subnets"
        ),
        (#"{"Network":"10.1.0.0/29"}"#, "Network 10.1.0.0/29 is too small: the smallest useful network is a /28"),
        (#"{"Network":"10.1.0.0/16","SubnetMin":"10.1.0.5"}"#, "SubnetMin 10.1.0.5 is not on a /24 boundary"),
        (#"{"Network":"10.1.0.0/16","SubnetMax":"10.2.0.0"}"#, "SubnetMax 10.2.0.0 is not inside Network 10.1.0.0/16"),
        (#"{"Network":"10.1.0.0/16","SubnetMin":"10.1.9.0","SubnetMax":"10.1.3.0"}"#, "SubnetMin 10.1.9.0 is above SubnetMax 10.1.3.0"),
        (#"{}"#, "Network is missing (an IPv4 CIDR such as \"10.244.0.0/16\")"),
        (#"{"Network":""}"#, "Network is missing (an IPv4 CIDR such as \"10.244.0.0/16\")"),
        (#"{"Network":16}"#, "Network must be a string, not a number"),
        (#"{"Network":"10.1.0.0/16","SubnetLen":"24"}"#, "SubnetLen must be a whole number, not a string"),
        (#"{"Network":"10.1.0.0/16","Backend":"vxlan"}"#, "Backend must be an object like {\"Type\":\"vxlan\"}, not a string"),
        (#"{"Network":"10.1.0.0/16","Backend":{"Port":1}}"#, "Backend has no Type (udp, vxlan, host-gw)"),
        (#"{"Network":"10.1.0.0/16","EnableIPv4":false}"#, "EnableIPv4 and EnableIPv6 are both false: nothing to do"),
        (
            #"{"Network":"10.1.0.0/16","EnableIPv6":true}"#,
            "EnableIPv6 is true but IPv6Network is missing (a CIDR such as \"fd00:10:244::/56\")"
        ),
        (
            #"{"Network":"10.1.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":127}"#,
            "IPv6SubnetLen 127 is larger than /126"
        ),
        (
            #"{"Network":"10.1.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/125"}"#,
            "IPv6Network fd00::/125 is too small: the smallest useful network is a /124"
        ),
        (#"[1]"#, "must be a JSON object, not an array"),
    ])
    func validationErrors(json: String, expected: String) {
        #expect(error(json) == expected)
    }

    @Test func badNetworkTextIsNamed() {
        #expect(error(#"{"Network":"10.1.0.300/16"}"#).contains("10.1.0.300/16"))
        #expect(error("{not json").hasPrefix("not valid JSON"))
    }

    @Test func ipv6ParsedAndDefaulted() throws {
        let c = try config(#"{"Network":"10.1.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#)
        #expect(c.ipv6Network == IPv6Network("fd00:10:244::/56"))
        #expect(c.ipv6SubnetLength == 64)
        #expect(c.ipv6SubnetMin == IPv6Address("fd00:10:244:1::"))
        #expect(c.ipv6SubnetMax == IPv6Address("fd00:10:244:ff::"))
    }
}
