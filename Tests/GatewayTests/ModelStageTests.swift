import Foundation
import GatewayHTTP
import Logging
import Prometheus
import Synchronization
import TEModels
import Testing

@testable import GatewayEngine

/// An endpoint that answers as its script says, per model version: no Triton.
final class ScriptedEndpoint: InferenceEndpoint {
    enum Behaviour: Sendable {
        case score(Float)
        case fail(InferenceFailure.Kind)
        /// Answers nothing until the caller gives up (deadline or cancellation).
        case silent
    }

    let label: String
    private let script: Mutex<[String: Behaviour]>
    private let calls = Mutex<[String]>([])

    init(_ label: String, _ script: [String: Behaviour]) {
        self.label = label
        self.script = Mutex(script)
    }

    /// The versions called, in order.
    var called: [String] { calls.withLock { $0 } }

    func set(_ version: String, _ behaviour: Behaviour) { script.withLock { $0[version] = behaviour } }

    func infer(version: String, rows: [Float], rowCount: Int, deadline: ContinuousClock.Instant)
        async throws(InferenceFailure)
        -> [Float]
    {
        calls.withLock { $0.append(version) }
        switch script.withLock({ $0[version] }) {
        case .score(let s): return [Float](repeating: s, count: rowCount)
        case .fail(let kind): throw InferenceFailure(kind, "scripted")
        case .silent, nil:
            do {
                try await Task.sleep(until: deadline, clock: .continuous)
            } catch {
                throw InferenceFailure(.cancelled, "cancelled")
            }
            throw InferenceFailure(.timeout, "deadline")
        }
    }

    func identity(version: String) async throws(InferenceFailure) -> ModelIdentity {
        ModelIdentity(name: "trade_eligibility", version: version, hash: "h\(version)")
    }

    func isReady(version: String) async -> Bool { true }
}

/// The decision engine's model stage (one driver of `FallbackRace`: inline for the primary alone, a task
/// group when there is a second leg) with scripted endpoints: which legs run, what answers, the reasons.
@Suite(.timeLimit(.minutes(1))) struct ModelStageTests {
    let request = ScoreRequest(symbol: "BTCUSDT", features: [0.5, 0.3, 0.2, 1, 2, 0.1, 10, 0.05])

    func engine(
        primary: ScriptedEndpoint, secondary: ScriptedEndpoint? = nil, _ environment: [String: String] = [:]
    ) throws -> DecisionEngine {
        let config = try GatewayConfiguration(
            // Async audit: the record goes to the buffer, which no writer drains here.
            environment: [
                "REDIS_URL": "redis://127.0.0.1:1/0", "TRITON_URL": "127.0.0.1:1", "SCORE_TIMEOUT_JITTER": "0",
                "AUDIT_DURABILITY": "async"
            ]
            .merging(environment) { $1 })
        let metrics = GatewayMetrics(registry: PrometheusCollectorRegistry())
        return DecisionEngine(
            config: config, metrics: metrics, primary: primary, secondary: secondary, features: FeatureMemory(),
            audit: AuditBuffer(capacity: 100, metrics: metrics),
            identities: ModelIdentityStore(modelName: "trade_eligibility"),
            logger: Logger(label: "model-stage-test"))
    }

    /// One decision while the engine's batched calls run (its `calls` service, as in the gateway's group).
    func decide(_ engine: DecisionEngine) async -> ScoreResponse {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await engine.calls.run() }
            let response = await engine.score(request, requestID: nil, arrival: .now).response
            group.cancelAll()
            return response
        }
    }

    @Test func primaryAloneAnswersInline() async throws {
        let primary = ScriptedEndpoint("primary", ["1": .score(0.9)])
        let r = await decide(try engine(primary: primary))
        #expect(r.source == .model)
        #expect(r.score == Double(Float(0.9)))
        #expect(r.reason == nil)
        #expect(r.model?.version == "1")
        #expect(primary.called == ["1"])
    }

    @Test func primaryAloneFailsToTheRulesWithItsReason() async throws {
        let primary = ScriptedEndpoint("primary", ["1": .fail(.unavailable)])
        let engine = try engine(primary: primary, ["BREAKER_FAILURES": "2"])
        let first = await decide(engine)
        #expect(first.source == .rules)
        #expect(first.reason == "primary_unavailable,cache_miss")
        _ = await decide(engine)
        // Two failures opened the breaker: the third request does not call.
        let third = await decide(engine)
        #expect(third.reason == "primary_breaker_open,cache_miss")
        #expect(primary.called.count == 2)
        // A cancelled call reads as a timeout.
        primary.set("1", .fail(.cancelled))
        let other = try self.engine(primary: primary)
        #expect(await decide(other).reason == "primary_timeout,cache_miss")
    }

    @Test func primaryAloneSilentRunsToTheModelDeadline() async throws {
        let primary = ScriptedEndpoint("primary", ["1": .silent])
        let r = await decide(try engine(primary: primary, ["SCORE_TIMEOUT_MS": "30"]))
        #expect(r.source == .rules)
        #expect(r.reason == "primary_timeout,cache_miss")
    }

    @Test func aFailedPrimaryIsRetriedOnTheSecondary() async throws {
        let primary = ScriptedEndpoint("primary", ["1": .fail(.unavailable)])
        let secondary = ScriptedEndpoint("secondary", ["1": .score(0.2)])
        let r = await decide(try engine(primary: primary, secondary: secondary))
        #expect(r.source == .model)
        #expect(r.score == Double(Float(0.2)))
        #expect(r.reason == "primary_unavailable")
        #expect(secondary.called == ["1"])
    }

    @Test func aSilentPrimaryIsHedgedOnTheSecondary() async throws {
        let primary = ScriptedEndpoint("primary", ["1": .silent])
        let secondary = ScriptedEndpoint("secondary", ["1": .score(0.7)])
        let r = await decide(
            try engine(primary: primary, secondary: secondary, ["SCORE_TIMEOUT_MS": "300", "HEDGE_AFTER_MS": "5"]))
        #expect(r.source == .model)
        #expect(r.reason == "primary_slow")
    }

    @Test func bothLegsSilentGiveUpAtTheDeadline() async throws {
        let primary = ScriptedEndpoint("primary", ["1": .silent])
        let secondary = ScriptedEndpoint("secondary", ["1": .silent])
        let r = await decide(
            try engine(primary: primary, secondary: secondary, ["SCORE_TIMEOUT_MS": "40", "HEDGE_AFTER_MS": "5"]))
        #expect(r.source == .rules)
        // The legs' own deadline and the race's timer fall together: either may report first.
        #expect(Set(r.reason?.split(separator: ",") ?? []) == ["primary_timeout", "secondary_timeout", "cache_miss"])
    }

    @Test func aCanaryFallsBackToThePrimaryVersionOnThePrimaryEndpoint() async throws {
        // No secondary endpoint: the canary's second leg is the primary version on the primary endpoint.
        let primary = ScriptedEndpoint("primary", ["2": .fail(.modelError), "1": .score(0.6)])
        let engine = try engine(primary: primary, ["CANARY_ENABLED": "1", "CANARY_FRACTION": "1"])
        let r = await decide(engine)
        #expect(r.source == .model)
        #expect(r.model?.version == "1")
        #expect(r.reason == "primary_model_error")
        #expect(primary.called == ["2", "1"])
    }
}
