extension UDPBackend {
    /// flannel's udp backend: `Port` (8285) and `MTU`; IPv4, dual stack, and (Twill's own)
    /// IPv6-only over an IPv6 underlay.
    public static let kind = BackendKind(type: "udp", families: [.ipv4, .dualStack, .ipv6]) { spec, options throws(BackendError) in
        let mtu = try BackendKind.mtu(spec)
        let port = try spec.int("Port", in: 1...65535) ?? 8285
        guard !options.tunName.isEmpty, options.tunName.utf8.count < 16 else {
            throw BackendError(backend: "udp", "--tun-name \(options.tunName) must be 1 to 15 characters")
        }
        return { c in
            UDPBackend(
                netlink: try c.kernel(), external: c.external, tunName: c.options.tunName, port: UInt16(port),
                checkSources: !c.options.acceptAnySource, offloads: c.options.udpOffloads, queues: c.options.udpQueues, mtu: mtu,
                families: c.families, keeper: c.options.descriptorKeeper)
        }
    }
}
