#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import TwillAddress
import TwillLease

/// Docker daemon options from subnet.env, as flannel's mk-docker-opts.sh makes them.
public struct DockerOptions: Sendable, Equatable {
    /// `--bip`: the bridge address, the subnet's first host with the subnet's length.
    public var bip: String
    public var mtu: Int
    /// Docker's own masquerade is off when Twill masquerades (FLANNEL_IPMASQ=true).
    public var ipMasq: Bool

    public init(env: SubnetEnv) throws(LeaseError) {
        guard let subnet = env.subnet, env.mtu > 0 else {
            throw .subnetFile(path: "subnet.env", reason: "has no FLANNEL_SUBNET or FLANNEL_MTU")
        }
        bip = "\(subnet.host(1) ?? subnet.address)/\(subnet.prefixLength)"
        mtu = env.mtu
        ipMasq = !env.ipMasq
    }

    /// The environment file's text: individual `DOCKER_OPT_*` variables and/or one combined
    /// variable, with mk-docker-opts.sh's names and quoting.
    public func environmentFile(individual: Bool, combined: Bool, combinedKey: String = "DOCKER_OPTS", includeIPMasq: Bool = true) -> String {
        let both = !individual && !combined
        var opts: [(String, String)] = [("DOCKER_OPT_BIP", "--bip=\(bip)")]
        if includeIPMasq { opts.append(("DOCKER_OPT_IPMASQ", "--ip-masq=\(ipMasq)")) }
        opts.append(("DOCKER_OPT_MTU", "--mtu=\(mtu)"))
        var lines: [String] = []
        if individual || both { lines += opts.map { "\($0.0)=\"\($0.1)\"" } }
        if combined || both { lines.append("\(combinedKey)=\" \(opts.map(\.1).joined(separator: " "))\"") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `/etc/docker/daemon.json` members.
    public var daemonJSON: String {
        "{\"bip\":\"\(bip)\",\"mtu\":\(mtu),\"ip-masq\":\(ipMasq)}"
    }

    /// mk-docker-opts.sh refuses a subnet that the host already reaches through a gateway:
    /// a bridge there would shadow a real network. `routes` is /proc/net/route's text.
    public static func conflictingRoute(for subnet: IPv4Network, routes: String) -> String? {
        for line in routes.split(separator: "\n").dropFirst() {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count >= 8, let dst = UInt32(f[1], radix: 16), let gw = UInt32(f[2], radix: 16),
                  let flags = UInt16(f[3], radix: 16), let mask = UInt32(f[7], radix: 16) else { continue }
            // /proc/net/route prints addresses in network byte order as a native-endian number.
            let d = IPv4Address(rawValue: UInt32(bigEndian: dst))
            let m = UInt32(bigEndian: mask)
            let len = m.nonzeroBitCount
            guard flags & 0x2 != 0, gw != 0, len > 0, let net = try? IPv4Network(address: d, prefixLength: len) else { continue }
            if net.overlaps(subnet) {
                return "\(net) via \(IPv4Address(rawValue: UInt32(bigEndian: gw))) dev \(f[0])"
            }
        }
        return nil
    }
}
