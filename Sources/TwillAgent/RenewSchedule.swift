/// When the lease is refreshed, and how retries are paced so that any etcd outage shorter
/// than the lease's TTL never loses it.
///
/// After a success the next renewal follows ``interval`` later. After a failure the retry
/// waits 1 s, doubling up to ``maximumRetry``, but never more than a fifth of the time the
/// lease has left, so at least four more attempts are made before it would expire, and
/// never less than ``minimumRetry`` (no spinning). Once the lease has expired, retries come
/// every few seconds to get it back.
public struct RenewSchedule: Sendable, Equatable {
    /// Between two successful renewals.
    public var interval: Duration
    public var minimumRetry: Duration = .milliseconds(250)
    public var maximumRetry: Duration = .seconds(60)
    /// Retry period once the lease is past its expiry.
    public var afterExpiry: Duration = .seconds(5)

    public init(interval: Duration) {
        self.interval = interval
    }

    /// The wait before retry number `attempt` (1 for the first retry), with `remaining` left
    /// before the lease expires (nil for a reservation, which never does).
    public func retryDelay(attempt: Int, remaining: Duration?) -> Duration {
        var delay = min(Duration.seconds(1) * (1 << min(max(attempt, 1) - 1, 16)), maximumRetry)
        if let remaining {
            delay = remaining <= .zero ? min(delay, afterExpiry) : min(delay, remaining / 5)
        }
        return max(delay, minimumRetry)
    }

    /// How long one renewal attempt may take: the lease must not run out while it waits.
    public func attemptDeadline(remaining: Duration?, requestTimeout: Duration) -> Duration {
        guard let remaining, remaining > .zero else { return requestTimeout }
        return max(min(requestTimeout, remaining / 2), minimumRetry)
    }
}
