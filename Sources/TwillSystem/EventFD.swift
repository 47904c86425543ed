import CTwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// An eventfd: how one thread wakes another that polls (a packet thread's stop, the
/// WireGuard control thread's queue, the netlink monitor's stop). Non-blocking and
/// close-on-exec. Not owning: whoever makes it closes it once no thread polls it.
public struct EventFD: Sendable, Hashable {
    /// The descriptor, for `poll`.
    public let descriptor: Int32

    /// A new eventfd with a zero counter.
    public static func make() throws(SystemError) -> EventFD {
        EventFD(descriptor: try Syscall.valueOrThrow("eventfd") { twill_eventfd() })
    }

    private init(descriptor: Int32) { self.descriptor = descriptor }

    /// Wakes the pollers (adds one to the counter). A full counter already wakes them, so
    /// EAGAIN is not a failure; an interrupted write is retried.
    @inline(__always)
    public func signal() {
        var one: UInt64 = 1
        _ = Syscall.retryOnInterrupt { write(descriptor, &one, 8) }
    }

    /// Clears the counter so that the next poll waits for a new signal.
    @inline(__always)
    public func drain() {
        var value: UInt64 = 0
        _ = Syscall.retryOnInterrupt { read(descriptor, &value, 8) }
    }

    /// Closes the descriptor; no thread may poll it any more.
    public func close() { Syscall.close(descriptor) }
}
