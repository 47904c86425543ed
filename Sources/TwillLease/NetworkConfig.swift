import TwillAddress

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The cluster network config stored at `<prefix>/config`, in flannel's JSON, with flannel's
/// defaults applied and its rules checked.
public struct NetworkConfig: Sendable, Equatable {
    public var enableIPv4: Bool
    public var enableIPv6: Bool
    /// The families the network runs, from `EnableIPv4` and `EnableIPv6`.
    public var families: IPFamilies { IPFamilies(ipv4: enableIPv4, ipv6: enableIPv6) }
    /// The whole IPv4 overlay (FLANNEL_NETWORK); nil only when IPv4 is disabled.
    public var network: IPv4Network?
    /// Prefix length of each node's subnet.
    public var subnetLength: Int
    /// First and last subnet handed out (aligned to `subnetLength`).
    public var subnetMin: IPv4Address
    public var subnetMax: IPv4Address
    public var ipv6Network: IPv6Network?
    public var ipv6SubnetLength: Int
    public var ipv6SubnetMin: IPv6Address?
    public var ipv6SubnetMax: IPv6Address?
    /// `Backend.Type`, lower-cased; "udp" when there is no Backend (flannel's default).
    public var backendType: String
    /// The whole Backend object, for the backend to read its own keys (Port, VNI, ...).
    public var backend: JSONValue
    /// flannel's `EnableNFTables`: forward and masquerade rules in nftables, not iptables.
    public var enableNFTables: Bool

    /// Parses and validates config JSON. Errors say which key is wrong and why.
    public init(json: Data) throws(ConfigError) {
        let root: JSONValue
        do { root = try JSONValue.parse(json) } catch {
            throw ConfigError("not valid JSON (\(Self.shortError(error))): \(String(decoding: json.prefix(120), as: UTF8.self))")
        }
        guard case .object = root else { throw ConfigError("must be a JSON object, not \(root.kindName)") }
        try self.init(root)
    }

