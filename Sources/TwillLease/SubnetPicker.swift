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
}
