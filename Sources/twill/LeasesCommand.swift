import TwillSystem
import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import TwillAddress
import TwillEtcd
import TwillLease

struct LeasesCommand: AsyncParsableCommand {
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
                rows.append(Row(subnet: "\(l.subnet.ipv4)", publicIP: "\(l.attributes.publicIP)",
                                subnet6: l.subnet.ipv6.map { "\($0)" }, publicIPv6: l.attributes.publicIPv6.map { "\($0)" }, backend: l.attributes.backendType ?? "udp", expiresIn: ttl, reserved: l.isReservation))
            }
            if json {
                let e = JSONEncoder()
                e.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try e.encode(rows), as: UTF8.self))
                return
            }
            // The IPv6 columns only when some lease is dual stack.
            let dual = rows.contains { $0.subnet6 != nil || $0.publicIPv6 != nil }
            let table = [["SUBNET", "PUBLIC-IP"] + (dual ? ["IPV6-SUBNET", "PUBLIC-IPV6"] : []) + ["BACKEND", "EXPIRES"]] + rows.map { r in
                [r.subnet, r.publicIP] + (dual ? [r.subnet6 ?? "-", r.publicIPv6 ?? "-"] : [])
                    + [r.backend, r.reserved ? "reserved" : (r.expiresIn.map(Self.human) ?? "expired")]
            }
            let widths = (0..<table[0].count).map { c in table.map { $0[c].count }.max() ?? 0 }
            for row in table {
                print(row.enumerated().map { $1 + String(repeating: " ", count: max(0, widths[$0] - $1.count)) }.joined(separator: "  ").trimmingWhitespace())
            }
        }

        static func human(_ seconds: Int64) -> String {
            let h = seconds / 3600, m = (seconds % 3600) / 60, s = seconds % 60
            if h > 0 { return "in \(h)h\(m)m" }
            if m > 0 { return "in \(m)m\(s)s" }
            return "in \(s)s"
        }
    }

    struct Reserve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reserve a subnet for a node: a lease that never expires.")
        @OptionGroup var etcd: EtcdOptions
        @Argument(help: "The subnet, e.g. 10.244.7.0/24.") var subnet: String
        @Option(name: .customLong("public-ip"), help: "The node's public IPv4 address.") var publicIP: String

        func run() async throws {
            guard let net = try? IPv4Network(parsing: subnet) else { throw ValidationError("\(subnet) is not an IPv4 subnet like 10.244.7.0/24") }
            guard let ip = IPv4Address(publicIP) else { throw ValidationError("--public-ip \(publicIP) is not an IPv4 address") }
            let registry = try etcd.registry()
            if let config = try? await registry.networkConfig(), !config.fits(net) {
                throw CLIError("\(net) does not fit the network config (\(config.network.map { "\($0)" } ?? "-") in /\(config.subnetLength) subnets from \(config.subnetMin) to \(config.subnetMax))")
            }
            let lease = try await registry.reserve(net, publicIP: ip)
            print("reserved \(lease.subnet.ipv4) for \(ip)")
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete the lease or reservation of a subnet.")
        @OptionGroup var etcd: EtcdOptions
        @Argument(help: "The subnet, e.g. 10.244.7.0/24.") var subnet: String

        func run() async throws {
            guard let net = try? IPv4Network(parsing: subnet) else { throw ValidationError("\(subnet) is not an IPv4 subnet like 10.244.7.0/24") }
            guard let old = try await etcd.registry().remove(net) else { throw CLIError("no lease for \(net)") }
            print("released \(old.subnet.ipv4) (was \(old.attributes.publicIP)\(old.isReservation ? ", reserved" : ""))")
        }
    }
}
