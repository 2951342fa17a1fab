import DequeModule
import FeatureEngine
import Foundation
import Logging
import Metrics
import TEModels

/// The rolling per-version quality of DESIGN.md "Model quality", exported as gauges: over the last
/// `window` labelled outcomes of each model version, `te_model_precision`, `te_model_coverage`,
/// `te_model_base_rate`, `te_model_brier`, `te_model_ece`, and per feature `te_feature_psi` against the
/// version's `reference.json`; `te_model_outcomes_total` counts every labelled outcome. Decisions
/// without a model version (rules, abstain) count under version `none`.
struct QualityMetrics {
    struct Version {
        var outcomes: QualityWindow
        var features: Deque<[Double]> = []
        let gauges: [String: Gauge]
        let total: Counter
        let reference: ModelReference?
        let psi: [String: Gauge]
    }

    let window: Int
    var references: ReferenceLoader
    let logger: Logger
    private var versions: [String: Version] = [:]
    private let heldGauge = Gauge(label: "te_outcome_held_decisions")
    private let unlabelled = Counter(label: "te_outcome_unlabelled_total")

    init(window: Int, references: ReferenceLoader, logger: Logger) {
        self.window = window
        self.references = references
        self.logger = logger
    }

    func held(_ count: Int) { heldGauge.record(count) }

    mutating func add(_ emissions: [OutcomeBook<ContinuousClock.Instant>.Emission]) {
        var touched: Set<String> = []
        for e in emissions {
            guard let eligible = e.outcome.eligible else {
                unlabelled.increment()
                continue
            }
            let name = e.outcome.modelVersion ?? "none"
            if versions[name] == nil { versions[name] = makeVersion(name) }
            versions[name]!.total.increment()
            versions[name]!.outcomes.add(
                ScoredOutcome(score: e.outcome.score, traded: e.outcome.decision == .trade, eligible: eligible))
            if versions[name]!.reference != nil, let features = e.record.features {
                if versions[name]!.features.count == window { versions[name]!.features.removeFirst() }
                versions[name]!.features.append(features.values)
            }
            touched.insert(name)
        }
        for name in touched { publish(name) }
    }

    private func publish(_ name: String) {
        guard let v = versions[name] else { return }
        let s = v.outcomes.summary
        v.gauges["te_model_base_rate"]?.record(s.baseRate)
        v.gauges["te_model_coverage"]?.record(s.coverage)
        if let p = s.precision { v.gauges["te_model_precision"]?.record(p) }
        if let b = s.brier { v.gauges["te_model_brier"]?.record(b) }
        if let e = s.ece { v.gauges["te_model_ece"]?.record(e) }
        guard let reference = v.reference else { return }
        for (i, feature) in FeatureVector.names.enumerated() {
            guard let ref = reference.features[feature], let gauge = v.psi[feature] else { continue }
            if let psi = ref.psi(v.features.lazy.map { $0[i] }) { gauge.record(psi) }
        }
    }

    private mutating func makeVersion(_ name: String) -> Version {
        let dims = [("version", name)]
        var gauges: [String: Gauge] = [:]
        for metric in [
            "te_model_precision", "te_model_coverage", "te_model_base_rate", "te_model_brier", "te_model_ece"
        ] {
            gauges[metric] = Gauge(label: metric, dimensions: dims)
        }
        let reference = references.reference(version: name, logger: logger)
        var psi: [String: Gauge] = [:]
        if let reference {
            for feature in FeatureVector.names where reference.features[feature]?.isValid == true {
                psi[feature] = Gauge(label: "te_feature_psi", dimensions: [("feature", feature), ("version", name)])
            }
        }
        return Version(
            outcomes: QualityWindow(capacity: window), gauges: gauges,
            total: Counter(label: "te_model_outcomes_total", dimensions: dims), reference: reference, psi: psi)
    }
}

/// Reads `<MODEL_REFERENCE_DIR>/<version>/reference.json`; a version without one gets no PSI and one log line.
struct ReferenceLoader {
    let directory: String?

    func reference(version: String, logger: Logger) -> ModelReference? {
        guard let directory else {
            logger.info("no MODEL_REFERENCE_DIR: no feature PSI", metadata: ["version": "\(version)"])
            return nil
        }
        let path = URL(fileURLWithPath: directory).appendingPathComponent(version).appendingPathComponent(
            "reference.json")
        do {
            let reference = try JSONDecoder().decode(ModelReference.self, from: Data(contentsOf: path))
            let invalid = reference.features.filter { !$0.value.isValid }.map(\.key).sorted()
            logger.info(
                "PSI reference loaded",
                metadata: [
                    "version": "\(version)", "path": "\(path.path)", "features": "\(reference.features.count)",
                    "unusable": "\(invalid.joined(separator: ","))"
                ])
            return reference
        } catch {
            logger.info(
                "no PSI reference for this model version: no feature PSI",
                metadata: ["version": "\(version)", "path": "\(path.path)", "error": "\(error)"])
            return nil
        }
    }
}
