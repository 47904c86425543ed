import Synchronization
import TwillAddress
import TwillDatapath
import TwillNetlink

#if canImport(Glibc)
import Glibc
#endif

/// An in-memory kernel behind ``KernelRouting``: links, addresses, routes of both families,
/// neighbours and FDB entries, with the kernel's identities (a route is its table,
/// destination and metric; `replace` overwrites, `delete` of something absent is ENOENT) and
/// a log of every change, so a backend's logic is tested without root. What the real kernel
/// does beyond that (on-link checks, device kinds) is tested in namespaces.
public final class FakeKernel: KernelRouting, Sendable {
    private struct State {
        var links: [Int32: Link] = [:]
        var nextIndex: Int32 = 2
        var addresses: [InterfaceAddress] = []
        var routes: [Route] = []
        var routes6: [Route6] = []
        var neighbours: [Neighbour] = []
        var fdb: [FDBEntry] = []
        var log: [String] = []
        var failures: [String: [Int32]] = [:]
    }

    private let state = Mutex(State())

    /// A kernel with the loopback device only.
    public init() {
        state.withLock { $0.links[1] = Link(index: 1, name: "lo", mtu: 65536, flags: .up) }
    }

    // MARK: Test controls

    /// Adds an underlay interface with addresses, as `ip link add` plus `ip addr add` would.
    @discardableResult
    public func addInterface(_ name: String, mtu: Int = 1500, addresses: [(IPAddress, Int)] = []) -> Link {
        state.withLock { s in
            let link = Link(index: s.nextIndex, name: name, mtu: mtu, flags: .up)
            s.nextIndex += 1
            s.links[link.index] = link
            for (a, len) in addresses { s.addresses.append(InterfaceAddress(interfaceIndex: link.index, address: a, prefixLength: len)) }
            return link
        }
    }

    /// Adds a route as something else would (another protocol, say), without logging it.
    public func plant(_ route: Route) { state.withLock { $0.routes.append(route) } }
    public func plant6(_ route: Route6) { state.withLock { $0.routes6.append(route) } }

    /// The next call named `call` (e.g. "replaceRoute") fails with `errno`.
    public func failNext(_ call: String, errno: Int32) {
        state.withLock { $0.failures[call, default: []].append(errno) }
    }

    /// Every change made through the protocol, in order, e.g. `replaceRoute route 198.18.2.0/24 via ...`.
    public var log: [String] { state.withLock { $0.log } }
    public func clearLog() { state.withLock { $0.log.removeAll() } }

    // MARK: Links

    public func link(named name: String) throws -> Link {
        guard let l = try linkIfPresent(named: name) else { throw NetlinkError(object: "link \"\(name)\"", errno: ENODEV) }
        return l
    }

    public func link(index: Int32) throws -> Link {
        try enter("link")
        guard let l = state.withLock({ $0.links[index] }) else { throw NetlinkError(object: "link index \(index)", errno: ENODEV) }
        return l
    }

    public func linkIfPresent(named name: String) throws -> Link? {
        try enter("link")
        return state.withLock { s in s.links.values.first { $0.name == name } }
    }

    public func links() throws -> [Link] {
        try enter("links")
        return state.withLock { $0.links.values.sorted { $0.index < $1.index } }
    }

    public func setLinkUp(index: Int32) throws {
        try change("setLinkUp", "index \(index)") { s in
            guard s.links[index] != nil else { return ENODEV }
            s.links[index]?.flags.insert(.up)
            return 0
        }
    }

    public func setMTU(_ mtu: Int, index: Int32) throws {
        try change("setMTU", "\(mtu) index \(index)") { s in
            guard s.links[index] != nil else { return ENODEV }
            s.links[index]?.mtu = mtu
            return 0
        }
    }

    public func createLink(name: String, kind: String, mtu: Int?) throws -> Link {
        try create("createLink", Link(index: 0, name: name, kind: kind, mtu: mtu ?? 1500))
    }

    public func createVXLAN(_ spec: VXLANLinkSpec) throws -> Link {
        let attributes = VXLANAttributes(
            vni: spec.vni, local: spec.local, local6: spec.local6, underlayIndex: spec.underlayIndex, port: spec.port,
            learning: spec.learning, gbp: spec.gbp)
        return try create(
            "createVXLAN",
            Link(
                index: 0, name: spec.name, kind: "vxlan", mtu: spec.mtu ?? 1450,
                mac: spec.mac ?? MACAddress("0e:00:00:00:00:01"), vxlan: attributes))
    }

    private func create(_ call: String, _ template: Link) throws -> Link {
        var made: Link?
        try change(call, template.name) { s in
            guard !s.links.values.contains(where: { $0.name == template.name }) else { return EEXIST }
            var l = template
            l.index = s.nextIndex
            s.nextIndex += 1
            s.links[l.index] = l
            made = l
            return 0
        }
        guard let made else { throw NetlinkError(object: "link \"\(template.name)\"", errno: EIO) }
        return made
    }

    public func deleteLink(index: Int32) throws {
        try change("deleteLink", "index \(index)") { s in
            guard s.links.removeValue(forKey: index) != nil else { return ENODEV }
            // What goes with a device in the kernel: its addresses, routes and entries.
            s.addresses.removeAll { $0.interfaceIndex == index }
            s.routes.removeAll { $0.outputInterface == index }
            s.routes6.removeAll { $0.outputInterface == index }
            s.neighbours.removeAll { $0.interfaceIndex == index }
            s.fdb.removeAll { $0.interfaceIndex == index }
            return 0
        }
    }

    // MARK: Addresses

