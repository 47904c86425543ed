#if canImport(Glibc)
import Glibc
#endif

/// Key material: fixed-size bytes in memory of their own, zeroed when the last reference
/// goes (the timers also zero them early, ``wipe()``). Never printed: its description says
/// only its size.
public final class Secret: @unchecked Sendable, CustomStringConvertible { // written only before it is shared, or by wipe()
    public let count: Int
    let bytes: UnsafeMutableRawPointer

    /// `count` zero bytes.
    public init(count: Int) {
        self.count = count
        bytes = .allocate(byteCount: count, alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: count)
    }

    /// A copy of `source` (which the caller then wipes, if it held a secret).
    public convenience init(copying source: UnsafeRawBufferPointer) {
        self.init(count: source.count)
        if let base = source.baseAddress { bytes.copyMemory(from: base, byteCount: source.count) }
    }

    public convenience init(_ array: [UInt8]) {
        self.init(count: array.count)
        array.withUnsafeBytes { bytes.copyMemory(from: $0.baseAddress!, byteCount: array.count) }
    }

    /// `count` bytes from the system's CSPRNG (getrandom).
    public static func random(count: Int) -> Secret {
        let s = Secret(count: count)
        var g = SystemRandomNumberGenerator()
        var i = 0
        while i < count {
            var word = g.next()
            let n = min(8, count - i)
            withUnsafeBytes(of: &word) { s.bytes.advanced(by: i).copyMemory(from: $0.baseAddress!, byteCount: n) }
            word = 0
            i += n
        }
        return s
    }

    deinit {
        explicit_bzero(bytes, count)
        bytes.deallocate()
    }

    /// Zeroes the bytes now (the object stays usable, all zero).
    public func wipe() { explicit_bzero(bytes, count) }

    public func withBytes<T, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> T) throws(E) -> T {
        try body(UnsafeRawBufferPointer(start: bytes, count: count))
    }

    /// The bytes as an array: for tests and for values that are not secret once derived.
    public var array: [UInt8] { Array(UnsafeRawBufferPointer(start: bytes, count: count)) }

    /// Compares in constant time.
    public func constantTimeEquals(_ other: Secret) -> Bool {
        guard count == other.count else { return false }
        var d: UInt8 = 0
        for i in 0..<count { d |= bytes.load(fromByteOffset: i, as: UInt8.self) ^ other.bytes.load(fromByteOffset: i, as: UInt8.self) }
        return d == 0
    }

    public var description: String { "<secret, \(count) bytes>" }
}
