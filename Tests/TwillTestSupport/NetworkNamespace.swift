import Foundation

/// A throwaway network namespace made by a test (`/run/netns/NAME`).
///
/// Named `TestNamespace` (not `NetworkNamespace`) so that it never clashes with
/// TwillNetlink's `NetworkNamespace.run(inNamespace:_:)`, which tests use beside it.
public struct TestNamespace: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    public var path: String { "/run/netns/\(name)" }
    public var description: String { name }

    public init(name: String) { self.name = name }

    /// `ip -n NAME ARGS...`; throws with the output when it fails.
    @discardableResult
    public func ip(_ arguments: String...) throws -> String {
        try run("/usr/sbin/ip", ["-n", name] + arguments)
    }

    /// `ip -n NAME ARGS` with the arguments as an array.
    @discardableResult
    public func ip(arguments: [String]) throws -> String {
        try run("/usr/sbin/ip", ["-n", name] + arguments)
    }

    /// Runs a program inside the namespace (`ip netns exec NAME PROGRAM ARGS...`).
    @discardableResult
    public func exec(_ program: String, _ arguments: [String] = []) throws -> String {
        try run("/usr/sbin/ip", ["netns", "exec", name, program] + arguments)
    }

    /// One ping (`-c1 -W<timeout>`), optionally from a given source address; true when answered.
    public func ping(_ address: String, from source: String? = nil, timeoutSeconds: Int = 2) -> Bool {
        var args = ["-n", "-c1", "-W\(timeoutSeconds)"]
        if let source { args += ["-I", source] }
        return (try? exec("/usr/bin/ping", args + [address])) != nil
    }

    /// Pings until answered, at most `attempts` times (bounded: attempts x timeout seconds).
    public func pingEventually(_ address: String, from source: String? = nil, attempts: Int = 3) -> Bool {
        for _ in 0..<attempts where ping(address, from: source) { return true }
        return false
    }
}

/// A fresh prefix for everything one test creates: `twt-XXXXXX-` (6 random hex digits).
public func uniqueTestPrefix() -> String {
    let hex = String(UInt32.random(in: 0...0xFF_FFFF), radix: 16)
    return "twt-" + String(repeating: "0", count: 6 - hex.count) + hex + "-"
}

/// Creates one namespace per name (each prefixed with a fresh ``uniqueTestPrefix()``, with
/// `lo` up), runs `body`, and deletes the namespaces afterwards, even when `body` throws,
/// killing any process still running inside them first.
public func withNamespaces<T>(_ names: [String], _ body: ([TestNamespace]) async throws -> T) async throws -> T {
    let prefix = uniqueTestPrefix()
    var made: [TestNamespace] = []
    defer { deleteNamespaces(made) }
    for n in names {
        let ns = TestNamespace(name: prefix + n)
        try run("/usr/sbin/ip", ["netns", "add", ns.name])
        made.append(ns)
        try ns.ip("link", "set", "lo", "up")
    }
    return try await body(made)
}

/// Kills what runs inside the namespaces and deletes them; never throws.
public func deleteNamespaces(_ namespaces: [TestNamespace]) {
    for ns in namespaces {
        if let pids = try? run("/usr/sbin/ip", ["netns", "pids", ns.name]) {
            for p in pids.split(whereSeparator: \.isNewline) {
                if let pid = Int32(p.trimmingCharacters(in: .whitespaces)) { kill(pid, SIGKILL) }
            }
        }
        _ = try? run("/usr/sbin/ip", ["netns", "delete", ns.name])
    }
}

/// Hosts on one Ethernet segment: each host namespace has `eth0` (a veth) plugged into a
/// bridge `br0` that lives in a namespace of its own (the switch), with underlay address
/// `<underlay>.<i+1>/24` (i from 0).
public struct BridgedHosts: Sendable {
    public let hosts: [TestNamespace]
    public let switchNamespace: TestNamespace
    /// The hosts' underlay addresses, in order, e.g. "198.51.100.1".
    public let underlayAddresses: [String]
    public let underlayPrefixLength = 24
    /// The hosts' interface on the segment.
    public let interface = "eth0"
    /// The hosts' IPv6 underlay addresses (`2001:db8:1::<i+1>/64`), when the segment is dual stack.
    public var underlayAddresses6: [String] = []
}

/// The IPv6 underlay prefix (a documentation range): hosts are `::1`, `::2`..., the switch `::fe`.
public let ipv6Underlay = "2001:db8:1::"

/// Builds ``BridgedHosts`` (`count` hosts) for `body` and removes everything afterwards.
/// `underlay` is the first three octets: "198.51.100" (default) or "203.0.113".
///
/// With `ipv6`, each host also gets `2001:db8:1::<i+1>/64` on eth0 (no DAD, so it is usable at
/// once) and IPv6 forwarding on; with `ipv4: false`, no IPv4 address at all (an IPv6-only segment).
public func withBridgedHosts<T>(
    count: Int, underlay: String = "198.51.100", mtu: Int = 1500, ipv6: Bool = false, ipv4: Bool = true,
    _ body: (BridgedHosts) async throws -> T
) async throws -> T {
    precondition(underlay == "198.51.100" || underlay == "203.0.113", "underlay must be a documentation range")
    precondition(count >= 1 && count <= 50)
    let names = (0..<count).map { "h\($0 + 1)" } + ["sw"]
    return try await withNamespaces(names) { all in
        let hosts = Array(all.prefix(count))
        let sw = all[count]
        try sw.ip("link", "add", "br0", "type", "bridge", "stp_state", "0")
        try sw.ip("link", "set", "br0", "up")
        var addresses: [String] = []
        var addresses6: [String] = []
        for (i, h) in hosts.enumerated() {
            let port = "p\(i + 1)"
            try sw.ip("link", "add", port, "mtu", "\(mtu)", "type", "veth", "peer", "name", "eth0", "mtu", "\(mtu)", "netns", h.name)
            try sw.ip("link", "set", port, "master", "br0", "up")
            let address = "\(underlay).\(i + 1)"
            if ipv4 {
                try h.ip("addr", "add", "\(address)/24", "dev", "eth0")
                addresses.append(address)
            }
            if ipv6 {
                let a6 = "\(ipv6Underlay)\(i + 1)"
                try h.ip("addr", "add", "\(a6)/64", "dev", "eth0", "nodad")
                try h.exec("/usr/sbin/sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"])
                addresses6.append(a6)
            }
            try h.ip("link", "set", "eth0", "up")
        }
        var net = BridgedHosts(hosts: hosts, switchNamespace: sw, underlayAddresses: addresses)
        net.underlayAddresses6 = addresses6
        return try await body(net)
    }
}
