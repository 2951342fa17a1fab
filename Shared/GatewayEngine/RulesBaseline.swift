import Foundation
import TEModels

/// The model-free baseline answered when neither the model nor the cache can: a fixed logistic score on
/// fresh features, deliberately conservative (it needs a tight spread AND a clearly imbalanced book):
///
///     z = -0.5 - 0.8·spread_bps + 2.5·|depth_imbalance| - 0.05·realized_vol_bps
///     score = 1 / (1 + e^-z)
///
/// Balanced books score σ(-0.5) ≈ 0.38 (no trade at the default threshold 0.5); |depth_imbalance| above
/// 0.2 with a sub-basis-point spread crosses it; wide spreads and high volatility pull the score down.
enum RulesBaseline {
    static func score(_ f: FeatureVector) -> Double {
        let z = -0.5 - 0.8 * f.spreadBps + 2.5 * abs(f.depthImbalance) - 0.05 * f.realizedVolBps
        return 1 / (1 + exp(-z))
    }
}