    public func addresses(interfaceIndex: Int32?, family: Int32) throws -> [InterfaceAddress] {
        try enter("addresses")
        return state.withLock { s in
            s.addresses.filter { a in
                (interfaceIndex == nil || a.interfaceIndex == interfaceIndex)
                    && (family == AF_UNSPEC || (family == AF_INET) == (a.address.v4 != nil))
            }
        }
    }

    public func addAddress(_ address: InterfaceAddress) throws {
        try change("addAddress", address.description) { s in
            guard s.links[address.interfaceIndex] != nil else { return ENODEV }
            guard !s.addresses.contains(where: { $0.interfaceIndex == address.interfaceIndex && $0.address == address.address })
            else { return EEXIST }
            s.addresses.append(address)
            return 0
        }
    }

    public func deleteAddress(_ address: InterfaceAddress) throws {
        try change("deleteAddress", address.description) { s in
            let before = s.addresses.count
            s.addresses.removeAll { $0.interfaceIndex == address.interfaceIndex && $0.address == address.address }
            return s.addresses.count == before ? EADDRNOTAVAIL : 0
        }
    }

    // MARK: Routes

    public func routes(table: UInt32?) throws -> [Route] {
        try enter("routes")
        return state.withLock { s in s.routes.filter { table == nil || $0.table == table } }
    }

    public func replaceRoute(_ route: Route) throws {
        try change("replaceRoute", route.description) { s in
            if let out = route.outputInterface, s.links[out] == nil { return ENODEV }
            s.routes.removeAll { Self.sameSlot($0, route) }
            s.routes.append(route)
            return 0
        }
    }

    public func deleteRoute(_ route: Route) throws {
        try change("deleteRoute", route.description) { s in
            guard let i = s.routes.firstIndex(where: { Self.sameSlot($0, route) && $0.routeProtocol == route.routeProtocol }) else {
                return ESRCH
            }
            s.routes.remove(at: i)
            return 0
        }
    }

    public func routes6(table: UInt32?) throws -> [Route6] {
        try enter("routes6")
        return state.withLock { s in s.routes6.filter { table == nil || $0.table == table } }
    }

    public func replaceRoute6(_ route: Route6) throws {
        try change("replaceRoute6", route.description) { s in
            if let out = route.outputInterface, s.links[out] == nil { return ENODEV }
            s.routes6.removeAll { $0.table == route.table && $0.destination == route.destination && $0.metric == route.metric }
            s.routes6.append(route)
            return 0
        }
    }

    public func deleteRoute6(_ route: Route6) throws {
        try change("deleteRoute6", route.description) { s in
            guard
                let i = s.routes6.firstIndex(where: {
                    $0.table == route.table && $0.destination == route.destination && $0.routeProtocol == route.routeProtocol
                })
            else { return ESRCH }
            s.routes6.remove(at: i)
            return 0
        }
    }

    /// The kernel's route identity: table, destination and metric (priority).
    private static func sameSlot(_ a: Route, _ b: Route) -> Bool {
        a.table == b.table && a.destination == b.destination && a.metric == b.metric
    }

    // MARK: Neighbours and FDB

    public func neighbours(interfaceIndex: Int32?) throws -> [Neighbour] {
        try enter("neighbours")
        return state.withLock { s in s.neighbours.filter { interfaceIndex == nil || $0.interfaceIndex == interfaceIndex } }
    }

    public func replaceNeighbour(_ n: Neighbour) throws {
        try change("replaceNeighbour", n.description) { s in
            guard s.links[n.interfaceIndex] != nil else { return ENODEV }
            s.neighbours.removeAll { $0.interfaceIndex == n.interfaceIndex && $0.address == n.address }
            s.neighbours.append(n)
            return 0
        }
    }

    public func deleteNeighbour(_ n: Neighbour) throws {
        try change("deleteNeighbour", n.description) { s in
            let before = s.neighbours.count
            s.neighbours.removeAll { $0.interfaceIndex == n.interfaceIndex && $0.address == n.address }
            return s.neighbours.count == before ? ENOENT : 0
        }
    }

    public func fdbEntries(interfaceIndex: Int32?) throws -> [FDBEntry] {
        try enter("fdbEntries")
        return state.withLock { s in s.fdb.filter { interfaceIndex == nil || $0.interfaceIndex == interfaceIndex } }
    }

    public func replaceFDBEntry(_ e: FDBEntry) throws {
        try change("replaceFDBEntry", e.description) { s in
            guard s.links[e.interfaceIndex] != nil else { return ENODEV }
            s.fdb.removeAll { $0.interfaceIndex == e.interfaceIndex && $0.mac == e.mac && $0.destination == e.destination }
            s.fdb.append(e)
            return 0
        }
    }

    public func deleteFDBEntry(_ e: FDBEntry) throws {
        try change("deleteFDBEntry", e.description) { s in
            let before = s.fdb.count
            s.fdb.removeAll { $0.interfaceIndex == e.interfaceIndex && $0.mac == e.mac && $0.destination == e.destination }
            return s.fdb.count == before ? ENOENT : 0
        }
    }

    // MARK: Internals

    private func enter(_ call: String) throws {
        let injected = state.withLock { s -> Int32? in
            guard var q = s.failures[call], !q.isEmpty else { return nil }
            let e = q.removeFirst()
            s.failures[call] = q
            return e
        }
        if let injected { throw NetlinkError(object: "\(call) (injected)", errno: injected) }
    }

    /// Runs a change under the lock; a non-zero result is the errno to throw. Logged when done.
    private func change(_ call: String, _ object: String, _ body: (inout State) -> Int32) throws {
        try enter(call)
        let errno = state.withLock { s -> Int32 in
            let e = body(&s)
            if e == 0 { s.log.append("\(call) \(object)") }
            return e
        }
        if errno != 0 { throw NetlinkError(object: object, errno: errno) }
    }
}
