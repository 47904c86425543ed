import Testing
import TwillAddress

@testable import TwillDatapath

@Suite struct BackendRegistryTests {
    static let external = ExternalInterface(
        name: "lo", index: 1, publicIP: IPv4Address("198.51.100.1")!, localIP: IPv4Address("198.51.100.1")!, mtu: 1500)

    static func message(_ spec: BackendSpec, options: BackendRegistry.Options = .init()) -> String? {
        do {
            try BackendRegistry.validate(spec, options: options)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func settingsAreCheckedWithMessagesNamingThem() {
        #expect(Self.message(BackendSpec(type: "udp")) == nil)
        #expect(Self.message(BackendSpec(type: "UDP", settings: ["port": .number(8285)])) == nil)
        #expect(
            Self.message(BackendSpec(type: "udp", settings: ["Port": .number(99999)]))
                == "udp backend: Backend.Port 99999 is outside 1..65535")
        #expect(
            Self.message(BackendSpec(type: "udp", settings: ["Port": .string("8285")]))
                == "udp backend: Backend.Port must be a whole number, not the string \"8285\"")
        #expect(Self.message(BackendSpec(type: "udp", settings: ["Port": .number(8285.5)]))?.contains("whole number") == true)
        #expect(
            Self.message(BackendSpec(type: "vxlan", settings: ["VNI": .number(0)])) == "vxlan backend: Backend.VNI 0 is outside 1..16777215"
        )
        #expect(
            Self.message(BackendSpec(type: "vxlan", settings: ["VNI": .number(4096), "Port": .number(4789), "DirectRouting": .bool(true)]))
                == nil)
        #expect(
            Self.message(BackendSpec(type: "vxlan", settings: ["directrouting": .string("yes")]))
                == "vxlan backend: Backend.DirectRouting must be true or false, not the string \"yes\"")
        #expect(
            Self.message(BackendSpec(type: "gre"))
                == "gre backend: Backend.Type \"gre\" is not known (available: udp, vxlan, host-gw, wireguard, alloc)")
        #expect(Self.message(BackendSpec(type: "udp"), options: .init(tunName: "a-very-long-tun-name"))?.contains("--tun-name") == true)
    }

    @Test func makeBuildsTheNamedBackendWithoutTouchingTheKernel() throws {
        #expect(try BackendRegistry.make(BackendSpec(type: "alloc"), external: Self.external).type == "alloc")
        let vxlan = try BackendRegistry.make(BackendSpec(type: "vxlan", settings: ["VNI": .number(7)]), external: Self.external)
        #expect((vxlan as? VXLANBackend)?.deviceName == "flannel.7")
        let udp = try BackendRegistry.make(
            BackendSpec(type: "udp", settings: ["Port": .number(9000)]), external: Self.external,
            options: .init(tunName: "tw9", acceptAnySource: true, udpQueues: 2, udpOffloads: false))
        let u = try #require(udp as? UDPBackend)
        #expect(u.port == 9000 && u.tunName == "tw9" && !u.checkSources && u.queues == 2 && !u.offloads)
    }
}
