import TwillNetlink

extension HostGWBackend {
    /// Whether a kernel change seen on a ``NetlinkMonitor`` may have put the kernel out of
    /// step with the leases, so the agent should call ``reconcile(peers:)`` (debounced).
    /// True for route changes inside the overlay network, for changes of the external
    /// interface and its addresses, and after a monitor overrun; false for everything else
    /// (neighbour churn on the underlay, say), so the agent does not reconcile for nothing.
    public func needsReconcile(after change: NetlinkChange) -> Bool {
        KernelRoutes.affects(change, network: currentNetwork, network6: currentNetwork6, externalIndex: externalIndex, devices: [])
    }
}
