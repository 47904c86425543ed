import Foundation
import Testing
import TwillAddress
import TwillTestSupport

@testable import TwillLease

@Suite struct SubnetEnvTests {
    let sample = SubnetEnv(network: IPv4Network("10.5.0.0/16"), subnet: IPv4Network("10.5.72.0/24"), mtu: 1472, ipMasq: false)

    @Test func exactFlannelFormat() {
        #expect(sample.text == "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n")
    }

    @Test func dualStackLinesInOrder() {
        var e = sample
        e.ipv6Network = IPv6Network("fd00:10::/56")
        e.ipv6Subnet = IPv6Network("fd00:10:0:5::/64")
        e.ipMasq = true
        #expect(
            e.text
                == "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_NETWORK=fd00:10::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:5::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"
        )
    }

    @Test func roundTripAndSubnetIsMasked() throws {
        let back = try SubnetEnv(text: sample.text)
        #expect(back == sample)
        #expect(back.subnet == IPv4Network("10.5.72.0/24"))
        let comma = try SubnetEnv(text: "FLANNEL_NETWORK=10.5.0.0/16,fd00::/56\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\n")
        #expect(comma.network == IPv4Network("10.5.0.0/16"))
        #expect(comma.mtu == 1450)
    }

    @Test func partialOrMalformedIsRefusedWithTheReason() {
        #expect(
            throws: LeaseError.subnetFile(
                path: "f", reason: "missing FLANNEL_SUBNET, FLANNEL_MTU (is the agent running and has it written the file?)")
        ) {
            try SubnetEnv(text: "FLANNEL_NETWORK=10.5.0.0/16\n", path: "f", requireComplete: true)
        }
        #expect(throws: LeaseError.subnetFile(path: "f", reason: "line 2 \"garbage\" is not NAME=VALUE")) {
            try SubnetEnv(text: "FLANNEL_NETWORK=10.5.0.0/16\ngarbage\n", path: "f")
        }
        #expect(throws: LeaseError.subnetFile(path: "f", reason: "FLANNEL_MTU=big is not valid")) {
            try SubnetEnv(text: "FLANNEL_MTU=big\n", path: "f")
        }
        #expect(throws: LeaseError.subnetFile(path: "f", reason: "FLANNEL_SUBNET=10.5.72.1 is not valid")) {
            try SubnetEnv(text: "FLANNEL_SUBNET=10.5.72.1\n", path: "f")
        }
    }

    @Test func writeIsAtomicWithModeAndDirectory() throws {
        let dir = try makeTempDir(prefix: "twill-test-env-")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/run/flannel/subnet.env"
        try sample.write(path: path)
        #expect(try SubnetEnv.read(path: path, requireComplete: true) == sample)
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attrs[.posixPermissions] as? Int) == 0o644)
        // Overwrite: the new content replaces the old whole; no temp files left.
        var next = sample
        next.mtu = 1450
        try next.write(path: path)
        #expect(try SubnetEnv.read(path: path)?.mtu == 1450)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/run/flannel") == ["subnet.env"])
        #expect(try SubnetEnv.read(path: dir + "/absent") == nil)
    }

    @Test func unwritableDirectoryIsAClearError() {
        #expect(throws: LeaseError.self) { try sample.write(path: "/proc/twill-test/subnet.env") }
    }
}
