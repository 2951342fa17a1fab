import TECore
import Testing

@Suite("RetryPolicy", .timeLimit(.minutes(1)))
struct RetryPolicyTests {
    let policy = RetryPolicy(initial: .milliseconds(100), maximum: .seconds(5), multiplier: 2, jitter: 0.5)

    @Test func exponentialUpToTheCap() {
        #expect(policy.ceiling(attempt: 0) == .zero)
        #expect(policy.ceiling(attempt: -3) == .zero)
        #expect(policy.ceiling(attempt: 1) == .milliseconds(100))
        #expect(policy.ceiling(attempt: 2) == .milliseconds(200))
        #expect(policy.ceiling(attempt: 6) == .milliseconds(3200))
        #expect(policy.ceiling(attempt: 7) == .seconds(5))
        #expect(policy.ceiling(attempt: .max) == .seconds(5))
    }

    @Test func jitterTakesAtMostItsShareOffAndNeverExceedsTheCeiling() {
        #expect(policy.delay(attempt: 1, fraction: 0) == .milliseconds(100))
        #expect(policy.delay(attempt: 1, fraction: 0.5) == .milliseconds(75))
        #expect(policy.delay(attempt: 1, fraction: 1) == .milliseconds(50))
        #expect(policy.delay(attempt: 40, fraction: 1) == .milliseconds(2500))
        #expect(policy.delay(attempt: 0, fraction: 0.3) == .zero)
        var generator = SeededGenerator(seed: 1)
        for attempt in 1...20 {
            let ceiling = policy.ceiling(attempt: attempt)
            for _ in 0..<200 {
                let d = policy.delay(attempt: attempt, using: &generator)
                #expect(
                    d <= ceiling && d >= ceiling * 0.5, "attempt \(attempt): \(d) outside \(ceiling * 0.5)…\(ceiling)")
            }
        }
    }

    @Test func fullJitterSpreadsOverTheWholeRangeAndNoJitterIsExact() {
        let full = RetryPolicy(initial: .seconds(1), maximum: .seconds(1), jitter: 1)
        var generator = SeededGenerator(seed: 7)
        let draws = (0..<1000).map { _ in full.delay(attempt: 1, using: &generator) }
        #expect(draws.allSatisfy { $0 >= .zero && $0 <= .seconds(1) })
        #expect(draws.contains { $0 < .milliseconds(100) } && draws.contains { $0 > .milliseconds(900) })
        let none = RetryPolicy(initial: .milliseconds(25), maximum: .milliseconds(800), jitter: 0)
        #expect(
            (1...8).map { none.delay(attempt: $0) } == [25, 50, 100, 200, 400, 800, 800, 800].map { .milliseconds($0) })
    }

    @Test func aSeededGeneratorGivesTheSameDelays() {
        var a = SeededGenerator(seed: 42)
        var b = SeededGenerator(seed: 42)
        let first = (1...10).map { policy.delay(attempt: $0, using: &a) }
        let second = (1...10).map { policy.delay(attempt: $0, using: &b) }
        #expect(first == second)
        #expect(Set(first).count > 1)
    }

    @Test func multiplierOneKeepsTheInitialDelay() {
        let flat = RetryPolicy(initial: .milliseconds(10), maximum: .seconds(1), multiplier: 1, jitter: 0)
        #expect(flat.delay(attempt: 1) == .milliseconds(10))
        #expect(flat.delay(attempt: 1000) == .milliseconds(10))
    }

    @Test func backoffCountsFailuresAndStartsOverAfterASuccess() {
        var backoff = RetryBackoff(RetryPolicy(initial: .milliseconds(10), maximum: .milliseconds(40), jitter: 0))
        #expect(
            [backoff.failed(), backoff.failed(), backoff.failed(), backoff.failed()]
                == [10, 20, 40, 40].map { .milliseconds($0) })
        #expect(backoff.failures == 4)
        backoff.succeeded()
        #expect(backoff.failures == 0)
        #expect(backoff.failed() == .milliseconds(10))
    }
}

@Suite("retrying", .timeLimit(.minutes(1)))
struct RetryingTests {
    struct Transient: Error {}
    struct Fatal: Error {}
    let policy = RetryPolicy(initial: .milliseconds(1), maximum: .milliseconds(4), jitter: 0)

    @Test func retriesUntilSuccessWaitingThePolicysDelays() async throws {
        var calls = 0
        var waits: [Duration] = []
        var retried: [Int] = []
        let value = try await retrying(
            policy, onRetry: { attempt, _, _ in retried.append(attempt) }, sleep: { waits.append($0) }
        ) {
            calls += 1
            if calls < 5 { throw Transient() }
            return calls
        }
        #expect(value == 5)
        #expect(retried == [1, 2, 3, 4])
        #expect(waits == [1, 2, 4, 4].map { .milliseconds($0) })
    }

    @Test func stopsAtANonRetryableErrorAndAfterMaxAttempts() async {
        var calls = 0
        await #expect(throws: Fatal.self) {
            try await retrying(policy, isRetryable: { $0 is Transient }, sleep: { _ in }) {
                calls += 1
                if calls < 3 { throw Transient() }
                throw Fatal()
            }
        }
        #expect(calls == 3)
        calls = 0
        await #expect(throws: Transient.self) {
            try await retrying(policy, maxAttempts: 4, sleep: { _ in }) {
                calls += 1
                throw Transient()
            }
        }
        #expect(calls == 4)
    }

    @Test func cancellationEndsTheWait() async {
        let slow = RetryPolicy(initial: .seconds(3600), maximum: .seconds(3600), jitter: 0)
        let (attempted, attempts) = AsyncStream.makeStream(of: Int.self)
        let task = Task {
            var n = 0
            return try await retrying(slow) {
                n += 1
                attempts.yield(n)
                throw Transient()
            }
        }
        var iterator = attempted.makeAsyncIterator()
        #expect(await iterator.next() == 1)
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
    }

    @Test func aCancelledTaskDoesNotStartAnAttempt() async {
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            var calls = 0
            do {
                _ = try await retrying(policy) { calls += 1 }
            } catch {
                #expect(error is CancellationError)
            }
            return calls
        }
        #expect(await task.value == 0)
    }
}