    init(_ root: JSONValue) throws(ConfigError) {
        func string(_ key: String) throws(ConfigError) -> String? {
            guard let v = root[caseInsensitive: key], !v.isNull else { return nil }
            guard let s = v.stringValue else { throw ConfigError("\(key) must be a string, not \(v.kindName)") }
            return s
        }
        func int(_ key: String) throws(ConfigError) -> Int? {
            guard let v = root[caseInsensitive: key], !v.isNull else { return nil }
            guard let n = v.intValue else {
                throw ConfigError("\(key) must be a whole number, not \(v.kindName == "a number" ? "\(v.numberValue ?? 0)" : v.kindName)")
            }
            return n
        }
        func bool(_ key: String) throws(ConfigError) -> Bool? {
            guard let v = root[caseInsensitive: key], !v.isNull else { return nil }
            guard let b = v.boolValue else { throw ConfigError("\(key) must be true or false, not \(v.kindName)") }
            return b
        }

        enableIPv4 = try bool("EnableIPv4") ?? true
        enableIPv6 = try bool("EnableIPv6") ?? false
        guard enableIPv4 || enableIPv6 else { throw ConfigError("EnableIPv4 and EnableIPv6 are both false: nothing to do") }
        enableNFTables = try bool("EnableNFTables") ?? false

        // Backend: flannel's code defaults to udp when absent.
        if let b = root[caseInsensitive: "Backend"], !b.isNull {
            guard case .object = b else { throw ConfigError("Backend must be an object like {\"Type\":\"vxlan\"}, not \(b.kindName)") }
            guard let t = b[caseInsensitive: "Type"] else { throw ConfigError("Backend has no Type (udp, vxlan, host-gw)") }
            guard let ts = t.stringValue, !ts.isEmpty else { throw ConfigError("Backend.Type must be a non-empty string") }
            backend = b
            backendType = ts.lowercased()
        } else {
            backend = .object(["Type": .string("udp")])
            backendType = "udp"
        }

        // IPv4
        network = nil
        subnetLength = 0
        subnetMin = .any
        subnetMax = .any
        if enableIPv4 {
            guard let text = try string("Network"), !text.isEmpty else {
                throw ConfigError("Network is missing (an IPv4 CIDR such as \"10.244.0.0/16\")")
            }
            let net: IPv4Network
            do { net = try IPv4Network(parsing: text, strict: false) } catch {
                throw ConfigError("Network: \(error)")
            }
            network = net
            if let len = try int("SubnetLen"), len != 0 {
                guard len <= 30 else { throw ConfigError("SubnetLen \(len) is larger than /30") }
                guard len >= net.prefixLength + 2 else {
                    throw ConfigError(
                        "SubnetLen \(len) is too short for Network \(net): it must be at least /\(net.prefixLength + 2) so the network holds at least four subnets"
                    )
                }
                subnetLength = len
            } else if net.prefixLength <= 22 {
                subnetLength = 24
            } else if net.prefixLength <= 28 {
                subnetLength = net.prefixLength + 2
            } else {
                throw ConfigError("Network \(net) is too small: the smallest useful network is a /28")
            }
            let first = net.subnet(at: 1, length: subnetLength)
            let last = net.subnet(at: net.subnetCount(length: subnetLength) - 1, length: subnetLength)
            subnetMin = try Self.bound(
                "SubnetMin", try string("SubnetMin"), default: first?.address ?? net.address, in: net, length: subnetLength)
            subnetMax = try Self.bound(
                "SubnetMax", try string("SubnetMax"), default: last?.address ?? net.address, in: net, length: subnetLength)
            guard subnetMin <= subnetMax else { throw ConfigError("SubnetMin \(subnetMin) is above SubnetMax \(subnetMax)") }
        }

        // IPv6: flannel's rules, as for IPv4 (the smallest network a /124, default /64).
        ipv6Network = nil
        ipv6SubnetLength = 0
        ipv6SubnetMin = nil
        ipv6SubnetMax = nil
        if enableIPv6 {
            guard let text = try string("IPv6Network"), !text.isEmpty else {
                throw ConfigError("EnableIPv6 is true but IPv6Network is missing (a CIDR such as \"fd00:10:244::/56\")")
            }
            let net: IPv6Network
            do { net = try IPv6Network(parsing: text, strict: false) } catch { throw ConfigError("IPv6Network: \(error)") }
            ipv6Network = net
            if let len = try int("IPv6SubnetLen"), len != 0 {
                guard len <= 126 else { throw ConfigError("IPv6SubnetLen \(len) is larger than /126") }
                guard len >= net.prefixLength + 2 else {
                    throw ConfigError(
                        "IPv6SubnetLen \(len) is too short for IPv6Network \(net): it must be at least /\(net.prefixLength + 2)")
                }
                ipv6SubnetLength = len
            } else if net.prefixLength <= 62 {
                ipv6SubnetLength = 64
            } else if net.prefixLength <= 124 {
                ipv6SubnetLength = net.prefixLength + 2
            } else {
                throw ConfigError("IPv6Network \(net) is too small: the smallest useful network is a /124")
            }
            func bound6(_ key: String, _ defaultValue: IPv6Address?) throws(ConfigError) -> IPv6Address? {
                guard let t = try string(key) else { return defaultValue }
                let a: IPv6Address
                do { a = try IPv6Address(parsing: t) } catch { throw ConfigError("\(key): \(error)") }
                guard net.contains(a) else { throw ConfigError("\(key) \(a) is not inside IPv6Network \(net)") }
                guard (try? IPv6Network(address: a, prefixLength: ipv6SubnetLength)) != nil else {
                    throw ConfigError("\(key) \(a) is not on a /\(ipv6SubnetLength) boundary")
                }
                return a
            }
            ipv6SubnetMin = try bound6("IPv6SubnetMin", net.subnet(at: 1, length: ipv6SubnetLength)?.address)
            // The last subnet, also where there are 2^64 or more of them (no count to index by).
            let last6 = (try? IPv6Network(containing: net.lastAddress, prefixLength: ipv6SubnetLength))?.address
            ipv6SubnetMax = try bound6("IPv6SubnetMax", last6)
            if let lo = ipv6SubnetMin, let hi = ipv6SubnetMax, hi < lo {
                throw ConfigError("IPv6SubnetMin \(lo) is above IPv6SubnetMax \(hi)")
            }
        }
    }

