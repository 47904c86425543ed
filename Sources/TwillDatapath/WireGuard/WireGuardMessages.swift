/// WireGuard's message formats (little-endian fields; a type byte, then three zero bytes).
public enum WireGuardMessage {
    public static let initiation: UInt8 = 1
    public static let response: UInt8 = 2
    public static let cookieReply: UInt8 = 3
    public static let transport: UInt8 = 4

    public static let initiationSize = 148
    public static let responseSize = 92
    public static let cookieReplySize = 64
    /// Type, receiver index and counter before a transport message's ciphertext.
    public static let transportHeaderSize = 16
    public static let tagSize = 16
    /// A transport message with no plaintext: a keepalive.
    public static let keepaliveSize = transportHeaderSize + tagSize
    /// Plaintext is zero-padded to a multiple of this.
    public static let paddingMultiple = 16

    // Offsets in an initiation.
    static let initiationSender = 4
    static let initiationEphemeral = 8
    static let initiationStatic = 40
    static let initiationTimestamp = 88
    static let initiationMAC1 = 116
    static let initiationMAC2 = 132
    // Offsets in a response.
    static let responseSender = 4
    static let responseReceiver = 8
    static let responseEphemeral = 12
    static let responseEmpty = 44
    static let responseMAC1 = 60
    static let responseMAC2 = 76
    // Offsets in a cookie reply.
    static let cookieReceiver = 4
    static let cookieNonce = 8
    static let cookieEncrypted = 32

    /// The message type of a datagram whose type and reserved bytes are well-formed, and
    /// whose size is right for the type (exact for 1-3, at least a keepalive for 4); nil
    /// for anything else, which is dropped without a reply.
    public static func type(of datagram: UnsafeRawBufferPointer) -> UInt8? {
        guard datagram.count >= 4, datagram[1] == 0, datagram[2] == 0, datagram[3] == 0 else { return nil }
        switch datagram[0] {
        case initiation: return datagram.count == initiationSize ? initiation : nil
        case response: return datagram.count == responseSize ? response : nil
        case cookieReply: return datagram.count == cookieReplySize ? cookieReply : nil
        case transport: return datagram.count >= keepaliveSize ? transport : nil
        default: return nil
        }
    }

    /// The plaintext length once padded: to a multiple of 16, but never past the MTU (a
    /// packet longer than the MTU, a GSO segment say, pads its remainder), as WireGuard does.
    @inline(__always)
    public static func paddedLength(_ length: Int, mtu: Int) -> Int {
        guard mtu > 0 else { return (length + paddingMultiple - 1) & ~(paddingMultiple - 1) }
        let last = length > mtu ? length % mtu : length
        let padded = min((last + paddingMultiple - 1) & ~(paddingMultiple - 1), mtu)
        return length + padded - last
    }
}

extension Array where Element == UInt8 {
    mutating func putLE32(_ v: UInt32, at offset: Int) {
        for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }

    func le32(at offset: Int) -> UInt32 {
        UInt32(self[offset]) | UInt32(self[offset + 1]) << 8 | UInt32(self[offset + 2]) << 16 | UInt32(self[offset + 3]) << 24
    }

    mutating func put(_ bytes: [UInt8], at offset: Int) {
        for (i, b) in bytes.enumerated() { self[offset + i] = b }
    }

    func slice(_ offset: Int, _ count: Int) -> [UInt8] { Array(self[offset..<(offset + count)]) }
}
