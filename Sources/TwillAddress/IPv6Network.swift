/// An IPv6 network (CIDR block) such as `fd00::/8` or `2001:db8::/32`.
///
/// The stored ``address`` is always the network address: host bits are zero. Counts are
/// `UInt64`; where a true count can reach 2^64 or more, the API says how it copes
/// (``addressCount`` saturates, ``subnetCount(length:)`` returns nil).
public struct IPv6Network: Hashable, Sendable, CustomStringConvertible,
    LosslessStringConvertible, Codable
{
    /// The network address (the first address, with all host bits zero).
    public let address: IPv6Address

    /// The number of leading network bits, in `0...128`.
    public let prefixLength: Int

    /// The whole IPv6 address space, `::/0`.
    public static let all = IPv6Network(uncheckedAddress: .any, prefixLength: 0)

    /// Creates a network from its network address and prefix length.
    ///
    /// - Throws: ``AddressError`` if `prefixLength` is outside `0...128` or `address` has
    ///   host bits set (e.g. `fd00::1/64`); use ``init(containing:prefixLength:)`` to mask
    ///   them instead.
    public init(address: IPv6Address, prefixLength: Int) throws(AddressError) {
        try Self.checkPrefix(prefixLength, input: "\(address)/\(prefixLength)")
        let masked = Self.masking(address, prefixLength)
        guard masked == address else {
            let text = "\(address)/\(prefixLength)"
            throw AddressError(
                kind: .ipv6Network, input: text,
                reason: "\(text) has host bits set; the network is \(masked)/\(prefixLength)")
        }
        self.init(uncheckedAddress: masked, prefixLength: prefixLength)
    }

    /// Creates the network of the given length that contains `address`, clearing host bits.
    ///
    /// - Throws: ``AddressError`` if `prefixLength` is outside `0...128`.
    public init(containing address: IPv6Address, prefixLength: Int) throws(AddressError) {
        try Self.checkPrefix(prefixLength, input: "\(address)/\(prefixLength)")
        self.init(uncheckedAddress: Self.masking(address, prefixLength), prefixLength: prefixLength)
    }

    /// Parses CIDR notation such as `2001:db8::/32`.
    ///
    /// The address part follows ``IPv6Address/init(parsing:)``; the prefix length is a
    /// decimal number in `0...128` without sign or leading zeros. A bare address without
    /// `/len` is an error, because silently assuming `/128` hides configuration mistakes.
    ///
    /// - Parameters:
    ///   - text: The CIDR text.
    ///   - strict: When true (the default), host bits must be zero; when false they are
    ///     masked off (`fd00::1/64` becomes `fd00::/64`).
    /// - Throws: ``AddressError`` with kind ``AddressError/Kind/ipv6Network``.
    public init(parsing text: String, strict: Bool = true) throws(AddressError) {
        let (addressPart, prefixPart): (Substring, Substring)
        switch ParseSupport.splitNetwork(text) {
        case .success(let parts): (addressPart, prefixPart) = parts
        case .failure(let failure):
            throw AddressError(kind: .ipv6Network, input: text, reason: failure.reason)
        }
        let address: IPv6Address
        do throws(AddressError) {
            address = try IPv6Address.parse(addressPart)
        } catch {
            throw error.rewrapped(as: .ipv6Network, input: text)
        }
        let length: Int
        switch ParseSupport.parsePrefixLength(prefixPart, maximum: 128) {
        case .success(let value): length = value
        case .failure(let failure):
            throw AddressError(kind: .ipv6Network, input: text, reason: failure.reason)
        }
        do throws(AddressError) {
            self =
                strict
                ? try IPv6Network(address: address, prefixLength: length)
                : try IPv6Network(containing: address, prefixLength: length)
        } catch {
            // Keep the reason but name exactly what the caller passed in.
            throw error.rewrapped(as: .ipv6Network, input: text)
        }
    }

    /// Parses strict CIDR notation, returning nil if the text is not valid.
    ///
    /// Use ``init(parsing:strict:)`` to learn why a text was rejected.
    public init?(_ description: String) {
        guard let network = try? IPv6Network(parsing: description) else { return nil }
        self = network
    }

    /// Builds a network without validation; callers guarantee the invariants.
    init(uncheckedAddress address: IPv6Address, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// The CIDR form with a canonical address, e.g. `2001:db8::/32`.
    public var description: String { "\(address)/\(prefixLength)" }

    /// The netmask as an address, e.g. `ffff:ffff:ffff:ffff::` for a `/64`.
    public var netmask: IPv6Address {
        let mask = Self.mask(prefixLength)
        return IPv6Address(high: mask.high, low: mask.low)
    }

    /// The host mask (inverse netmask), e.g. `::ffff:ffff:ffff:ffff` for a `/64`.
    public var hostmask: IPv6Address {
        let mask = Self.mask(prefixLength)
        return IPv6Address(high: ~mask.high, low: ~mask.low)
    }

    /// The last address in the network (IPv6 has no broadcast address).
    public var lastAddress: IPv6Address {
        let mask = Self.mask(prefixLength)
        return IPv6Address(high: address.high | ~mask.high, low: address.low | ~mask.low)
    }

    /// The number of host bits, `128 - prefixLength`.
    public var hostBits: Int { 128 - prefixLength }

    /// The number of addresses in the network, saturating at `UInt64.max`.
    ///
    /// Any network of length 64 or shorter reports `UInt64.max`; check ``hostBits`` when
    /// the exact size matters.
    public var addressCount: UInt64 {
        hostBits >= 64 ? .max : UInt64(1) << UInt64(hostBits)
    }

    /// Whether `address` lies inside this network.
    public func contains(_ address: IPv6Address) -> Bool {
        Self.masking(address, prefixLength) == self.address
    }

    /// Whether `network` lies entirely inside this network (a network contains itself).
    public func contains(_ network: IPv6Network) -> Bool {
        network.prefixLength >= prefixLength && contains(network.address)
    }

    /// Whether the two networks share at least one address.
    ///
    /// CIDR blocks either nest or are disjoint, so overlap means one contains the other.
    public func overlaps(_ other: IPv6Network) -> Bool {
        contains(other) || other.contains(self)
    }

    /// The address at offset `n` within the network (`0` is the network address).
    ///
    /// - Returns: nil if `n` is not smaller than the number of addresses; for networks of
    ///   length 64 or shorter every `UInt64` offset is valid.
    public func host(_ n: UInt64) -> IPv6Address? {
        if hostBits >= 64 {
            // The whole low half is host bits (and zero), so n drops straight in.
            return IPv6Address(high: address.high, low: n)
        }
        guard n < UInt64(1) << UInt64(hostBits) else { return nil }
        return IPv6Address(high: address.high, low: address.low | n)
    }

    /// The network of the same length that directly follows this one.
    ///
    /// - Returns: nil if this network ends at `ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff`.
    public func next() -> IPv6Network? {
        guard let start = lastAddress.advanced(by: 1) else { return nil }
        return IPv6Network(uncheckedAddress: start, prefixLength: prefixLength)
    }

    /// The network of the same length that directly precedes this one.
    ///
    /// - Returns: nil if this network starts at `::`.
    public func previous() -> IPv6Network? {
        guard let before = address.advanced(by: -1) else { return nil }
        return IPv6Network(uncheckedAddress: Self.masking(before, prefixLength), prefixLength: prefixLength)
    }

    /// The enclosing network of the given shorter (or equal) length.
    ///
    /// - Returns: nil if `length` is not in `0...prefixLength`.
    public func supernet(length: Int) -> IPv6Network? {
        guard (0...prefixLength).contains(length) else { return nil }
        return IPv6Network(uncheckedAddress: Self.masking(address, length), prefixLength: length)
    }

    /// How many subnets of prefix length `length` fit in this network.
    ///
    /// - Returns: `2^(length - prefixLength)`; 0 if `length` is shorter than
    ///   ``prefixLength`` or longer than 128; nil if the count does not fit in `UInt64`
    ///   (a difference of 64 bits or more).
    public func subnetCount(length: Int) -> UInt64? {
        guard (prefixLength...128).contains(length) else { return 0 }
        let difference = length - prefixLength
        guard difference < 64 else { return nil }
        return UInt64(1) << UInt64(difference)
    }

    /// The `index`-th subnet of prefix length `length` inside this network, in address order.
    ///
    /// Only the first 2^64 subnets are reachable by index when there are more.
    ///
    /// - Returns: nil if `length` is invalid for this network or `index` is out of range.
    public func subnet(at index: UInt64, length: Int) -> IPv6Network? {
        guard (prefixLength...128).contains(length) else { return nil }
        let difference = length - prefixLength
        if difference < 64, index >= UInt64(1) << UInt64(difference) { return nil }
        // index < 2^difference, so the shifted offset only touches host bits of self and
        // OR-ing it into the network address is exact.
        let offset = Self.shiftLeft(index, by: 128 - length)
        return IPv6Network(
            uncheckedAddress: IPv6Address(high: address.high | offset.high, low: address.low | offset.low),
            prefixLength: length)
    }

    /// All subnets of prefix length `length` inside this network, in address order.
    ///
    /// The sequence is lazy and works even when there are more than 2^64 subnets.
    ///
    /// - Throws: ``AddressError`` if `length` is shorter than ``prefixLength`` or longer than 128.
    public func subnets(length: Int) throws(AddressError) -> IPv6SubnetSequence {
        guard (prefixLength...128).contains(length) else {
            throw AddressError(
                kind: .ipv6Network, input: description,
                reason: "subnet length \(length) is outside \(prefixLength)...128")
        }
        return IPv6SubnetSequence(network: self, length: length)
    }

    /// The position of `subnet` among this network's subnets of the same length as `subnet`.
    ///
    /// The inverse of ``subnet(at:length:)``.
    ///
    /// - Returns: nil if `subnet` is not inside this network, or if its index does not
    ///   fit in `UInt64`.
    public func index(of subnet: IPv6Network) -> UInt64? {
        guard contains(subnet) else { return nil }
        let mask = Self.mask(prefixLength)
        let offsetHigh = subnet.address.high & ~mask.high
        let offsetLow = subnet.address.low & ~mask.low
        let shift = 128 - subnet.prefixLength
        switch shift {
        case 128...:
            return 0
        case 64...:
            return offsetHigh >> UInt64(shift - 64)
        case 0:
            return offsetHigh == 0 ? offsetLow : nil
        default:
            guard offsetHigh >> UInt64(shift) == 0 else { return nil }
            return offsetHigh << UInt64(64 - shift) | offsetLow >> UInt64(shift)
        }
    }

    /// Decodes a network from a single strict CIDR string such as `fd00::/8`.
    ///
    /// - Throws: `DecodingError.dataCorrupted` naming the text and the reason if it is invalid.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do throws(AddressError) {
            self = try IPv6Network(parsing: text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    /// Encodes the network as a single canonical CIDR string.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// The netmask halves for a prefix length in `0...128`.
    static func mask(_ prefixLength: Int) -> (high: UInt64, low: UInt64) {
        (mask64(min(prefixLength, 64)), mask64(max(prefixLength - 64, 0)))
    }

    /// A 64-bit mask with `bits` leading ones, `bits` in `0...64`.
    private static func mask64(_ bits: Int) -> UInt64 {
        bits == 0 ? 0 : UInt64.max << UInt64(64 - bits)
    }

    /// `address` with the host bits for `prefixLength` cleared.
    static func masking(_ address: IPv6Address, _ prefixLength: Int) -> IPv6Address {
        let mask = mask(prefixLength)
        return IPv6Address(high: address.high & mask.high, low: address.low & mask.low)
    }

    /// A 64-bit value shifted left by `shift` in `0...128` as a 128-bit (high, low) pair.
    private static func shiftLeft(_ value: UInt64, by shift: Int) -> (high: UInt64, low: UInt64) {
        switch shift {
        case 128...: return (0, 0)
        case 64...: return (value << UInt64(shift - 64), 0)
        case 0: return (0, value)
        default: return (value >> UInt64(64 - shift), value << UInt64(shift))
        }
    }

    /// Throws unless `prefixLength` is in `0...128`.
    static func checkPrefix(_ prefixLength: Int, input: String) throws(AddressError) {
        guard (0...128).contains(prefixLength) else {
            throw AddressError(
                kind: .ipv6Network, input: input,
                reason: "prefix length \(prefixLength) is outside 0...128")
        }
    }
}

/// A lazy sequence of the equally sized subnets of an ``IPv6Network``, in address order.
///
/// Each step derives the next element from the previous one, so iteration never allocates
/// and works even when there are more subnets than a `UInt64` can count.
/// `underestimatedCount` deliberately stays 0 so generic code such as `map` does not try
/// to reserve storage for billions of elements up front; use `count` for the size.
public struct IPv6SubnetSequence: Sequence, Sendable {
    /// The network being split.
    public let network: IPv6Network

    /// The prefix length of every element.
    public let length: Int

    /// The number of elements, or nil if it does not fit in `UInt64`.
    public var count: UInt64? { network.subnetCount(length: length) }

    /// Creates the sequence; `length` must already be validated against `network`.
    init(network: IPv6Network, length: Int) {
        self.network = network
        self.length = length
    }

    /// Returns an iterator starting at the first subnet.
    public func makeIterator() -> Iterator {
        Iterator(
            current: IPv6Network(uncheckedAddress: network.address, prefixLength: length),
            end: network.lastAddress)
    }

    /// Walks the subnets by stepping from one to the next.
    public struct Iterator: IteratorProtocol, Sendable {
        var current: IPv6Network?
        let end: IPv6Address

        /// The next subnet, or nil after the last one.
        public mutating func next() -> IPv6Network? {
            guard let result = current else { return nil }
            // Stop after the subnet that ends where the parent network ends.
            current = result.lastAddress == end ? nil : result.next()
            return result
        }
    }
}
