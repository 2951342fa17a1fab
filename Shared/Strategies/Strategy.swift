import TEModels

/// One configured strategy: a kind with its parameters and the instance's own name. Pure: the same
/// snapshot always gives the same signal (or none), so a redelivered snapshot yields the same signal id.
///
/// Every strategy fires only on a warm snapshot (`FeatureSnapshot.warm`), and its confidence is 0.5 exactly
/// at its threshold, rising linearly with how far the snapshot is past it, capped at 1 (formulas per rule below
/// and in `deploy/strategies/README.md`).
public struct Strategy: Sendable, Equatable {
    /// The instance name: `Signal.strategy`, part of the signal id. Unique within a strategy set.
    public var name: String
    public var rule: Rule

    public init(name: String, rule: Rule) {
        self.name = name
        self.rule = rule
    }

    public enum Kind: String, Sendable, CaseIterable {
        case rapidRise = "rapid_rise"
        case rapidFall = "rapid_fall"
        case imbalancePressure = "imbalance_pressure"
        case ofiBreakout = "ofi_breakout"
    }

    public enum Rule: Sendable, Equatable {
        /// `rapid_rise` (buy): `mid_return_bps ≥ minChangeBps` and `trade_volume ≥ minVolume`.
        /// Confidence `min(1, 0.5 + 0.5·(mid_return_bps − minChangeBps)/confidenceScaleBps)`.
        case rapidRise(RapidMove)
        /// `rapid_fall` (sell): `mid_return_bps ≤ −minChangeBps` and `trade_volume ≥ minVolume`.
        /// Confidence `min(1, 0.5 + 0.5·(|mid_return_bps| − minChangeBps)/confidenceScaleBps)`.
        case rapidFall(RapidMove)
        /// `imbalance_pressure`: `spread_bps ≤ maxSpreadBps` and `|depth_imbalance| ≥ minImbalance`;
        /// buy when depth_imbalance > 0 (more resting size on the bid), sell when < 0.
        /// Confidence `min(1, 0.5 + 0.5·(|depth_imbalance| − minImbalance)/(1 − minImbalance))`, 1 when
        /// minImbalance is 1 (|depth_imbalance| cannot exceed 1).
        case imbalancePressure(ImbalancePressure)
        /// `ofi_breakout`: `|ofi_norm| ≥ k` and `tick_rate ≥ minTickRate`; buy when ofi_norm > 0, sell when < 0.
        /// Confidence `min(1, 0.5 + 0.5·(|ofi_norm| − k)/confidenceScale)`.
        case ofiBreakout(OFIBreakout)

        public var kind: Kind {
            switch self {
            case .rapidRise: .rapidRise
            case .rapidFall: .rapidFall
            case .imbalancePressure: .imbalancePressure
            case .ofiBreakout: .ofiBreakout
            }
        }
    }

    public struct RapidMove: Sendable, Equatable {
        /// Smallest |mid_return_bps| over the window that fires. > 0.
        public var minChangeBps: Double
        /// Smallest traded volume in the window (base units) that fires. ≥ 0.
        public var minVolume: Double
        /// How many bps past the threshold reach confidence 1. > 0. Default: `minChangeBps`.
        public var confidenceScaleBps: Double

        public init(minChangeBps: Double, minVolume: Double, confidenceScaleBps: Double? = nil) {
            self.minChangeBps = minChangeBps
            self.minVolume = minVolume
            self.confidenceScaleBps = confidenceScaleBps ?? minChangeBps
        }
    }

    public struct ImbalancePressure: Sendable, Equatable {
        /// Largest spread that fires. ≥ 0.
        public var maxSpreadBps: Double
        /// Smallest |depth_imbalance| that fires. In (0, 1].
        public var minImbalance: Double

        public init(maxSpreadBps: Double, minImbalance: Double) {
            self.maxSpreadBps = maxSpreadBps
            self.minImbalance = minImbalance
        }
    }

    public struct OFIBreakout: Sendable, Equatable {
        /// Smallest |ofi_norm| that fires. > 0.
        public var k: Double
        /// Smallest quote rate (quotes/s in the window) that fires. ≥ 0.
        public var minTickRate: Double
        /// How far past `k` reaches confidence 1. > 0. Default: `k`.
        public var confidenceScale: Double

        public init(k: Double, minTickRate: Double, confidenceScale: Double? = nil) {
            self.k = k
            self.minTickRate = minTickRate
            self.confidenceScale = confidenceScale ?? k
        }
    }

    /// The signal this strategy gives on `snapshot`, or nil. A cold (not warm) snapshot gives none.
    public func evaluate(_ snapshot: FeatureSnapshot) -> Signal? {
        guard snapshot.warm, let (direction, confidence) = rule.decide(snapshot) else { return nil }
        return Signal(
            id: Signal.makeID(symbol: snapshot.symbol, strategy: name, tsNs: snapshot.tsNs),
            symbol: snapshot.symbol, strategy: name, direction: direction, confidence: confidence,
            tsNs: snapshot.tsNs, features: snapshot.features)
    }
}

extension Strategy.Rule {
    /// Direction and confidence, or nil when the snapshot does not meet the thresholds.
    public func decide(_ snapshot: FeatureSnapshot) -> (Direction, Double)? {
        let f = snapshot.features
        switch self {
        case .rapidRise(let p):
            guard f.midReturnBps >= p.minChangeBps, snapshot.tradeVolume >= p.minVolume else { return nil }
            return (.buy, Self.confidence(excess: f.midReturnBps - p.minChangeBps, scale: p.confidenceScaleBps))
        case .rapidFall(let p):
            guard -f.midReturnBps >= p.minChangeBps, snapshot.tradeVolume >= p.minVolume else { return nil }
            return (.sell, Self.confidence(excess: -f.midReturnBps - p.minChangeBps, scale: p.confidenceScaleBps))
        case .imbalancePressure(let p):
            let d = f.depthImbalance
            guard f.spreadBps <= p.maxSpreadBps, abs(d) >= p.minImbalance, d != 0 else { return nil }
            let room = 1 - p.minImbalance
            let confidence = room > 0 ? Self.confidence(excess: abs(d) - p.minImbalance, scale: room) : 1
            return (d > 0 ? .buy : .sell, confidence)
        case .ofiBreakout(let p):
            let o = f.ofiNorm
            guard abs(o) >= p.k, f.tickRate >= p.minTickRate, o != 0 else { return nil }
            return (o > 0 ? .buy : .sell, Self.confidence(excess: abs(o) - p.k, scale: p.confidenceScale))
        }
    }

    /// 0.5 at the threshold, 1 at `scale` past it; clamped to [0.5, 1].
    static func confidence(excess: Double, scale: Double) -> Double {
        min(1, max(0.5, 0.5 + 0.5 * excess / scale))
    }
}

/// The strategies one engine runs, in file order.
public struct StrategySet: Sendable, Equatable {
    public var strategies: [Strategy]

    public init(_ strategies: [Strategy]) {
        self.strategies = strategies
    }

    /// Appends every strategy's signal for `snapshot` to `signals` (file order); none for a cold snapshot.
    public func evaluate(_ snapshot: FeatureSnapshot, into signals: inout [Signal]) {
        guard snapshot.warm else { return }
        for strategy in strategies {
            if let signal = strategy.evaluate(snapshot) { signals.append(signal) }
        }
    }

    public func evaluate(_ snapshot: FeatureSnapshot) -> [Signal] {
        var out: [Signal] = []
        evaluate(snapshot, into: &out)
        return out
    }
}
