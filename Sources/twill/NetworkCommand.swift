import ArgumentParser
import TwillEtcd
import TwillLease
import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network",
        abstract: "Show or set the cluster network config (<prefix>/config).",
        subcommands: [Show.self, Set.self],
        defaultSubcommand: Show.self)

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the network config and the values derived from it.")
        @OptionGroup var etcd: EtcdOptions

        func run() async throws {
            let client = try etcd.client()
            let key = etcd.layout.configKey
            guard let kv = try await client.get(key).kvs.first else { throw LeaseError.configNotFound(key: key) }
            print(kv.valueString)
            do {
                let c = try NetworkConfig(json: kv.value)
                print(
                    "# network \(c.network.map { "\($0)" } ?? "-"), subnets /\(c.subnetLength) from \(c.subnetMin) to \(c.subnetMax) (\(c.subnetRange?.count ?? 0) subnets), backend \(c.backendType)"
                )
            } catch {
                throw LeaseError.invalidConfig(key: key, reason: error.reason)
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the network config, after checking it.",
            discussion:
                "Give --file (flannel's JSON) or --network with optional --subnet-len and --backend. A different existing config is only replaced with --force."
        )
        @OptionGroup var etcd: EtcdOptions
        @Option(help: "A file holding the config JSON ('-' for standard input).") var file: String?
        @Option(help: "The overlay network, e.g. 10.244.0.0/16.") var network: String?
        @Option(name: .customLong("subnet-len"), help: "Prefix length of each node's subnet.") var subnetLen: Int?
        @Option(help: "Backend type: udp, vxlan, host-gw (or alloc).") var backend: String?
        @Option(help: "Backend UDP port (udp, vxlan).") var port: Int?
        @Option(help: "VXLAN network identifier.") var vni: Int?
        @Option(name: .customLong("ipv6-network"), help: "Dual stack: the IPv6 overlay network (EnableIPv6), e.g. fd00:10:244::/56.")
        var ipv6Network: String?
        @Option(name: .customLong("ipv6-subnet-len"), help: "Prefix length of each node's IPv6 subnet (default 64).") var ipv6SubnetLen:
            Int?
        @Flag(help: "Replace an existing, different config.") var force = false

        func validate() throws {
            if file == nil, network == nil { throw ValidationError("give --file or --network") }
            if file != nil, network != nil || subnetLen != nil || backend != nil || ipv6Network != nil {
                throw ValidationError("--file cannot be combined with --network/--subnet-len/--backend/--ipv6-network")
            }
            if ipv6SubnetLen != nil, ipv6Network == nil { throw ValidationError("--ipv6-subnet-len needs --ipv6-network") }
        }

        func json() throws -> Data {
            if let file {
                if file == "-" { return Data(StandardIO.readInput()) }
                do {
                    guard let d = try Files.read(file) else { throw CLIError("cannot read \(file): no such file") }
                    return Data(d)
                } catch let e as SystemError {
                    throw CLIError("cannot read \(file): \(e.errno)")
                }
            }
            var object: [String: JSONValue] = ["Network": .string(network ?? "")]
            if let subnetLen { object["SubnetLen"] = .number(Double(subnetLen)) }
            if let ipv6Network {
                object["EnableIPv6"] = .bool(true)
                object["IPv6Network"] = .string(ipv6Network)
                if let ipv6SubnetLen { object["IPv6SubnetLen"] = .number(Double(ipv6SubnetLen)) }
            }
            var b: [String: JSONValue] = ["Type": .string(backend ?? "udp")]
            if let port { b["Port"] = .number(Double(port)) }
            if let vni { b["VNI"] = .number(Double(vni)) }
            if backend != nil || port != nil || vni != nil { object["Backend"] = .object(b) }
            return JSONValue.object(object).encoded()
        }

        func run() async throws {
            let data = try json()
            let key = etcd.layout.configKey
            let parsed: NetworkConfig
            do { parsed = try NetworkConfig(json: data) } catch {
                throw CLIError("refusing to write an invalid config: \(error.reason)")
            }
            let client = try etcd.client()
            if let existing = try await client.get(key).kvs.first {
                if existing.value == data || (try? NetworkConfig(json: existing.value)) == parsed {
                    print("\(key) already holds this config")
                    return
                }
                guard force else {
                    throw CLIError(
                        "\(key) already holds a different config:\n  \(existing.valueString)\nrefusing to replace it without --force (nodes keep leases only while they fit the config)"
                    )
                }
                let r = try await client.txn(
                    compare: [.unchanged(key, modRevision: existing.modRevision)], success: [.put(key: key, value: data)], failure: [])
                guard r.succeeded else { throw CLIError("\(key) changed while writing; try again") }
            } else {
                let r = try await client.txn(compare: [.absent(key)], success: [.put(key: key, value: data)], failure: [])
                guard r.succeeded else {
                    throw CLIError("\(key) was written by someone else meanwhile; check it with `twill network show`")
                }
            }
            print("wrote \(key): \(String(decoding: data, as: UTF8.self))")
        }
    }
}
