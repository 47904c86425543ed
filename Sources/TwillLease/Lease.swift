import TwillAddress

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The subnet a lease key names: `10.244.5.0-24`, or dual stack `10.244.5.0-24&fd00:10:244:5::-64`.
/// flannel writes an IPv6-only node's key with an empty IPv4 part: `0.0.0.0-0&fd00::-64`.
public struct SubnetKey: Sendable, Hashable, CustomStringConvertible {
    /// The IPv4 subnet; `0.0.0.0/0` in flannel's IPv6-only form (see ``ipv4Subnet``).
    public var ipv4: IPv4Network
    public var ipv6: IPv6Network?

    public init(ipv4: IPv4Network, ipv6: IPv6Network? = nil) {
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }

    /// The IPv4 part of an IPv6-only key, as flannel writes it.
    public static let ipv6OnlyPart = IPv4Network.all

    /// The IPv4 subnet, nil when the key names none (flannel's IPv6-only `0.0.0.0-0&...`).
    public var ipv4Subnet: IPv4Network? { ipv4.prefixLength == 0 && ipv4.address == .any ? nil : ipv4 }

    /// Parses the last path element of a lease key.
    public init(parsing text: String) throws(LeaseError) {
        let parts = text.split(separator: "&", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else {
            throw .malformedLease(key: text, reason: "expected <ip>-<len> or <ip>-<len>&<ipv6>-<len>")
        }
        func cidr(_ s: Substring) -> String? {
            guard let dash = s.lastIndex(of: "-") else { return nil }
            return s[..<dash] + "/" + s[s.index(after: dash)...]
        }
        guard let v4 = cidr(parts[0]), let n4 = try? IPv4Network(parsing: v4) else {
            throw .malformedLease(key: text, reason: "\"\(parts[0])\" is not an IPv4 subnet written <ip>-<len>")
        }
        ipv4 = n4
        ipv6 = nil
        if parts.count == 2 {
            guard let v6 = cidr(parts[1]), let n6 = try? IPv6Network(parsing: v6) else {
                throw .malformedLease(key: text, reason: "\"\(parts[1])\" is not an IPv6 subnet written <ip>-<len>")
            }
            ipv6 = n6
        }
    }

    /// `10.244.5.0-24` (and `&fd00::-64` for dual stack), as flannel writes it.
    public var description: String {
        var s = "\(ipv4.address)-\(ipv4.prefixLength)"
        if let v6 = ipv6 { s += "&\(v6.address)-\(v6.prefixLength)" }
        return s
    }
}

/// What a lease says about its node (the lease key's value).
public struct LeaseAttributes: Sendable, Equatable {
    public var publicIP: IPv4Address
    public var publicIPv6: IPv6Address?
    public var backendType: String?
    /// BackendData as raw JSON (an object), kept verbatim.
    public var backendData: Data?
    public var backendV6Data: Data?

    public init(
        publicIP: IPv4Address, publicIPv6: IPv6Address? = nil, backendType: String? = nil, backendData: Data? = nil,
        backendV6Data: Data? = nil
    ) {
        self.publicIP = publicIP
        self.publicIPv6 = publicIPv6
        self.backendType = backendType
        self.backendData = backendData
        self.backendV6Data = backendV6Data
    }

    /// flannel's JSON, byte for byte: PublicIP, PublicIPv6 (null when unset), then
    /// BackendType, BackendData, BackendV6Data only when set.
    public func json() -> Data {
        var s = "{\"PublicIP\":\"\(publicIP)\",\"PublicIPv6\":"
        s += publicIPv6.map { "\"\($0)\"" } ?? "null"
        if let t = backendType, !t.isEmpty { s += ",\"BackendType\":" + Self.quote(t) }
        var out = Data(s.utf8)
        if let d = backendData, !d.isEmpty {
            out.append(contentsOf: Array(",\"BackendData\":".utf8))
            out.append(d)
        }
        if let d = backendV6Data, !d.isEmpty {
            out.append(contentsOf: Array(",\"BackendV6Data\":".utf8))
            out.append(d)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// Reads a lease value; unknown fields are ignored, keys match case-insensitively (as Go does).
    public init(json: Data, key: String) throws(LeaseError) {
        let v: JSONValue
        do { v = try JSONValue.parse(json) } catch {
            throw .malformedLease(key: key, reason: "value is not JSON: \(String(decoding: json.prefix(80), as: UTF8.self))")
        }
        guard case .object = v else { throw .malformedLease(key: key, reason: "value is not a JSON object") }
        guard let ipText = v[caseInsensitive: "PublicIP"]?.stringValue else {
            throw .malformedLease(key: key, reason: "PublicIP is missing")
        }
        guard let ip = IPv4Address(ipText) else { throw .malformedLease(key: key, reason: "PublicIP \"\(ipText)\" is not an IPv4 address") }
        publicIP = ip
        publicIPv6 = nil
        if let t = v[caseInsensitive: "PublicIPv6"]?.stringValue, !t.isEmpty {
            guard let a = IPv6Address(t) else { throw .malformedLease(key: key, reason: "PublicIPv6 \"\(t)\" is not an IPv6 address") }
            publicIPv6 = a
        }
        backendType = v[caseInsensitive: "BackendType"]?.stringValue
        backendData = v[caseInsensitive: "BackendData"].flatMap { $0.isNull ? nil : $0.encoded() }
        backendV6Data = v[caseInsensitive: "BackendV6Data"].flatMap { $0.isNull ? nil : $0.encoded() }
    }

    static func quote(_ s: String) -> String {
        let data = (try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

/// One node's claim on a subnet, as stored under `<prefix>/subnets/`.
public struct Lease: Sendable, Equatable {
    public var subnet: SubnetKey
    public var attributes: LeaseAttributes
    /// The etcd lease keeping the key alive; 0 for a reservation (never expires).
    public var etcdLease: Int64
    /// etcd's mod_revision of the key: used to change it only if nobody else has.
    public var modRevision: Int64
    /// etcd's create_revision of the key: of two overlapping leases the older one wins.
    public var createRevision: Int64

    public init(subnet: SubnetKey, attributes: LeaseAttributes, etcdLease: Int64, modRevision: Int64, createRevision: Int64 = 0) {
        self.subnet = subnet
        self.attributes = attributes
        self.etcdLease = etcdLease
        self.modRevision = modRevision
        self.createRevision = createRevision
    }

    /// A reservation is a lease key with no etcd lease: permanent, set by an operator.
    public var isReservation: Bool { etcdLease == 0 }
}

/// The etcd keys Twill uses, under a prefix (flannel's default `/coreos.com/network`).
public struct EtcdLayout: Sendable, Equatable {
    public var prefix: String

    public init(prefix: String = "/coreos.com/network") {
        var p = prefix
        while p.hasSuffix("/") && p.count > 1 { p.removeLast() }
        self.prefix = p
    }

    public var configKey: String { prefix + "/config" }
    public var subnetsPrefix: String { prefix + "/subnets/" }
    public func key(for subnet: SubnetKey) -> String { subnetsPrefix + subnet.description }

    /// The subnet a key names, or nil when the key is not a lease key.
    public func subnet(fromKey key: String) throws(LeaseError) -> SubnetKey? {
        guard key.hasPrefix(subnetsPrefix) else { return nil }
        return try SubnetKey(parsing: String(key.dropFirst(subnetsPrefix.count)))
    }
}
