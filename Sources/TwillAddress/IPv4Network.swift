/// An IPv4 network (CIDR block) such as `10.0.0.0/8`.
///
/// The stored ``address`` is always the network address: host bits are zero. This is
/// enforced by every initialiser so that equal networks compare and hash equal.
public struct IPv4Network: Hashable, Sendable, CustomStringConvertible,
    LosslessStringConvertible, Codable
{
    /// The network address (the first address, with all host bits zero).
    public let address: IPv4Address

    /// The number of leading network bits, in `0...32`.
    public let prefixLength: Int

    /// The whole IPv4 address space, `0.0.0.0/0`.
    public static let all = IPv4Network(uncheckedAddress: .any, prefixLength: 0)

    /// Creates a network from its network address and prefix length.
    ///
    /// - Throws: ``AddressError`` if `prefixLength` is outside `0...32` or `address` has
    ///   host bits set (e.g. `10.0.0.5/24`); use ``init(containing:prefixLength:)`` to
    ///   mask them instead.
    public init(address: IPv4Address, prefixLength: Int) throws(AddressError) {
        try Self.checkPrefix(prefixLength, input: "\(address)/\(prefixLength)")
        let masked = IPv4Address(rawValue: address.rawValue & Self.mask(prefixLength))
        guard masked == address else {
            let text = "\(address)/\(prefixLength)"
            throw AddressError(
                kind: .ipv4Network, input: text,
                reason: "\(text) has host bits set; the network is \(masked)/\(prefixLength)")
        }
        self.init(uncheckedAddress: masked, prefixLength: prefixLength)
    }

    /// Creates the network of the given length that contains `address`, clearing host bits.
    ///
    /// - Throws: ``AddressError`` if `prefixLength` is outside `0...32`.
    public init(containing address: IPv4Address, prefixLength: Int) throws(AddressError) {
        try Self.checkPrefix(prefixLength, input: "\(address)/\(prefixLength)")
        self.init(
            uncheckedAddress: IPv4Address(rawValue: address.rawValue & Self.mask(prefixLength)),
            prefixLength: prefixLength)
    }

    /// Parses CIDR notation such as `10.0.0.0/8`.
    ///
    /// The address part follows ``IPv4Address/init(parsing:)``; the prefix length is a
    /// decimal number in `0...32` without sign or leading zeros. A bare address without
    /// `/len` is an error, because silently assuming `/32` hides configuration mistakes.
    ///
    /// - Parameters:
    ///   - text: The CIDR text.
    ///   - strict: When true (the default), host bits must be zero (`10.0.0.5/24` is
    ///     rejected); when false they are masked off (`10.0.0.5/24` becomes `10.0.0.0/24`).
    /// - Throws: ``AddressError`` with kind ``AddressError/Kind/ipv4Network``.
    public init(parsing text: String, strict: Bool = true) throws(AddressError) {
        let (addressPart, prefixPart): (Substring, Substring)
        switch ParseSupport.splitNetwork(text) {
        case .success(let parts): (addressPart, prefixPart) = parts
        case .failure(let failure):
            throw AddressError(kind: .ipv4Network, input: text, reason: failure.reason)
        }
        let rawAddress: UInt32
        do throws(AddressError) {
            rawAddress = try IPv4Address.parse(addressPart)
        } catch {
            throw error.rewrapped(as: .ipv4Network, input: text)
        }
        let length: Int
        switch ParseSupport.parsePrefixLength(prefixPart, maximum: 32) {
        case .success(let value): length = value
        case .failure(let failure):
            throw AddressError(kind: .ipv4Network, input: text, reason: failure.reason)
        }
        let address = IPv4Address(rawValue: rawAddress)
        do throws(AddressError) {
            if strict {
                try self.init(address: address, prefixLength: length)
            } else {
                try self.init(containing: address, prefixLength: length)
            }
        } catch {
            // Keep the reason but name exactly what the caller passed in.
            throw error.rewrapped(as: .ipv4Network, input: text)
        }
    }

    /// Parses strict CIDR notation, returning nil if the text is not valid.
    ///
    /// Use ``init(parsing:strict:)`` to learn why a text was rejected.
    public init?(_ description: String) {
        guard let network = try? IPv4Network(parsing: description) else { return nil }
        self = network
    }

    /// Builds a network without validation; callers guarantee the invariants.
    init(uncheckedAddress address: IPv4Address, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// The CIDR form, e.g. `10.0.0.0/8`.
    public var description: String { "\(address)/\(prefixLength)" }

    /// The netmask, e.g. `255.255.255.0` for a `/24`.
    public var netmask: IPv4Address { IPv4Address(rawValue: Self.mask(prefixLength)) }

    /// The host mask (inverse netmask), e.g. `0.0.0.255` for a `/24`.
    public var hostmask: IPv4Address { IPv4Address(rawValue: ~Self.mask(prefixLength)) }

    /// The last address in the network (the broadcast address for ordinary subnets).
    public var broadcast: IPv4Address { IPv4Address(rawValue: address.rawValue | ~Self.mask(prefixLength)) }

    /// The number of host bits, `32 - prefixLength`.
    public var hostBits: Int { 32 - prefixLength }

    /// The number of addresses in the network, `2^(32 - prefixLength)`; a `/0` holds 4294967296.
    public var addressCount: UInt64 { UInt64(1) << UInt64(hostBits) }

    /// Whether `address` lies inside this network.
    public func contains(_ address: IPv4Address) -> Bool {
        address.rawValue & Self.mask(prefixLength) == self.address.rawValue
    }

    /// Whether `network` lies entirely inside this network (a network contains itself).
    public func contains(_ network: IPv4Network) -> Bool {
        network.prefixLength >= prefixLength && contains(network.address)
    }

    /// Whether the two networks share at least one address.
    ///
    /// CIDR blocks either nest or are disjoint, so overlap means one contains the other.
    public func overlaps(_ other: IPv4Network) -> Bool {
        contains(other) || other.contains(self)
    }

    /// The address at offset `n` within the network (`0` is the network address).
    ///
    /// - Returns: nil if `n >= addressCount`.
    public func host(_ n: UInt64) -> IPv4Address? {
        guard n < addressCount else { return nil }
        return IPv4Address(rawValue: address.rawValue | UInt32(truncatingIfNeeded: n))
    }

    /// The network of the same length that directly follows this one.
    ///
    /// - Returns: nil if this network ends at `255.255.255.255`.
    public func next() -> IPv4Network? {
        let last = broadcast.rawValue
        guard last != .max else { return nil }
        return IPv4Network(uncheckedAddress: IPv4Address(rawValue: last + 1), prefixLength: prefixLength)
    }

    /// The network of the same length that directly precedes this one.
    ///
    /// - Returns: nil if this network starts at `0.0.0.0`.
    public func previous() -> IPv4Network? {
        guard address.rawValue != 0 else { return nil }
        let before = address.rawValue - 1
        return IPv4Network(
            uncheckedAddress: IPv4Address(rawValue: before & Self.mask(prefixLength)),
            prefixLength: prefixLength)
    }

    /// The enclosing network of the given shorter (or equal) length.
    ///
    /// - Returns: nil if `length` is not in `0...prefixLength`.
    public func supernet(length: Int) -> IPv4Network? {
        guard (0...prefixLength).contains(length) else { return nil }
        return IPv4Network(
            uncheckedAddress: IPv4Address(rawValue: address.rawValue & Self.mask(length)),
            prefixLength: length)
    }

    /// How many subnets of prefix length `length` fit in this network.
    ///
    /// - Returns: `2^(length - prefixLength)`, or 0 if `length` is shorter than
    ///   ``prefixLength`` or longer than 32.
    public func subnetCount(length: Int) -> UInt64 {
        guard (prefixLength...32).contains(length) else { return 0 }
        return UInt64(1) << UInt64(length - prefixLength)
    }

    /// The `index`-th subnet of prefix length `length` inside this network, in address order.
    ///
    /// - Returns: nil if `length` is invalid for this network or `index` is out of range.
    public func subnet(at index: UInt64, length: Int) -> IPv4Network? {
        guard index < subnetCount(length: length) else { return nil }
        // index < 2^(length - prefixLength) ≤ 2^32, so it fits and the shifted offset only
        // touches host bits of self; OR-ing is therefore exact.
        let offset = UInt32(truncatingIfNeeded: index) << UInt32(32 - length)
        return IPv4Network(
            uncheckedAddress: IPv4Address(rawValue: address.rawValue | offset),
            prefixLength: length)
    }

    /// All subnets of prefix length `length` inside this network, in address order.
    ///
    /// The sequence is lazy: splitting a `/8` into `/32`s computes each element on demand.
    ///
    /// - Throws: ``AddressError`` if `length` is shorter than ``prefixLength`` or longer than 32.
    public func subnets(length: Int) throws(AddressError) -> IPv4SubnetSequence {
        guard (prefixLength...32).contains(length) else {
            throw AddressError(
                kind: .ipv4Network, input: description,
                reason: "subnet length \(length) is outside \(prefixLength)...32")
        }
        return IPv4SubnetSequence(network: self, length: length)
    }

    /// The position of `subnet` among this network's subnets of the same length as `subnet`.
    ///
    /// The inverse of ``subnet(at:length:)``.
    ///
    /// - Returns: nil if `subnet` is not inside this network.
    public func index(of subnet: IPv4Network) -> UInt64? {
        guard contains(subnet) else { return nil }
        let offset = subnet.address.rawValue & ~Self.mask(prefixLength)
        return UInt64(offset) >> UInt64(32 - subnet.prefixLength)
    }

    /// Decodes a network from a single strict CIDR string such as `10.0.0.0/8`.
    ///
    /// - Throws: `DecodingError.dataCorrupted` naming the text and the reason if it is invalid.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do throws(AddressError) {
            self = try IPv4Network(parsing: text)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    /// Encodes the network as a single CIDR string.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// The netmask for a prefix length in `0...32` as an integer.
    static func mask(_ prefixLength: Int) -> UInt32 {
        // Shifting a 32-bit value by 32 is explicit here rather than relying on
        // Swift's overshift semantics, so the /0 case is obvious to readers.
        prefixLength == 0 ? 0 : UInt32.max << UInt32(32 - prefixLength)
    }

    /// Throws unless `prefixLength` is in `0...32`.
    static func checkPrefix(_ prefixLength: Int, input: String) throws(AddressError) {
        guard (0...32).contains(prefixLength) else {
            throw AddressError(
                kind: .ipv4Network, input: input,
                reason: "prefix length \(prefixLength) is outside 0...32")
        }
    }
}

/// A lazy sequence of the equally sized subnets of an ``IPv4Network``, in address order.
///
/// Elements are computed from an index, so iteration never allocates and even splitting
/// `0.0.0.0/0` into `/32`s costs nothing until elements are consumed.
/// `underestimatedCount` deliberately stays 0 so generic code such as `map` does not try
/// to reserve storage for billions of elements up front; use `count` for the size.
public struct IPv4SubnetSequence: Sequence, Sendable {
    /// The network being split.
    public let network: IPv4Network

    /// The prefix length of every element.
    public let length: Int

    /// The number of elements, `2^(length - network.prefixLength)`.
    public var count: UInt64 { network.subnetCount(length: length) }

    /// Creates the sequence; `length` must already be validated against `network`.
    init(network: IPv4Network, length: Int) {
        self.network = network
        self.length = length
    }

    /// Returns an iterator starting at the first subnet.
    public func makeIterator() -> Iterator {
        Iterator(network: network, length: length, index: 0, count: count)
    }

    /// Iterates the subnets by index.
    public struct Iterator: IteratorProtocol, Sendable {
        let network: IPv4Network
        let length: Int
        var index: UInt64
        let count: UInt64

        /// The next subnet, or nil after the last one.
        public mutating func next() -> IPv4Network? {
            guard index < count else { return nil }
            defer { index += 1 }
            return network.subnet(at: index, length: length)
        }
    }
}
