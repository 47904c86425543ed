extension VXLANBackend {
    /// flannel's vxlan backend: `VNI` (1), `Port` (8472), `DirectRouting`, `GBP`, `Learning`
    /// and `MTU`; IPv4, dual stack (a second device, `flannel-v6.<VNI>`) and IPv6-only.
    public static let kind = BackendKind(type: "vxlan", families: [.ipv4, .dualStack, .ipv6]) { spec, _ throws(BackendError) in
        let mtu = try BackendKind.mtu(spec)
        let vni = UInt32(try spec.int("VNI", in: 1...16_777_215) ?? 1)
        let port = UInt16(try spec.int("Port", in: 1...65535) ?? 8472)
        let directRouting = try spec.bool("DirectRouting") ?? false
        let gbp = try spec.bool("GBP") ?? false
        let learning = try spec.bool("Learning") ?? false
        return { c in
            VXLANBackend(
                netlink: try c.kernel(), external: c.external, vni: vni, port: port, directRouting: directRouting,
                gbp: gbp, learning: learning, mtu: mtu, families: c.families)
        }
    }
}
