import DequeModule

/// Judges a canary against the primary on realised outcomes (DESIGN.md "Model quality": rolled back when
/// its Brier or precision is worse than the primary's on the same window, promoted when better). Pure:
/// `outcome-tracker` feeds it and acts on its verdict.
///
/// Two kinds of evidence:
/// - shadow: both versions scored the SAME decision (the AuditRecord's canary score beside the primary's):
///   a paired comparison over the last `window` such decisions;
/// - canary: each decision was answered by one version: the canary's last `window` outcomes against the
///   primary's outcomes over the same span (everything the primary resolved since the oldest of those).
/// Paired evidence is used once it has `minOutcomes`; it is the sharper test.
///
/// A difference counts only when it exceeds its margin plus `z` standard errors (paired: of the mean
/// per-decision difference; unpaired: Welch's), so noise on a few hundred outcomes does not flip a
/// rollout. The judge is asked after every batch of outcomes, which makes false alarms likelier than one
/// test at z would suggest: hence a default z of 3.
public struct CanaryJudge: Sendable {
    public struct Policy: Sendable, Equatable {
        /// Outcomes needed on each side (pairs, in shadow) before anything is judged.
        public var minOutcomes: Int
        /// `trade` decisions needed on each side before precision is judged.
        public var minTrades: Int
        /// Canary outcomes (pairs, in shadow) in the judged window.
        public var window: Int
        /// Standard errors a difference must exceed (beyond its margin).
        public var z: Double
        /// Brier difference (canary − primary) tolerated before the canary counts as worse.
        public var brierMargin: Double
        /// Precision difference (primary − canary) tolerated before the canary counts as worse.
        public var precisionMargin: Double
        /// A canary scoring `trade` at this score or above (shadow: its decision was not made, only scored).
        public var threshold: Double

        public init(
            minOutcomes: Int = 200, minTrades: Int = 50, window: Int = 1000, z: Double = 3, brierMargin: Double = 0,
            precisionMargin: Double = 0, threshold: Double = 0.5
        ) {
            self.minOutcomes = max(1, minOutcomes)
            self.minTrades = max(1, minTrades)
            self.window = max(self.minOutcomes, window)
            self.z = z
            self.brierMargin = brierMargin
            self.precisionMargin = precisionMargin
            self.threshold = threshold
        }
    }

    public enum Evidence: String, Sendable { case shadow, canary }

    /// One metric compared on one window.
    public struct Comparison: Sendable, Equatable {
        public var metric: String
        public var canary: Double
        public var primary: Double
        /// canary − primary, in the direction where positive is worse for the canary.
        public var worseBy: Double
        public var standardError: Double
        public var canaryCount: Int
        public var primaryCount: Int
    }

    public struct Verdict: Sendable, Equatable {
        public enum Kind: String, Sendable { case worse, better }
        public var kind: Kind
        public var evidence: Evidence
        /// The deciding metric (`brier` or `precision`): the canary's value and the primary's on the window.
        public var comparison: Comparison
    }

    struct Pair {
        var primary: Double
        var canary: Double
        var eligible: Bool
    }

    struct Sided {
        var seq: Int
        var score: Double
        var traded: Bool
        var eligible: Bool
    }

    public let policy: Policy
    private var pairs: Deque<Pair> = []
    private var canarySide: Deque<Sided> = []
    private var primarySide: Deque<Sided> = []
    private var seq = 0

    public init(policy: Policy) { self.policy = policy }

    public mutating func reset() { self = CanaryJudge(policy: policy) }

    /// A decision both versions scored (shadow mode), and its label.
    public mutating func addPaired(primary: Double, canary: Double, eligible: Bool) {
        guard primary.isFinite, canary.isFinite else { return }
        if pairs.count == policy.window { pairs.removeFirst() }
        pairs.append(Pair(primary: primary, canary: canary, eligible: eligible))
    }

    /// A decision the canary answered (canary mode).
    public mutating func addCanary(score: Double, traded: Bool, eligible: Bool) {
        guard score.isFinite else { return }
        seq += 1
        if canarySide.count == policy.window { canarySide.removeFirst() }
        canarySide.append(Sided(seq: seq, score: score, traded: traded, eligible: eligible))
        trimPrimary()
    }

    /// A decision the primary answered while the canary was taking traffic (canary mode).
    public mutating func addPrimary(score: Double, traded: Bool, eligible: Bool) {
        guard score.isFinite else { return }
        seq += 1
        primarySide.append(Sided(seq: seq, score: score, traded: traded, eligible: eligible))
        trimPrimary()
    }

    /// The primary's outcomes older than the canary's window are not the same span; a bound keeps a
    /// canary with almost no traffic from holding the primary's whole history.
    private mutating func trimPrimary() {
        let from = canarySide.first?.seq ?? Int.max
        while let first = primarySide.first, first.seq < from || primarySide.count > policy.window * 100 {
            primarySide.removeFirst()
        }
    }

    public var pairedCount: Int { pairs.count }
    public var canaryCount: Int { canarySide.count }
    public var primaryCount: Int { primarySide.count }

