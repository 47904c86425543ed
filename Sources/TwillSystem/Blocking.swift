import Dispatch

/// The one way Twill runs blocking work (libcurl transfers, subprocesses such as iptables,
/// netlink round trips, blocking reads) from async code: on threads outside Swift's
/// cooperative pool, so that async callers are suspended rather than a pool thread held (the
/// pool has only as many threads as cores: two on a small node).
public enum Blocking {
    // Queues made with DispatchQueue(label:) run on overcommitting threads: a blocked item
    // makes dispatch start another thread instead of starving the others.
    private static let queue = DispatchQueue(label: "twill.blocking", attributes: .concurrent)

    /// Runs `body` off the cooperative pool and returns its result.
    public static func run<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        try await run(on: queue, body)
    }

    /// A serial lane: work given to it runs off the pool, one item at a time, in order (the
    /// iptables passes, which must not interleave).
    public final class Lane: Sendable {
        private let queue: DispatchQueue

        /// `label` names the lane's thread in a debugger or `top -H`.
        public init(label: String) { queue = DispatchQueue(label: label) }

        /// Runs `body` on the lane after what was given to it before, and returns its result.
        public func run<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
            try await Blocking.run(on: queue, body)
        }
    }

    private static func run<T: Sendable, E: Error>(
        on queue: DispatchQueue, _ body: @escaping @Sendable () throws(E) -> T
    ) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(E) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}
