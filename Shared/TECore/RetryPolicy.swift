/// How long to wait before the next attempt after a failure: exponential, capped, jittered.
///
/// The delay for attempt *n* (the *n*-th retry, from 1) is `min(initial × multiplierⁿ⁻¹, maximum)`, then
/// jittered **downwards** by a random share of at most `jitter` of it: a delay lies in
/// `capped × (1 − jitter) … capped`. `jitter: 1` is "full jitter" (uniform over `0…capped`), `0.5` is "equal
/// jitter", `0` is none. Downwards only, so `maximum` is a hard cap and many clients spread out below it
/// instead of reconnecting in lockstep. (Not "decorrelated" jitter: that needs the previous delay as state,
/// and every caller here keeps only a failure count.)
///
/// A pure value: the randomness comes in as an argument, so state machines that hold a policy stay
/// deterministic under test (pass a seeded generator or the fraction itself).
public struct RetryPolicy: Sendable, Equatable {
    /// Delay before the first retry (before jitter).
    public var initial: Duration
    /// Upper bound of any delay.
    public var maximum: Duration
    /// Growth per attempt; 1 keeps the delay at `initial`.
    public var multiplier: Double
    /// Largest share of a delay taken off at random, in 0…1.
    public var jitter: Double

    public init(initial: Duration, maximum: Duration, multiplier: Double = 2, jitter: Double = 0.5) {
        precondition(initial >= .zero && maximum >= initial, "RetryPolicy: need 0 <= initial <= maximum")
        precondition(multiplier >= 1, "RetryPolicy: multiplier must be >= 1")
        precondition((0...1).contains(jitter), "RetryPolicy: jitter must be in 0...1")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
    }

    /// The delay before attempt `attempt` (1 = the first retry) without jitter; `.zero` for `attempt < 1`.
    public func ceiling(attempt: Int) -> Duration {
        guard attempt >= 1 else { return .zero }
        let cap = Self.nanoseconds(maximum)
        var value = Self.nanoseconds(initial)
        var n = 1
        // Stops at the cap, so a large attempt count costs a few multiplications at most.
        while n < attempt, value < cap, multiplier > 1 {
            value *= multiplier
            n += 1
        }
        return .nanoseconds(Int64(min(value, cap)))
    }

    /// The delay for `attempt` with `fraction` (in 0..<1, a uniform random draw) choosing the jitter.
    public func delay(attempt: Int, fraction: Double) -> Duration {
        let ceiling = Self.nanoseconds(ceiling(attempt: attempt))
        let share = jitter * min(max(fraction, 0), 1)
        return .nanoseconds(Int64(ceiling * (1 - share)))
    }

    public func delay(attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        delay(attempt: attempt, fraction: Double.random(in: 0..<1, using: &generator))
    }

    public func delay(attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(attempt: attempt, using: &generator)
    }

    static func nanoseconds(_ d: Duration) -> Double {
        let (seconds, attoseconds) = d.components
        return Double(seconds) * 1e9 + Double(attoseconds) / 1e9
    }
}

/// A retry loop's failure count under a policy: `failed()` gives the next wait, `succeeded()` starts over.
/// For loops that keep running after a success (pollers, writers); a single operation uses `retrying`.
public struct RetryBackoff: Sendable, Equatable {
    public let policy: RetryPolicy
    /// Failures since the last success.
    public private(set) var failures = 0

    public init(_ policy: RetryPolicy) {
        self.policy = policy
    }

    /// Counts a failure; returns the delay before the next attempt.
    public mutating func failed() -> Duration {
        failures += 1
        return policy.delay(attempt: failures)
    }

    /// Counts a failure; the jitter drawn from `generator` (deterministic tests).
    public mutating func failed(using generator: inout some RandomNumberGenerator) -> Duration {
        failures += 1
        return policy.delay(attempt: failures, using: &generator)
    }

    public mutating func succeeded() {
        failures = 0
    }
}

/// Runs `operation` until it succeeds, waiting `policy`'s delay between attempts.
///
/// Gives up (rethrowing the last error) when `isRetryable` says no or after `maxAttempts` attempts in all.
/// Cancellation ends it: it is checked before every attempt, and the default `sleep` (`Task.sleep`) throws
/// `CancellationError` when the task is cancelled while waiting. A service passes a `sleep` that also ends
/// at graceful shutdown. `onRetry` sees each failure about to be retried (for a log line or a counter).
public func retrying<T>(
    _ policy: RetryPolicy,
    maxAttempts: Int = .max,
    isRetryable: (any Error) -> Bool = { _ in true },
    onRetry: (_ attempt: Int, _ error: any Error, _ delay: Duration) -> Void = { _, _, _ in },
    sleep: (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
    isolation: isolated (any Actor)? = #isolation,
    operation: () async throws -> T
) async throws -> T {
    var attempt = 0
    while true {
        try Task.checkCancellation()
        attempt += 1
        do {
            return try await operation()
        } catch {
            if error is CancellationError || attempt >= maxAttempts || !isRetryable(error) { throw error }
            let delay = policy.delay(attempt: attempt)
            onRetry(attempt, error, delay)
            try await sleep(delay)
        }
    }
}
