/// Judges a canary over its most recent `window` observations: error rate, p99 latency and the share of
/// decisions that differ from the primary's. Pure; `CanaryController` wraps it with a lock.
public struct CanaryMonitor: Sendable {
    public struct Limits: Sendable, Equatable {
        public var maxErrorRate: Double
        public var maxP99Ms: Double
        public var maxDisagreeRate: Double
        public var window: Int
        public var minSamples: Int

        public init(maxErrorRate: Double, maxP99Ms: Double, maxDisagreeRate: Double, window: Int, minSamples: Int) {
            self.maxErrorRate = maxErrorRate
            self.maxP99Ms = maxP99Ms
            self.maxDisagreeRate = maxDisagreeRate
            self.window = max(1, window)
            self.minSamples = max(1, min(minSamples, window))
        }
    }

    /// One canary call: `failed` (error or timeout), its latency, and whether its decision differed from
    /// the primary's (nil when there is nothing to compare with).
    public struct Observation: Sendable, Equatable {
        public var failed: Bool
        public var latencyMs: Double
        public var disagreed: Bool?

        public init(failed: Bool, latencyMs: Double, disagreed: Bool?) {
            self.failed = failed
            self.latencyMs = latencyMs
            self.disagreed = disagreed
        }
    }

    public enum Breach: Sendable, Equatable, CustomStringConvertible {
        case errorRate(Double)
        case p99Ms(Double)
        case disagreeRate(Double)

        /// Reason code, e.g. `error_rate=0.300`.
        public var description: String {
            switch self {
            case .errorRate(let v): "error_rate=\(Self.fixed(v))"
            case .p99Ms(let v): "p99_ms=\(Self.fixed(v))"
            case .disagreeRate(let v): "disagree_rate=\(Self.fixed(v))"
            }
        }

        /// The metric breached, as named in a RolloutEvent.
        public var metric: String {
            switch self {
            case .errorRate: "error_rate"
            case .p99Ms: "p99_ms"
            case .disagreeRate: "disagree_rate"
            }
        }

        public var value: Double {
            switch self {
            case .errorRate(let v), .p99Ms(let v), .disagreeRate(let v): v
            }
        }

        /// The limit it breached.
        public func limit(_ limits: Limits) -> Double {
            switch self {
            case .errorRate: limits.maxErrorRate
            case .p99Ms: limits.maxP99Ms
            case .disagreeRate: limits.maxDisagreeRate
            }
        }

        static func fixed(_ v: Double) -> String {
            let scaled = (v * 1000).rounded() / 1000
            return "\(scaled)"
        }
    }

    public let limits: Limits
    private var ring: [Observation] = []
    private var next = 0

    public init(limits: Limits) {
        self.limits = limits
        ring.reserveCapacity(limits.window)
    }

    public var count: Int { ring.count }

    /// Adds an observation; returns the first limit breached over the window, if any.
    public mutating func record(_ observation: Observation) -> Breach? {
        if ring.count < limits.window {
            ring.append(observation)
        } else {
            ring[next] = observation
        }
        next = (next + 1) % limits.window
        return evaluate()
    }

    public func evaluate() -> Breach? {
        guard ring.count >= limits.minSamples else { return nil }
        var failures = 0
        var compared = 0
        var disagreements = 0
        for o in ring {
            if o.failed { failures += 1 }
            if let d = o.disagreed {
                compared += 1
                if d { disagreements += 1 }
            }
        }
        let errorRate = Double(failures) / Double(ring.count)
        if errorRate > limits.maxErrorRate { return .errorRate(errorRate) }
        // p99 over the calls that answered: failures are already judged by the error rate.
        let latencies = ring.lazy.filter { !$0.failed }.map(\.latencyMs).sorted()
        if !latencies.isEmpty {
            let rank = Int((Double(latencies.count) * 0.99).rounded(.up)) - 1
            let p99 = latencies[max(0, min(latencies.count - 1, rank))]
            if p99 > limits.maxP99Ms { return .p99Ms(p99) }
        }
        if compared >= limits.minSamples {
            let rate = Double(disagreements) / Double(compared)
            if rate > limits.maxDisagreeRate { return .disagreeRate(rate) }
        }
        return nil
    }
}
