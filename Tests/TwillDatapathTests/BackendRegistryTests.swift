import Testing
import TwillAddress
import TwillTestSupport

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

    @Test func eachKindSaysWhichFamiliesItRunsAndValidationBuildsNothing() throws {
        #expect(BackendRegistry.types == ["udp", "vxlan", "host-gw", "wireguard", "alloc"])
        for type in ["udp", "vxlan", "host-gw", "alloc"] {
            for families: IPFamilies in [.ipv4, .dualStack, .ipv6] {
                #expect(throws: Never.self) { try BackendRegistry.validate(BackendSpec(type: type), families: families) }
            }
        }
        let dual = #expect(throws: BackendError.self) { try BackendRegistry.validate(BackendSpec(type: "wireguard"), families: .dualStack) }
        #expect(
            dual?.description
                == "wireguard backend: EnableIPv6 is set, but Twill's wireguard backend carries IPv4 only so far; use udp, vxlan, host-gw for a dual-stack network"
        )
        let v6 = #expect(throws: BackendError.self) { try BackendRegistry.validate(BackendSpec(type: "wireguard"), families: .ipv6) }
        #expect(
            v6?.description.contains("EnableIPv4 is false (an IPv6-only network), but Twill's wireguard backend sends over IPv4") == true)

        // The builder a validation returns takes its kernel only when called: a host-gw backend
        // built on the in-memory kernel programs that one.
        let kernel = FakeKernel()
        let build = try BackendRegistry.validate(BackendSpec(type: "host-gw", settings: ["MTU": .number(1400)]), families: .dualStack)
        #expect(kernel.log.isEmpty)
        let backend = try build(BackendKind.Context(external: Self.external, families: .dualStack, options: .init(), kernel: { kernel }))
        #expect(backend.type == "host-gw")
    }
}
