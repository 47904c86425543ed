import TwillAddress
import TwillEtcd
import TwillLease

/// Everything one node's agent needs to know, from flags (flannel's names) and environment.
public struct AgentConfiguration: Sendable {
    public var etcd: EtcdConfiguration
    public var layout: EtcdLayout
    /// `--iface`: interface names or addresses, first match wins.
    public var ifaces: [String] = []
    /// `--iface-regex`: patterns matched against interface names and addresses.
    public var ifaceRegex: [String] = []
    /// `--iface-can-reach`: the interface the kernel routes this address through.
    public var ifaceCanReach: IPv4Address?
    /// Masquerade with `--random-fully` (off with `--ip-masq-fully-random-disable`).
    public var ipMasqFullyRandom: Bool = true
    /// `--ip-blackhole-route`: a blackhole route for this node's subnet.
    public var blackholeRoute: Bool = false
    /// `--tun-name`: the udp backend's TUN, one of Twill's devices.
    public var tunName: String = "twill0"
    /// `--public-ip`: the address peers send to, when it is not the interface's own (NAT).
    public var publicIP: IPv4Address?
    public var publicIPv6: IPv6Address?
    /// `--subnet-file`.
    public var subnetFile: String = SubnetEnv.defaultPath
    /// TTL of the etcd lease behind this node's subnet lease (flannel: 24 h).
    public var leaseTTL: Duration = .seconds(24 * 3600)
    /// `--subnet-lease-renew-margin`: renew at least this long before expiry.
    public var renewMargin: Duration = .seconds(60 * 60)
    /// `--ip-masq`: written to subnet.env as FLANNEL_IPMASQ.
    public var ipMasq: Bool = false
    /// `--iptables-resync`: how often the masquerade/forward rules are checked and restored.
    public var iptablesResync: Duration = .seconds(5)
    /// `--iptables-forward-rules`: accept overlay traffic in FORWARD (flannel's default).
    public var iptablesForwardRules: Bool = true
    /// `--release-on-exit`: give the subnet back on a clean shutdown (flannel default: keep it).
    public var releaseOnExit: Bool = false
    /// How often the backend is reconciled with the kernel even when nothing was noticed.
    public var resyncInterval: Duration = .seconds(60)
    /// How often to look for the network config while it is missing or invalid.
    public var configRetryInterval: Duration = .seconds(1)

    public init(etcd: EtcdConfiguration, layout: EtcdLayout = EtcdLayout()) {
        self.etcd = etcd
        self.layout = layout
    }

    /// How often the lease is refreshed: a third of the TTL, and never later than the margin
    /// before expiry; at least a second.
    public var renewInterval: Duration {
        let byMargin = leaseTTL - renewMargin
        let third = leaseTTL / 3
        let chosen = byMargin > .zero ? min(byMargin, third) : third
        return max(chosen, .seconds(1))
    }

    /// The etcd lease TTL in whole seconds (etcd's unit).
    var ttlSeconds: Int64 { max(Int64(leaseTTL.components.seconds), 2) }
}
