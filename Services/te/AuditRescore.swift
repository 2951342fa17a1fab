import ArgumentParser
import FeatureEngine
import Foundation
import Logging
import TECore
import TEModels
import TritonClient

/// Re-scoring recorded decisions on Triton (`te explain`, `te audit verify`): the recorded FP32 features,
/// sent to the recorded model version, only when the version Triton serves has the recorded artefact hash
/// (the same version number with other weights would answer a different model's score).
struct AuditRescore {
    let client: TritonClient
    let timeout: Duration
    /// Rows per inference call (the model's batch limit is far above; this bounds one call's size).
    static let batchRows = 256
    /// What the gateway records as model_hash before it has read the version's identity from Triton.
    static let unknownHash = "unknown"

    init(url: String?, timeoutMs: Int) throws {
        guard let url = url ?? Env.optional("TRITON_URL") else {
            throw ValidationError("TRITON_URL is not set (or pass --triton-url host:port)")
        }
        // Connection trouble reaches the operator as the command's result, not as log lines.
        var logger = Logger(label: "te-rescore")
        logger.logLevel = .critical
        client = try TritonClient(url: url, logger: logger)
        timeout = .milliseconds(timeoutMs)
    }

    func close() { client.close() }

    /// Why a decision cannot be re-scored; `description` is the one line shown.
    enum Unverifiable: Error, Hashable, CustomStringConvertible {
        case noFeatures
        case noModel
        /// The gateway answered before it had read the version's hash from Triton (it records "unknown").
        case hashNotRecorded
        case versionNotServed(model: String, version: String, detail: String)
        case hashChanged(model: String, version: String, recorded: String, served: String)
        case tritonFailed(String)

        /// A short key to group by (`-o json`'s `reason`).
        var code: String {
            switch self {
            case .noFeatures: "no_features"
            case .noModel: "no_model"
            case .hashNotRecorded: "hash_not_recorded"
            case .versionNotServed: "version_not_served"
            case .hashChanged: "hash_changed"
            case .tritonFailed: "triton_failed"
            }
        }

        var description: String {
            switch self {
            case .noFeatures: "no features recorded"
            case .noModel: "no model name/version/hash recorded"
            case .hashNotRecorded: "model_hash is \"unknown\": the gateway had not read the version's hash yet"
            case .versionNotServed(let model, let version, let detail):
                "model \(model) version \(version) is not served (\(detail))"
            case .hashChanged(let model, let version, let recorded, let served):
                "model \(model) version \(version) now serves artefact \(served), the decision was made by \(recorded)"
            case .tritonFailed(let message): "Triton call failed: \(message)"
            }
        }
    }

    /// The artefact hash each (model, version) serves, asked once per pair.
    private var served: [String: Result<String, Unverifiable>] = [:]

    mutating func servedHash(model: String, version: String) async -> Result<String, Unverifiable> {
        let key = model + "\u{0}" + version
        if let known = served[key] { return known }
        let answer: Result<String, Unverifiable>
        do {
            if try await client.modelReady(model: model, version: version, deadline: .now + timeout) {
                answer = .success(
                    try await client.artefactHash(model: model, version: version, deadline: .now + timeout))
            } else {
                answer = .failure(.versionNotServed(model: model, version: version, detail: "not ready"))
            }
        } catch let error as TritonError {
            // NOT_FOUND: Triton does not know the version (or the model has no hash parameter for it).
            answer = .failure(
                error.code == .notFound
                    ? .versionNotServed(model: model, version: version, detail: error.message)
                    : .tritonFailed(error.message))
        } catch {
            answer = .failure(.tritonFailed(String(describing: error)))
        }
        served[key] = answer
        return answer
    }

    /// Whether `record` can be re-scored: its model, version, FP32 features, once the served hash is checked.
    mutating func check(_ record: AuditRecord) async -> Result<
        (model: String, version: String, row: [Float]), Unverifiable
    > {
        guard let features = record.features else { return .failure(.noFeatures) }
        guard let model = record.modelName, let version = record.modelVersion, let recorded = record.modelHash else {
            return .failure(.noModel)
        }
        if recorded == Self.unknownHash { return .failure(.hashNotRecorded) }
        switch await servedHash(model: model, version: version) {
        case .failure(let reason): return .failure(reason)
        case .success(let hash) where hash != recorded:
            return .failure(.hashChanged(model: model, version: version, recorded: recorded, served: hash))
        case .success: return .success((model, version, FeatureBits.fp32(features)))
        }
    }

