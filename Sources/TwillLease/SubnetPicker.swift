import TwillAddress

/// Chooses free subnets, as flannel does: scan upward from SubnetMin, collect up to `limit`
/// free ones, pick one at random (so nodes starting together rarely collide).
public enum SubnetPicker {
    /// Free subnets inside the config's range, lowest first, at most `limit`.
    public static func freeSubnets(_ config: NetworkConfig, taken: Set<IPv4Network>, limit: Int = 100) -> [IPv4Network] {
        guard let (first, count) = config.subnetRange else { return [] }
        var out: [IPv4Network] = []
        var current: IPv4Network? = first
        var seen: UInt64 = 0
        while let s = current, seen < count, out.count < limit {
            if !taken.contains(s) { out.append(s) }
            seen += 1
            current = s.next()
        }
        return out
    }

    /// A random free subnet, or nil when none is left.
    public static func pick(_ config: NetworkConfig, taken: Set<IPv4Network>, using rng: inout some RandomNumberGenerator) -> IPv4Network? {
        freeSubnets(config, taken: taken).randomElement(using: &rng)
    }

    /// How many subnets the range holds and how many of `taken` fall inside it.
    public static func usage(_ config: NetworkConfig, taken: Set<IPv4Network>) -> (total: UInt64, taken: Int) {
        guard let (_, count) = config.subnetRange else { return (0, 0) }
        return (count, taken.filter { config.fits($0) }.count)
    }

    /// Free IPv6 subnets inside the config's IPv6 range, lowest first, at most `limit`
    /// (flannel's scan, upward from IPv6SubnetMin).
    public static func freeSubnets(_ config: NetworkConfig, taken: Set<IPv6Network>, limit: Int = 100) -> [IPv6Network] {
        guard let (first, count) = config.ipv6SubnetRange else { return [] }
        var out: [IPv6Network] = []
        var current: IPv6Network? = first
        var seen: UInt64 = 0
        while let s = current, seen < count, out.count < limit {
            if !taken.contains(s) { out.append(s) }
            seen += 1
            // Bounded: at most `limit` free ones, and a range mostly taken is at most as
            // large as the leases etcd holds plus `limit`.
            if seen > UInt64(taken.count + limit) { break }
            current = s.next()
        }
        return out
    }

    /// A random free IPv6 subnet, or nil when none is left.
    public static func pick(_ config: NetworkConfig, taken: Set<IPv6Network>, using rng: inout some RandomNumberGenerator) -> IPv6Network? {
        freeSubnets(config, taken: taken).randomElement(using: &rng)
    }
}