    /// The comparisons on the evidence in use (shadow pairs when there are enough, else canary), or nil
    /// when neither has `minOutcomes` on each side.
    public func comparisons() -> (Evidence, [Comparison])? {
        if pairs.count >= policy.minOutcomes { return (.shadow, pairedComparisons()) }
        if canarySide.count >= policy.minOutcomes, primarySide.count >= policy.minOutcomes {
            return (.canary, unpairedComparisons())
        }
        return nil
    }

    /// Worse when any metric is worse beyond its margin and z standard errors (Brier first); better when
    /// Brier is better beyond them and precision is not worse; nil otherwise or without enough outcomes.
    public func verdict() -> Verdict? {
        guard let (evidence, list) = comparisons() else { return nil }
        func bar(_ c: Comparison) -> Double {
            (c.metric == "brier" ? policy.brierMargin : policy.precisionMargin) + policy.z * c.standardError
        }
        if let worse = list.first(where: { $0.worseBy > bar($0) }) {
            return Verdict(kind: .worse, evidence: evidence, comparison: worse)
        }
        if let brier = list.first(where: { $0.metric == "brier" }), -brier.worseBy > bar(brier) {
            return Verdict(kind: .better, evidence: evidence, comparison: brier)
        }
        return nil
    }

    private func pairedComparisons() -> [Comparison] {
        let n = pairs.count
        var diffs = Mean()
        var canaryBrier = 0.0
        var primaryBrier = 0.0
        var canaryTrades = (0, 0)
        var primaryTrades = (0, 0)
        for p in pairs {
            let y = p.eligible ? 1.0 : 0.0
            let c = (p.canary - y) * (p.canary - y)
            let q = (p.primary - y) * (p.primary - y)
            canaryBrier += c
            primaryBrier += q
            diffs.add(c - q)
            if p.canary >= policy.threshold {
                canaryTrades.0 += 1
                if p.eligible { canaryTrades.1 += 1 }
            }
            if p.primary >= policy.threshold {
                primaryTrades.0 += 1
                if p.eligible { primaryTrades.1 += 1 }
            }
        }
        var out = [
            Comparison(
                metric: "brier", canary: canaryBrier / Double(n), primary: primaryBrier / Double(n),
                worseBy: diffs.mean,
                standardError: diffs.standardErrorOfMean, canaryCount: n, primaryCount: n)
        ]
        if let p = precisionComparison(canary: canaryTrades, primary: primaryTrades) { out.append(p) }
        return out
    }

    private func unpairedComparisons() -> [Comparison] {
        var canary = Mean()
        var primary = Mean()
        var canaryTrades = (0, 0)
        var primaryTrades = (0, 0)
        for s in canarySide {
            let y = s.eligible ? 1.0 : 0.0
            canary.add((s.score - y) * (s.score - y))
            if s.traded {
                canaryTrades.0 += 1
                if s.eligible { canaryTrades.1 += 1 }
            }
        }
        for s in primarySide {
            let y = s.eligible ? 1.0 : 0.0
            primary.add((s.score - y) * (s.score - y))
            if s.traded {
                primaryTrades.0 += 1
                if s.eligible { primaryTrades.1 += 1 }
            }
        }
        let se = (canary.variance / Double(canary.count) + primary.variance / Double(primary.count)).squareRoot()
        var out = [
            Comparison(
                metric: "brier", canary: canary.mean, primary: primary.mean, worseBy: canary.mean - primary.mean,
                standardError: se, canaryCount: canary.count, primaryCount: primary.count)
        ]
        if let p = precisionComparison(canary: canaryTrades, primary: primaryTrades) { out.append(p) }
        return out
    }

    /// Precision of `trade` on each side ((trades, eligible among them)), with the two-proportion
    /// standard error; nil while either side has fewer than `minTrades` trades.
    private func precisionComparison(canary: (Int, Int), primary: (Int, Int)) -> Comparison? {
        guard canary.0 >= policy.minTrades, primary.0 >= policy.minTrades else { return nil }
        let pc = Double(canary.1) / Double(canary.0)
        let pp = Double(primary.1) / Double(primary.0)
        let se = (pc * (1 - pc) / Double(canary.0) + pp * (1 - pp) / Double(primary.0)).squareRoot()
        return Comparison(
            metric: "precision", canary: pc, primary: pp, worseBy: pp - pc, standardError: se, canaryCount: canary.0,
            primaryCount: primary.0)
    }
}

/// Running mean and variance (Welford).
struct Mean {
    private(set) var count = 0
    private(set) var mean = 0.0
    private var m2 = 0.0

    mutating func add(_ x: Double) {
        count += 1
        let delta = x - mean
        mean += delta / Double(count)
        m2 += delta * (x - mean)
    }

    /// Sample variance (n − 1); 0 below two values.
    var variance: Double { count > 1 ? m2 / Double(count - 1) : 0 }
    var standardErrorOfMean: Double { count > 0 ? (variance / Double(count)).squareRoot() : 0 }
}
