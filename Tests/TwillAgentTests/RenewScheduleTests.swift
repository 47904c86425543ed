import Testing

@testable import TwillAgent

@Suite struct RenewScheduleTests {
    let schedule = RenewSchedule(interval: .seconds(3))

    @Test func backoffDoublesUpToTheCap() {
        #expect(schedule.retryDelay(attempt: 1, remaining: nil) == .seconds(1))
        #expect(schedule.retryDelay(attempt: 2, remaining: nil) == .seconds(2))
        #expect(schedule.retryDelay(attempt: 5, remaining: nil) == .seconds(16))
        #expect(schedule.retryDelay(attempt: 40, remaining: nil) == .seconds(60))
    }

    /// Never more than a fifth of what remains, never less than the floor; after expiry every
    /// few seconds.
    @Test func retriesArePacedByTheTimeLeft() {
        #expect(schedule.retryDelay(attempt: 6, remaining: .seconds(10)) == .seconds(2))
        #expect(schedule.retryDelay(attempt: 1, remaining: .seconds(3)) == .milliseconds(600))
        #expect(schedule.retryDelay(attempt: 9, remaining: .milliseconds(500)) == .milliseconds(250))
        #expect(schedule.retryDelay(attempt: 9, remaining: .zero) == .seconds(5))
        #expect(schedule.retryDelay(attempt: 1, remaining: .seconds(-4)) == .seconds(1))
    }

    /// An outage shorter than the TTL, starting right after a renewal: the attempts made
    /// before expiry keep coming (at least four of them) until the lease would run out.
    @Test func anOutageShorterThanTheTTLKeepsBeingRetried() {
        let ttl = Duration.seconds(10)
        var t = schedule.interval
        var attempts: [Duration] = []
        var attempt = 1
        while t < ttl, attempts.count < 100 {
            attempts.append(t)
            t += schedule.retryDelay(attempt: attempt, remaining: ttl - t)
            attempt += 1
        }
        #expect(attempts.count >= 5)
        // The last gap before expiry is short: a cluster back 1 s before expiry is caught.
        #expect(ttl - attempts.last! < .seconds(1))
    }

    @Test func anAttemptNeverOutlivesHalfTheTimeLeft() {
        #expect(schedule.attemptDeadline(remaining: .seconds(8), requestTimeout: .seconds(10)) == .seconds(4))
        #expect(schedule.attemptDeadline(remaining: nil, requestTimeout: .seconds(10)) == .seconds(10))
        #expect(schedule.attemptDeadline(remaining: .seconds(100), requestTimeout: .seconds(10)) == .seconds(10))
    }
}