    /// Scores of `rows` (each 8 FP32 values) by one model version, in calls of up to `batchRows` rows.
    func scores(model: String, version: String, rows: [[Float]]) async throws -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(rows.count)
        for start in stride(from: 0, to: rows.count, by: Self.batchRows) {
            let chunk = rows[start..<min(start + Self.batchRows, rows.count)]
            out += try await client.infer(
                model: model, version: version, rows: chunk.flatMap { $0 }, rowCount: chunk.count,
                deadline: .now + timeout)
        }
        return out
    }

    // MARK: a period

    struct Mismatch {
        var decisionId: String
        var recorded: Float
        var rescored: Float
        var difference: Float { abs(rescored - recorded) }
    }

    struct Report {
        var decisions = 0
        var matched = 0
        var mismatches: [Mismatch] = []
        /// Decision ids per reason.
        var unverifiable: [Unverifiable: [String]] = [:]
        var unverifiableCount: Int { unverifiable.values.reduce(0) { $0 + $1.count } }
    }

    /// Re-scores every record (model-sourced decisions), batched per model version; a recorded score is matched
    /// when the re-score has the same FP32 bits (the gateway records the model's FP32 output as is).
    mutating func verify(_ records: [AuditRecord]) async -> Report {
        var report = Report(decisions: records.count)
        var groups: [String: (model: String, version: String, records: [AuditRecord], rows: [[Float]])] = [:]
        for record in records {
            switch await check(record) {
            case .failure(let reason): report.unverifiable[reason, default: []].append(record.decisionId)
            case .success(let (model, version, row)):
                guard record.score != nil else {
                    report.unverifiable[.noModel, default: []].append(record.decisionId)
                    continue
                }
                groups[model + "\u{0}" + version, default: (model, version, [], [])].records.append(record)
                groups[model + "\u{0}" + version]!.rows.append(row)
            }
        }
        for key in groups.keys.sorted() {
            let group = groups[key]!
            let scores: [Float]
            do {
                scores = try await self.scores(model: group.model, version: group.version, rows: group.rows)
            } catch {
                let reason = Unverifiable.tritonFailed((error as? TritonError)?.message ?? String(describing: error))
                report.unverifiable[reason, default: []] += group.records.map(\.decisionId)
                continue
            }
            for (record, score) in zip(group.records, scores) {
                let recorded = Float(record.score!)
                if recorded.bitPattern == score.bitPattern {
                    report.matched += 1
                } else {
                    report.mismatches.append(
                        Mismatch(decisionId: record.decisionId, recorded: recorded, rescored: score))
                }
            }
        }
        report.mismatches.sort { $0.difference > $1.difference }
        return report
    }
}

extension AuditRescore {
    /// `te audit verify`'s answer: counts, the largest mismatches, and what could not be verified and why.
    static func print(_ report: Report, since: String, until: String?, top: Int, format: OutputOptions) throws {
        let reasons = report.unverifiable.sorted {
            $0.value.count > $1.value.count
                || ($0.value.count == $1.value.count && $0.key.description < $1.key.description)
        }
        if format.json {
            try format.printJSON([
                "since": since, "until": until as Any? ?? NSNull(), "decisions": report.decisions,
                "verified": report.matched + report.mismatches.count, "matched": report.matched,
                "mismatched": report.mismatches.count, "unverifiable": report.unverifiableCount,
                "mismatches": report.mismatches.prefix(top).map { m -> [String: Any] in
                    [
                        "decision_id": m.decisionId, "recorded_score": Double(m.recorded),
                        "rescore": Double(m.rescored),
                        "abs_diff": Double(m.difference)
                    ]
                },
                "unverifiable_reasons": reasons.map { reason, ids -> [String: Any] in
                    ["reason": reason.code, "detail": reason.description, "count": ids.count, "decision_ids": ids]
                }
            ])
            return
        }
        Swift.print("model decisions from \(since) to \(until ?? "now"): \(report.decisions)")
        Swift.print(
            "matched \(report.matched)  mismatched \(report.mismatches.count)  unverifiable \(report.unverifiableCount)"
        )
        if !report.mismatches.isEmpty {
            Swift.print(
                "\n" + Inspect.warn("mismatches")
                    + " (largest |Δ| first\(report.mismatches.count > top ? ", \(top) of \(report.mismatches.count)" : "")):"
            )
            Swift.print(
                TextTable.render(
                    header: ["decision_id", "recorded", "rescore", "abs_diff"],
                    rows: report.mismatches.prefix(top).map {
                        [$0.decisionId, "\($0.recorded)", "\($0.rescored)", AuditCommand.number(Double($0.difference))]
                    },
                    rightAligned: [1, 2, 3]))
        }
        if !reasons.isEmpty {
            Swift.print("\nunverifiable:")
            Swift.print(
                TextTable.render(
                    header: ["count", "reason", "e.g."],
                    rows: reasons.map { [String($0.value.count), $0.key.description, $0.value[0]] },
                    rightAligned: [0]))
        }
    }
}