    private static func bound(_ key: String, _ text: String?, default d: IPv4Address, in net: IPv4Network, length: Int) throws(ConfigError)
        -> IPv4Address
    {
        guard let text else { return d }
        let a: IPv4Address
        do { a = try IPv4Address(parsing: text) } catch { throw ConfigError("\(key): \(error)") }
        guard net.contains(a) else { throw ConfigError("\(key) \(a) is not inside Network \(net)") }
        guard (try? IPv4Network(address: a, prefixLength: length)) != nil else {
            throw ConfigError("\(key) \(a) is not on a /\(length) boundary")
        }
        return a
    }

    static func shortError(_ error: any Error) -> String {
        if let d = error as? DecodingError, case .dataCorrupted(let ctx) = d { return ctx.debugDescription }
        return "\(error)"
    }

    /// Every subnet leases may use: from SubnetMin to SubnetMax.
    public var subnetRange: (first: IPv4Network, count: UInt64)? {
        guard let net = network,
            let first = try? IPv4Network(address: subnetMin, prefixLength: subnetLength),
            let last = try? IPv4Network(address: subnetMax, prefixLength: subnetLength),
            let i0 = net.index(of: first), let i1 = net.index(of: last), i1 >= i0
        else { return nil }
        return (first, i1 - i0 + 1)
    }

    /// Whether `subnet` may be leased under this config (right length, inside the range).
    public func fits(_ subnet: IPv4Network) -> Bool {
        guard let net = network else { return false }
        return subnet.prefixLength == subnetLength && net.contains(subnet)
            && subnet.address >= subnetMin && subnet.address <= subnetMax
    }

    /// Every IPv6 subnet leases may use: from IPv6SubnetMin to IPv6SubnetMax (a count past
    /// 2^64 is capped: nobody scans that far).
    public var ipv6SubnetRange: (first: IPv6Network, count: UInt64)? {
        guard let net = ipv6Network, let lo = ipv6SubnetMin, let hi = ipv6SubnetMax,
            let first = try? IPv6Network(address: lo, prefixLength: ipv6SubnetLength),
            let last = try? IPv6Network(address: hi, prefixLength: ipv6SubnetLength),
            let i0 = net.index(of: first), let i1 = net.index(of: last), i1 >= i0
        else { return nil }
        return (first, i1 - i0 == UInt64.max ? UInt64.max : i1 - i0 + 1)
    }

    /// Whether the IPv6 `subnet` may be leased under this config.
    public func fits(_ subnet: IPv6Network) -> Bool {
        guard let net = ipv6Network, let lo = ipv6SubnetMin, let hi = ipv6SubnetMax else { return false }
        return subnet.prefixLength == ipv6SubnetLength && net.contains(subnet)
            && subnet.address >= lo && subnet.address <= hi
    }

    /// Whether a lease key suits this config: each enabled family's subnet fits, and the key
    /// names no subnet of a disabled family (so that a key always says what the node routes).
    public func fits(_ key: SubnetKey) -> Bool {
        let v4 = enableIPv4 ? (key.ipv4Subnet.map { fits($0) } ?? false) : key.ipv4Subnet == nil
        let v6 = enableIPv6 ? (key.ipv6.map { fits($0) } ?? false) : key.ipv6 == nil
        return v4 && v6
    }

    /// An integer key of the Backend object (Port, VNI), if present.
    public func backendInt(_ key: String) -> Int? { backend[caseInsensitive: key]?.intValue }
    /// A boolean key of the Backend object (DirectRouting), if present.
    public func backendBool(_ key: String) -> Bool? { backend[caseInsensitive: key]?.boolValue }
}

/// A network config that cannot be used; `reason` names the key and the problem.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
