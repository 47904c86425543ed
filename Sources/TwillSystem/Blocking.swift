import Dispatch

/// Runs blocking work (a subprocess, a blocking read) on threads outside Swift's cooperative
/// pool, so that async callers are suspended rather than a pool thread held.
public enum Blocking {
    // A queue made with DispatchQueue(label:) runs on overcommitting threads: a blocked item
    // makes dispatch start another thread instead of starving the others.
    private static let queue = DispatchQueue(label: "twill.blocking", attributes: .concurrent)

    /// Runs `body` off the cooperative pool and returns its result.
    public static func run<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
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
