extension HostGWBackend {
    /// flannel's host-gw backend: only `MTU`; IPv4, dual stack and IPv6-only.
    public static let kind = BackendKind(type: "host-gw", families: [.ipv4, .dualStack, .ipv6]) { spec, _ throws(BackendError) in
        let mtu = try BackendKind.mtu(spec)
        return { c in
            HostGWBackend(
                netlink: try c.kernel(), external: c.external, mtu: mtu, families: c.families)
        }
    }
}

extension AllocBackend {
    /// flannel's alloc backend: a lease and subnet.env, no data path.
    public static let kind = BackendKind(type: "alloc", families: [.ipv4, .dualStack, .ipv6]) { spec, _ throws(BackendError) in
        let mtu = try BackendKind.mtu(spec)
        return { c in AllocBackend(mtu: mtu ?? c.external.mtu) }
    }
}
