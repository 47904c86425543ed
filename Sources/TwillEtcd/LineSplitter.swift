/// Splits a byte stream into newline-terminated lines. HTTP chunks do not respect message
/// boundaries: a chunk may hold half a message or several, so bytes are kept until their
/// newline arrives.
struct LineSplitter: Sendable {
    private var pending: [UInt8] = []
    /// A line longer than this is not a message the gateway would send.
    static let maxLine = 64 << 20

    enum Failure: Error, Equatable { case lineTooLong(Int) }

    /// Adds `bytes` and calls `body` for each completed line (without its newline; empty lines
    /// are skipped).
    mutating func append(_ bytes: UnsafeRawBufferPointer, _ body: ([UInt8]) -> Void) throws(Failure) {
        var start = 0
        for i in 0..<bytes.count where bytes[i] == UInt8(ascii: "\n") {
            pending.append(contentsOf: bytes[start..<i])
            if !pending.isEmpty && pending != [UInt8(ascii: "\r")] { body(pending) }
            pending.removeAll(keepingCapacity: true)
            start = i + 1
        }
        pending.append(contentsOf: bytes[start..<bytes.count])
        if pending.count > Self.maxLine { throw .lineTooLong(pending.count) }
    }

    /// Convenience for tests and callers holding an array.
    mutating func append(_ bytes: [UInt8], _ body: ([UInt8]) -> Void) throws(Failure) {
        var failure: Failure?
        bytes.withUnsafeBytes { raw in
            do throws(Failure) { try append(raw, body) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Bytes received after the last newline.
    var remainder: [UInt8] { pending }
}
