import TwillNetlink

#if canImport(Glibc)
import Glibc
#endif

/// The kernel calls the backends make: links, addresses, routes, neighbours and FDB entries.
/// ``Netlink`` is the real one (rtnetlink through libmnl); tests give backends an in-memory
/// kernel that records what they did, so host-gw's and vxlan's logic runs without root.
///
/// Calls block (a netlink round trip); errors are ``NetlinkError`` with the kernel's errno,
/// so `isNotFound` means the same for every conformer.
public protocol KernelRouting: Sendable {
    // Links
    func link(named name: String) throws -> Link
    func link(index: Int32) throws -> Link
    func linkIfPresent(named name: String) throws -> Link?
    func links() throws -> [Link]
    func setLinkUp(index: Int32) throws
    func setMTU(_ mtu: Int, index: Int32) throws
    func createLink(name: String, kind: String, mtu: Int?) throws -> Link
    func createVXLAN(_ spec: VXLANLinkSpec) throws -> Link
    func deleteLink(index: Int32) throws

    // Addresses
    func addresses(interfaceIndex: Int32?, family: Int32) throws -> [InterfaceAddress]
    func addAddress(_ address: InterfaceAddress) throws
    func deleteAddress(_ address: InterfaceAddress) throws

    // Routes
    func routes(table: UInt32?) throws -> [Route]
    func replaceRoute(_ route: Route) throws
    func deleteRoute(_ route: Route) throws
    func routes6(table: UInt32?) throws -> [Route6]
    func replaceRoute6(_ route: Route6) throws
    func deleteRoute6(_ route: Route6) throws

    // Neighbours and the bridge FDB (vxlan)
    func neighbours(interfaceIndex: Int32?) throws -> [Neighbour]
    func replaceNeighbour(_ n: Neighbour) throws
    func deleteNeighbour(_ n: Neighbour) throws
    func fdbEntries(interfaceIndex: Int32?) throws -> [FDBEntry]
    func replaceFDBEntry(_ e: FDBEntry) throws
    func deleteFDBEntry(_ e: FDBEntry) throws
}

extension KernelRouting {
    /// Links created without an MTU take the kernel's default.
    public func createLink(name: String, kind: String) throws -> Link { try createLink(name: name, kind: kind, mtu: nil) }
    /// Every address, or one interface's, of both families.
    public func addresses(interfaceIndex: Int32? = nil) throws -> [InterfaceAddress] {
        try addresses(interfaceIndex: interfaceIndex, family: AF_UNSPEC)
    }
    public func addresses(family: Int32) throws -> [InterfaceAddress] { try addresses(interfaceIndex: nil, family: family) }
    /// The main table's IPv4 routes.
    public func routes() throws -> [Route] { try routes(table: mainRoutingTable) }
    /// The main table's IPv6 routes.
    public func routes6() throws -> [Route6] { try routes6(table: mainRoutingTable) }
    public func neighbours() throws -> [Neighbour] { try neighbours(interfaceIndex: nil) }
    public func fdbEntries() throws -> [FDBEntry] { try fdbEntries(interfaceIndex: nil) }
}

extension Netlink: KernelRouting {}
