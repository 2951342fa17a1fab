import DequeModule

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// What the quality measures need of one labelled outcome.
public struct ScoredOutcome: Sendable, Equatable {
    /// The model's probability; nil for decisions without one (abstain).
    public var score: Double?
    /// The decision was `trade`.
    public var traded: Bool
    /// The label.
    public var eligible: Bool

    public init(score: Double?, traded: Bool, eligible: Bool) {
        self.score = score
        self.traded = traded
        self.eligible = eligible
    }
}

/// One bin of a reliability table: scores in [lower, upper) (the last bin includes 1).
public struct ReliabilityBin: Sendable, Equatable {
    public var lower: Double
    public var upper: Double
    public var count: Int
    public var meanScore: Double
    /// Fraction eligible among the bin's outcomes.
    public var eligibleRate: Double
}

/// The model-quality numbers of DESIGN.md "Model quality" over a set of labelled outcomes, as
/// `outcome-tracker` exports them and `te model` prints them. Pure.
public struct QualitySummary: Sendable, Equatable {
    public static let bins = 10

    public var outcomes: Int
    /// Fraction eligible.
    public var baseRate: Double
    /// Fraction of decisions that said `trade`.
    public var coverage: Double
    /// Fraction eligible among `trade` decisions; nil when there is none.
    public var precision: Double?
    /// Mean (score − y)² over outcomes with a score; nil when none has one.
    public var brier: Double?
    /// The Brier score of always answering the base rate of the same outcomes: base·(1 − base).
    public var constantBrier: Double
    /// Expected calibration error over 10 equal-width score bins: Σ (n_b / n) · |mean score_b − rate_b|.
    public var ece: Double?
    /// The non-empty bins.
    public var reliability: [ReliabilityBin]

    public init<C: Collection<ScoredOutcome>>(_ outcomes: C) {
        self.outcomes = outcomes.count
        var eligible = 0
        var traded = 0
        var tradedEligible = 0
        var scored = 0
        var squaredError = 0.0
        var binCount = [Int](repeating: 0, count: Self.bins)
        var binScore = [Double](repeating: 0, count: Self.bins)
        var binEligible = [Int](repeating: 0, count: Self.bins)
        for o in outcomes {
            let y = o.eligible ? 1.0 : 0.0
            if o.eligible { eligible += 1 }
            if o.traded {
                traded += 1
                if o.eligible { tradedEligible += 1 }
            }
            guard let s = o.score, s.isFinite else { continue }
            scored += 1
            squaredError += (s - y) * (s - y)
            let b = Self.bin(s)
            binCount[b] += 1
            binScore[b] += s
            if o.eligible { binEligible[b] += 1 }
        }
        let n = Double(max(outcomes.count, 1))
        baseRate = Double(eligible) / n
        coverage = Double(traded) / n
        precision = traded > 0 ? Double(tradedEligible) / Double(traded) : nil
        brier = scored > 0 ? squaredError / Double(scored) : nil
        constantBrier = baseRate * (1 - baseRate)
        var table: [ReliabilityBin] = []
        var gap = 0.0
        for b in 0..<Self.bins where binCount[b] > 0 {
            let count = Double(binCount[b])
            let bin = ReliabilityBin(
                lower: Double(b) / Double(Self.bins), upper: Double(b + 1) / Double(Self.bins), count: binCount[b],
                meanScore: binScore[b] / count, eligibleRate: Double(binEligible[b]) / count)
            gap += count * abs(bin.meanScore - bin.eligibleRate)
            table.append(bin)
        }
        reliability = table
        ece = scored > 0 ? gap / Double(scored) : nil
    }

    /// The equal-width bin of a score; scores outside [0, 1] count in the end bins.
    static func bin(_ score: Double) -> Int {
        min(max(Int((score * Double(bins)).rounded(.down)), 0), bins - 1)
    }
}

/// The last `capacity` labelled outcomes of one model version.
public struct QualityWindow: Sendable {
    public let capacity: Int
    public private(set) var outcomes: Deque<ScoredOutcome> = []

    public init(capacity: Int) {
        precondition(capacity > 0, "a quality window holds at least one outcome")
        self.capacity = capacity
    }

    public mutating func add(_ outcome: ScoredOutcome) {
        if outcomes.count == capacity { outcomes.removeFirst() }
        outcomes.append(outcome)
    }

    public var summary: QualitySummary { QualitySummary(outcomes) }
}

/// A feature's reference distribution (from `reference.json` beside a model version): bins and the
/// training proportions in them.
///
/// `edges` are either the inner cut points (k edges, k + 1 proportions: bins (−∞, e₀), [e₀, e₁), …,
/// [e_{k−1}, +∞)) or include the outer bounds as numpy.histogram writes them (k + 1 edges, k
/// proportions; values outside them count in the end bins). A value v falls in the bin after the last
/// edge ≤ v (numpy.searchsorted side="right").
public struct FeatureReference: Codable, Sendable, Equatable {
    public var edges: [Double]
    public var proportions: [Double]

    public init(edges: [Double], proportions: [Double]) {
        self.edges = edges
        self.proportions = proportions
    }

    /// The reference is usable: one more proportion than inner edges.
    public var isValid: Bool { innerEdges != nil }

    private var innerEdges: ArraySlice<Double>? {
        if proportions.count == edges.count + 1 { return edges[...] }
        if proportions.count == edges.count - 1, edges.count >= 2 { return edges.dropFirst().dropLast() }
        return nil
    }

    /// The bin of `value`.
    public func bin(_ value: Double) -> Int? {
        guard let inner = innerEdges else { return nil }
        var low = inner.startIndex
        var high = inner.endIndex
        while low < high {
            let mid = (low + high) / 2
            if inner[mid] <= value { low = mid + 1 } else { high = mid }
        }
        return low - inner.startIndex
    }

    /// Population stability index of `values` against the reference: Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ) over the
    /// bins, a = the values' proportions, e = the reference's; a proportion of 0 counts as 1e-4 so that an
    /// empty bin costs a large but finite amount. Nil without values or with an unusable reference.
    public func psi<C: Collection<Double>>(_ values: C) -> Double? {
        guard !values.isEmpty, isValid else { return nil }
        var counts = [Int](repeating: 0, count: proportions.count)
        for v in values {
            guard let b = bin(v) else { return nil }
            counts[b] += 1
        }
        let n = Double(values.count)
        var psi = 0.0
        for (i, expected) in proportions.enumerated() {
            let a = max(Double(counts[i]) / n, Self.floor)
            let e = max(expected, Self.floor)
            psi += (a - e) * log(a / e)
        }
        return psi
    }

    static let floor = 1e-4
}

/// `reference.json`: `{"features": {name: {"edges": […], "proportions": […]}}}`.
public struct ModelReference: Codable, Sendable, Equatable {
    public var features: [String: FeatureReference]

    public init(features: [String: FeatureReference]) {
        self.features = features
    }
}
