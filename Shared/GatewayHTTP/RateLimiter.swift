import GatewayEngine
import Synchronization

/// A token bucket: `rate` tokens a second up to `capacity`, one per request. A value type driven by the
/// caller's clock (nanoseconds, monotonic), so it is tested without sleeping.
struct TokenBucket: Sendable, Equatable {
    enum Verdict: Sendable, Equatable {
        case allowed
        /// Refused; a token will be there after this many whole seconds (at least 1: `Retry-After`).
        case limited(retryAfterSeconds: Int)
    }

    let ratePerSecond: Double
    let capacity: Double
    private(set) var tokens: Double
    /// When `tokens` was last brought up to date; nil until the first request (the bucket starts full).
    private var updatedNs: Int64?

    /// `GATEWAY_RATE_LIMIT`'s bucket: `ratePerSecond` with a burst of the same size (at least one request).
    init(ratePerSecond: Double) {
        self.ratePerSecond = ratePerSecond
        capacity = max(1, ratePerSecond)
        tokens = capacity
    }

    mutating func take(nowNs: Int64) -> Verdict {
        if let updatedNs, nowNs > updatedNs {
            tokens = min(capacity, tokens + Double(nowNs - updatedNs) / 1e9 * ratePerSecond)
        }
        if updatedNs.map({ nowNs > $0 }) ?? true { updatedNs = nowNs }
        if tokens >= 1 {
            tokens -= 1
            return .allowed
        }
        let waitSeconds = (1 - tokens) / ratePerSecond
        return .limited(retryAfterSeconds: max(1, Int(waitSeconds.rounded(.up))))
    }
}

/// One client's bucket behind a lock of its own: clients never contend with one another, and the lock
/// is held for a few arithmetic operations.
final class ClientRateLimiter: Sendable {
    private let bucket: Mutex<TokenBucket>
    private static let clock = ContinuousClock()
    private static let origin = ContinuousClock.now

    init(ratePerSecond: Double) { bucket = Mutex(TokenBucket(ratePerSecond: ratePerSecond)) }

    func take() -> TokenBucket.Verdict {
        let elapsed = Self.clock.now - Self.origin
        let nowNs = elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
        return bucket.withLock { $0.take(nowNs: nowNs) }
    }
}
