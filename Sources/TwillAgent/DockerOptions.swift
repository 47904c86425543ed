import TwillAddress
import TwillLease
import TwillNetlink

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Docker daemon options from subnet.env, as flannel's mk-docker-opts.sh makes them.
public struct DockerOptions: Sendable, Equatable {
    /// `--bip`: the bridge address, the subnet's first host with the subnet's length.
    public var bip: String
    public var mtu: Int
    /// Docker's own masquerade is off when Twill masquerades (FLANNEL_IPMASQ=true).
    public var ipMasq: Bool
    /// `--fixed-cidr-v6` (with `--ipv6`): this node's IPv6 subnet, for a dual-stack network.
    public var fixedCIDRv6: String?

    public init(env: SubnetEnv) throws(LeaseError) {
        guard let subnet = env.subnet, env.mtu > 0 else {
            throw .subnetFile(path: "subnet.env", reason: "has no FLANNEL_SUBNET or FLANNEL_MTU")
        }
        bip = "\(subnet.host(1) ?? subnet.address)/\(subnet.prefixLength)"
        mtu = env.mtu
        ipMasq = !env.ipMasq
        fixedCIDRv6 = env.ipv6Subnet.map { s in "\((try? IPv6Network(containing: s.address, prefixLength: s.prefixLength)) ?? s)" }
    }

    /// The environment file's text: individual `DOCKER_OPT_*` variables and/or one combined
    /// variable, with mk-docker-opts.sh's names and quoting.
    public func environmentFile(individual: Bool, combined: Bool, combinedKey: String = "DOCKER_OPTS", includeIPMasq: Bool = true) -> String
    {
        let both = !individual && !combined
        var opts: [(String, String)] = [("DOCKER_OPT_BIP", "--bip=\(bip)")]
        if includeIPMasq { opts.append(("DOCKER_OPT_IPMASQ", "--ip-masq=\(ipMasq)")) }
        opts.append(("DOCKER_OPT_MTU", "--mtu=\(mtu)"))
        if let v6 = fixedCIDRv6 { opts.append(("DOCKER_OPT_IPV6", "--ipv6 --fixed-cidr-v6=\(v6)")) }
        var lines: [String] = []
        if individual || both { lines += opts.map { "\($0.0)=\"\($0.1)\"" } }
        if combined || both { lines.append("\(combinedKey)=\" \(opts.map(\.1).joined(separator: " "))\"") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `/etc/docker/daemon.json` members.
    public var daemonJSON: String {
        let v6 = fixedCIDRv6.map { ",\"ipv6\":true,\"fixed-cidr-v6\":\"\($0)\"" } ?? ""
        return "{\"bip\":\"\(bip)\",\"mtu\":\(mtu),\"ip-masq\":\(ipMasq)\(v6)}"
    }

    /// mk-docker-opts.sh refuses a subnet that the host already reaches through a gateway:
    /// a bridge there would shadow a real network. `routes` are the main table's routes
    /// (`Netlink.routes()`); `name` gives a device's name for the message.
    public static func conflictingRoute(for subnet: IPv4Network, routes: [Route], name: (Int32) -> String) -> String? {
        for r in routes where r.type == 1 && r.destination.prefixLength > 0 {
            guard let gateway = r.gateway, r.destination.overlaps(subnet) else { continue }
            return "\(r.destination) via \(gateway) dev \(r.outputInterface.map(name) ?? "?")"
        }
        return nil
    }
}
