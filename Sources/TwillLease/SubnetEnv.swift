import TwillAddress
import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// flannel's `subnet.env`: what Docker's `--bip`/`--mtu` and CNI bridge configs are made from.
///
/// ```
/// FLANNEL_NETWORK=10.5.0.0/16
/// FLANNEL_SUBNET=10.5.72.1/24
/// FLANNEL_MTU=1472
/// FLANNEL_IPMASQ=false
/// ```
public struct SubnetEnv: Sendable, Equatable {
    /// FLANNEL_NETWORK (flannel allows a comma list; the first IPv4 network is kept here).
    public var network: IPv4Network?
    /// This node's subnet; written as its first host address with the subnet's length.
    public var subnet: IPv4Network?
    public var ipv6Network: IPv6Network?
    public var ipv6Subnet: IPv6Network?
    public var mtu: Int
    public var ipMasq: Bool

    public static let defaultPath = "/run/flannel/subnet.env"

    public init(
        network: IPv4Network?, subnet: IPv4Network?, ipv6Network: IPv6Network? = nil, ipv6Subnet: IPv6Network? = nil, mtu: Int, ipMasq: Bool
    ) {
        self.network = network
        self.subnet = subnet
        self.ipv6Network = ipv6Network
        self.ipv6Subnet = ipv6Subnet
        self.mtu = mtu
        self.ipMasq = ipMasq
    }

    /// The file's text, lines in flannel's order.
    public var text: String {
        var lines: [String] = []
        if let n = network { lines.append("FLANNEL_NETWORK=\(n)") }
        if let s = subnet { lines.append("FLANNEL_SUBNET=\(s.host(1) ?? s.address)/\(s.prefixLength)") }
        if let n = ipv6Network { lines.append("FLANNEL_IPV6_NETWORK=\(n)") }
        if let s = ipv6Subnet { lines.append("FLANNEL_IPV6_SUBNET=\(s.host(1) ?? s.address)/\(s.prefixLength)") }
        lines.append("FLANNEL_MTU=\(mtu)")
        lines.append("FLANNEL_IPMASQ=\(ipMasq)")
        return lines.joined(separator: "\n") + "\n"
    }

    /// Parses the file's text. `requireComplete` demands FLANNEL_NETWORK and FLANNEL_SUBNET
    /// (or, IPv6-only, FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET) and FLANNEL_MTU (what
    /// Docker and CNI need); without it, whatever is present is read.
    public init(text: String, path: String = "subnet.env", requireComplete: Bool = false) throws(LeaseError) {
        var values: [String: String] = [:]
        for (n, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw .subnetFile(path: path, reason: "line \(n + 1) \"\(line)\" is not NAME=VALUE")
            }
            values[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        func parse<T>(_ name: String, _ f: (String) -> T?) throws(LeaseError) -> T? {
            guard let v = values[name] else { return nil }
            guard let t = f(v) else { throw .subnetFile(path: path, reason: "\(name)=\(v) is not valid") }
            return t
        }
        network = try parse("FLANNEL_NETWORK") { v in
            v.split(separator: ",").lazy.compactMap { IPv4Network(parsing: String($0), strictHost: false) }.first
        }
        subnet = try parse("FLANNEL_SUBNET") { IPv4Network(parsing: $0, strictHost: false) }
        ipv6Network = try parse("FLANNEL_IPV6_NETWORK") { try? IPv6Network(parsing: $0, strict: false) }
        ipv6Subnet = try parse("FLANNEL_IPV6_SUBNET") { try? IPv6Network(parsing: $0, strict: false) }
        let mtuValue = try parse("FLANNEL_MTU") { Int($0).flatMap { (68...65536).contains($0) ? $0 : nil } }
        ipMasq = try parse("FLANNEL_IPMASQ") { $0 == "true" ? true : ($0 == "false" ? false : nil) } ?? false
        mtu = mtuValue ?? 0
        if requireComplete {
            // One family's pair is enough (an IPv6-only network has no FLANNEL_SUBNET), as for
            // flannel's CNI plugin.
            let v4 = ["FLANNEL_NETWORK", "FLANNEL_SUBNET"]
            let v6 = ["FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET"]
            let pair = v4.allSatisfy { values[$0] != nil } || !v6.allSatisfy({ values[$0] != nil }) ? v4 : []
            let missing = (pair + ["FLANNEL_MTU"]).filter { values[$0] == nil }
            if !missing.isEmpty {
                throw .subnetFile(
                    path: path, reason: "missing \(missing.joined(separator: ", ")) (is the agent running and has it written the file?)")
            }
        }
    }

    /// Reads a subnet.env; nil when the file does not exist.
    public static func read(path: String, requireComplete: Bool = false) throws(LeaseError) -> SubnetEnv? {
        guard let text = try readText(path: path) else { return nil }
        return try SubnetEnv(text: text, path: path, requireComplete: requireComplete)
    }

    /// The file's raw text; nil when it does not exist.
    public static func readText(path: String) throws(LeaseError) -> String? {
        do { return try Files.readText(path) } catch {
            throw .subnetFile(path: path, reason: "cannot read: \(error)")
        }
    }

    /// Writes atomically (``AtomicFile``): readers see the old file or the new one, never
    /// half of one, and a failed write (a full disk) leaves the old file as it was. The
    /// directory is created (0755); the file is 0644.
    public func write(path: String) throws(LeaseError) {
        do { try AtomicFile.write(Array(text.utf8), to: path, mode: 0o644) } catch {
            throw .subnetFile(path: path, reason: "cannot write: \(error)")
        }
    }
}

extension IPv4Network {
    /// Parses "a.b.c.d/len" masking host bits, as flannel reads FLANNEL_SUBNET (10.5.72.1/24 -> 10.5.72.0/24).
    init?(parsing text: String, strictHost: Bool) {
        guard let n = try? IPv4Network(parsing: text, strict: strictHost) else { return nil }
        self = n
    }
}
