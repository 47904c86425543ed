import Testing
@testable import twill

@Suite struct FlannelEnvironmentTests {
    @Test func goStyleArgumentsAreNormalised() {
        #expect(FlannelEnvironment.normalise(["agent", "-etcd-endpoints=http://h:2379", "-iface", "eth0", "--ip-masq=true", "--release-on-exit=false"])
                == ["agent", "--etcd-endpoints=http://h:2379", "--iface", "eth0", "--ip-masq"])
        // Short flags of docker-opts stay as they are; Option<Bool> keeps its value.
        #expect(FlannelEnvironment.normalise(["docker-opts", "-f", "x", "-c"]) == ["docker-opts", "-f", "x", "-c"])
        #expect(FlannelEnvironment.normalise(["agent", "--iptables-forward-rules=false"]) == ["agent", "--iptables-forward-rules=false"])
    }

    @Test func environmentNamesFollowFlanneld() {
        let env = ["FLANNELD_ETCD_ENDPOINTS": "http://h:2379", "FLANNELD_PUBLIC_IP": "", "FLANNELD_IP_MASQ": "true"]
        #expect(FlannelEnvironment.value("etcd-endpoints", env) == "http://h:2379")
        #expect(FlannelEnvironment.value("public-ip", env) == nil)  // empty values are ignored
        #expect(FlannelEnvironment.value("subnet-file", env) == nil)
    }
}
