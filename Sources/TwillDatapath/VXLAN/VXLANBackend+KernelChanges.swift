import TwillNetlink

extension VXLANBackend {
    /// As ``HostGWBackend/needsReconcile(after:)``, plus any change of the vxlan device, its
    /// addresses, neighbours and FDB entries (a device deleted by hand, say).
    public func needsReconcile(after change: NetlinkChange) -> Bool {
        if case .linkRemoved(let l) = change, l.name == deviceName || l.name == deviceName6 { return true }
        if case .linkChanged(let l) = change, l.name == deviceName || l.name == deviceName6 { return true }
        return KernelRoutes.affects(
            change, network: currentNetwork, network6: currentNetwork6, externalIndex: externalIndex,
            devices: currentDeviceIndices)
    }
}
