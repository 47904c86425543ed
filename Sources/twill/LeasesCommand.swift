import ArgumentParser
import TwillAddress
import TwillEtcd
import TwillLease
import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct LeasesCommand: AsyncParsableCommand {
    /// A lease key's subnets as CIDRs: `10.244.7.0/24`, `10.244.7.0/24 and fd00::/64`, `fd00::/64`.
    static func cidrs(_ key: SubnetKey) -> String {
        [key.ipv4Subnet.map { "\($0)" }, key.ipv6.map { "\($0)" }].compactMap { $0 }.joined(separator: " and ")
    }

    static let configuration = CommandConfiguration(
        commandName: "leases",
        abstract: "List, reserve and release subnet leases.",
        subcommands: [List.self, Reserve.self, Release.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print every lease: subnet, public IP, backend, expiry.")
        @OptionGroup var etcd: EtcdOptions
        @Flag(help: "Print JSON instead of a table.") var json = false

        struct Row: Encodable {
            var subnet: String
            var publicIP: String
            /// A dual-stack lease's IPv6 subnet and PublicIPv6.
            var subnet6: String?
            var publicIPv6: String?
            var backend: String
            /// Seconds left, nil for a reservation.
            var expiresIn: Int64?
            var reserved: Bool
        }

        func run() async throws {
            let client = try etcd.client()
            let registry = SubnetRegistry(etcd: client, layout: etcd.layout)
            let (_, leases) = try await registry.leases()
            var rows: [Row] = []
            for l in leases {
                var ttl: Int64?
                if !l.isReservation { ttl = try await client.timeToLive(lease: l.etcdLease)?.ttl }
                rows.append(
                    Row(
                        subnet: l.subnet.ipv4Subnet.map { "\($0)" } ?? "-",
                        publicIP: l.attributes.publicIP == .any ? "-" : "\(l.attributes.publicIP)",
                        subnet6: l.subnet.ipv6.map { "\($0)" }, publicIPv6: l.attributes.publicIPv6.map { "\($0)" },
                        backend: l.attributes.backendType ?? "udp", expiresIn: ttl, reserved: l.isReservation))
            }
            if json {
                let e = JSONEncoder()
                e.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try e.encode(rows), as: UTF8.self))
                return
            }
            // The IPv6 columns only when some lease is dual stack.
            let dual = rows.contains { $0.subnet6 != nil || $0.publicIPv6 != nil }
            let table =
                [["SUBNET", "PUBLIC-IP"] + (dual ? ["IPV6-SUBNET", "PUBLIC-IPV6"] : []) + ["BACKEND", "EXPIRES"]]
                + rows.map { r in
                    [r.subnet, r.publicIP] + (dual ? [r.subnet6 ?? "-", r.publicIPv6 ?? "-"] : [])
                        + [r.backend, r.reserved ? "reserved" : (r.expiresIn.map(Self.human) ?? "expired")]
                }
            let widths = (0..<table[0].count).map { c in table.map { $0[c].count }.max() ?? 0 }
            for row in table {
                print(
                    row.enumerated().map { $1 + String(repeating: " ", count: max(0, widths[$0] - $1.count)) }.joined(separator: "  ")
                        .trimmingWhitespace())
            }
        }

        static func human(_ seconds: Int64) -> String {
            let h = seconds / 3600
            let m = (seconds % 3600) / 60
            let s = seconds % 60
            if h > 0 { return "in \(h)h\(m)m" }
            if m > 0 { return "in \(m)m\(s)s" }
            return "in \(s)s"
        }
    }

    struct Reserve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reserve a subnet for a node: a lease that never expires.",
            discussion:
                "Dual stack: give the IPv6 subnet with --ipv6-subnet. IPv6-only: give the IPv6 subnet as the argument and --public-ipv6.")
        @OptionGroup var etcd: EtcdOptions
        @Argument(help: "The subnet, e.g. 10.244.7.0/24 (or, IPv6-only, fd00:10:244:7::/64).") var subnet: String
        @Option(name: .customLong("ipv6-subnet"), help: "Dual stack: the node's IPv6 subnet too.") var ipv6Subnet: String?
        @Option(name: .customLong("public-ip"), help: "The node's public IPv4 address.") var publicIP: String?
        @Option(name: .customLong("public-ipv6"), help: "The node's public IPv6 address.") var publicIPv6: String?

        func run() async throws {
            var key: SubnetKey
            if let v6 = try? IPv6Network(parsing: subnet) {
                guard ipv6Subnet == nil else { throw ValidationError("--ipv6-subnet goes with an IPv4 subnet argument") }
                key = SubnetKey(ipv4: SubnetKey.ipv6OnlyPart, ipv6: v6)
            } else {
                guard let net = try? IPv4Network(parsing: subnet) else {
                    throw ValidationError("\(subnet) is not a subnet like 10.244.7.0/24 or fd00:10:244:7::/64")
                }
                key = SubnetKey(ipv4: net)
                if let text = ipv6Subnet {
                    guard let v6 = try? IPv6Network(parsing: text) else {
                        throw ValidationError("--ipv6-subnet \(text) is not an IPv6 subnet like fd00:10:244:7::/64")
                    }
                    key.ipv6 = v6
                }
            }
            let ip = try publicIP.map { text throws -> IPv4Address in
                guard let ip = IPv4Address(text) else { throw ValidationError("--public-ip \(text) is not an IPv4 address") }
                return ip
            }
            let ip6 = try publicIPv6.map { text throws -> IPv6Address in
                guard let ip = IPv6Address(text) else { throw ValidationError("--public-ipv6 \(text) is not an IPv6 address") }
                return ip
            }
            if key.ipv4Subnet != nil, ip == nil { throw ValidationError("--public-ip is required for an IPv4 subnet") }
            if key.ipv4Subnet == nil, ip6 == nil { throw ValidationError("--public-ipv6 is required for an IPv6-only subnet") }
            let registry = try etcd.registry()
            if let config = try? await registry.networkConfig(), !config.fits(key) {
                throw CLIError("\(key) does not fit the network config (\(Self.describe(config)))")
            }
            let lease = try await registry.reserve(key, attributes: LeaseAttributes(publicIP: ip ?? .any, publicIPv6: ip6))
            print("reserved \(LeasesCommand.cidrs(lease.subnet)) for \(ip.map { "\($0)" } ?? ip6.map { "\($0)" } ?? "?")")
        }

        static func describe(_ c: NetworkConfig) -> String {
            var parts: [String] = []
            if let n = c.network { parts.append("\(n) in /\(c.subnetLength) subnets from \(c.subnetMin) to \(c.subnetMax)") }
            if let n = c.ipv6Network { parts.append("\(n) in /\(c.ipv6SubnetLength) subnets") }
            return parts.joined(separator: "; ") + (c.enableIPv6 ? "; a key must name an IPv6 subnet too" : "")
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete the lease or reservation of a subnet.")
        @OptionGroup var etcd: EtcdOptions
        @Argument(help: "The subnet, IPv4 or IPv6, e.g. 10.244.7.0/24 (a dual-stack lease goes whole).") var subnet: String

        func run() async throws {
            let registry = try etcd.registry()
            let old: Lease?
            if let v6 = try? IPv6Network(parsing: subnet) {
                old = try await registry.remove(v6)
            } else if let net = try? IPv4Network(parsing: subnet) {
                old = try await registry.remove(net)
            } else {
                throw ValidationError("\(subnet) is not a subnet like 10.244.7.0/24 or fd00:10:244:7::/64")
            }
            guard let old else { throw CLIError("no lease for \(subnet)") }
            print(
                "released \(LeasesCommand.cidrs(old.subnet)) (was \(old.attributes.publicIP == .any ? old.attributes.publicIPv6.map { "\($0)" } ?? "?" : "\(old.attributes.publicIP)")\(old.isReservation ? ", reserved" : ""))"
            )
        }
    }
}
