import Foundation
import Logging
import Metrics
import ServiceKit
import Synchronization
import TEModels
import Tracing

/// One Triton endpoint with its breaker and a batcher per model version.
final class EndpointLane: Sendable {
    let endpoint: any InferenceEndpoint
    let batchers: [String: InferenceBatcher]
    /// `te_gateway_triton_duration_seconds` per model version.
    private let tritonDurations: [String: Metrics.Timer]
    private let breaker: Mutex<CircuitBreaker>
    let metrics: GatewayMetrics

    init(
        endpoint: any InferenceEndpoint, versions: [String], config: GatewayConfiguration, metrics: GatewayMetrics,
        calls: BackgroundTasks
    ) {
        self.endpoint = endpoint
        var batchers: [String: InferenceBatcher] = [:]
        var durations: [String: Metrics.Timer] = [:]
        for v in versions {
            durations[v] = metrics.tritonDuration(endpoint: endpoint.label, version: v)
            batchers[v] = InferenceBatcher(
                endpoint: endpoint, version: v, maxRows: config.batchMaxRows, maxInFlight: config.batchMaxInFlight,
                tasks: calls, rowsPerCall: metrics.batchRows(endpoint: endpoint.label, version: v))
        }
        self.batchers = batchers
        tritonDurations = durations
        breaker = Mutex(
            CircuitBreaker(
                failureThreshold: config.breakerFailures,
                openDuration: .microseconds(Int64(config.breakerOpenMs * 1000))))
        self.metrics = metrics
        metrics.register(endpoint: endpoint.label)
    }

    var label: String { endpoint.label }

    /// A successful inference call's duration.
    func recordCall(version: String, duration: Duration) { tritonDurations[version]?.record(duration: duration) }

    var breakerState: CircuitBreaker.State { breaker.withLock { $0.state } }

    func acquire() -> CircuitBreaker.Permission {
        let (permission, gauge) = breaker.withLock { b in (b.acquire(now: .now), b.gaugeValue) }
        if permission == .probe { metrics.breaker(endpoint: label, state: gauge) }
        return permission
    }

    func record(_ outcome: Result<Void, InferenceFailure>?, permission: CircuitBreaker.Permission) {
        let gauge = breaker.withLock { b in
            switch outcome {
            case .success: b.recordSuccess()
            case .failure(let f) where f.countsAgainstEndpoint: b.recordFailure(now: .now)
            case .failure: b.recordAbandoned(permission: permission)
            case nil: b.recordAbandoned(permission: permission)
            }
            return b.gaugeValue
        }
        metrics.breaker(endpoint: label, state: gauge)
    }

    func score(_ v: FeatureVector, version: String, deadline: ContinuousClock.Instant, inline: Bool = false)
        async throws(InferenceFailure) -> Double
    {
        guard let batcher = batchers[version] else {
            throw InferenceFailure(.modelError, "version \(version) not configured")
        }
        return try await batcher.score(v, deadline: deadline, inline: inline)
    }
}

/// A decision, and whether it may be answered.
public enum ScoreAnswer: Sendable, Equatable {
    case answered(ScoreResponse)
    /// `AUDIT_DURABILITY=sync` and the record did not reach Redis within the wait: answer 503.
    case auditUnavailable(ScoreResponse)

    public var response: ScoreResponse {
        switch self {
        case .answered(let r), .auditUnavailable(let r): return r
        }
    }
}

/// Turns a validated request into a decision: features, the fallback chain under one deadline,
/// canary/shadow, the audit record. Never throws: every failure ends in a safer source.
///
/// Its public surface is what the HTTP layer needs: `score`, the services to run (`comparisons`, `calls`),
/// and a read-only view for the debug and readiness endpoints (`latestFeatures`, `identity`,
/// `primaryEndpoint`, `health`); its parts stay inside the module.
public final class DecisionEngine: Sendable {
    let config: GatewayConfiguration
    let metrics: GatewayMetrics
    let features: FeatureMemory
    let cache: ScoreCache
    let identities: ModelIdentityStore
    let audit: AuditBuffer
    /// The async shadow/canary comparisons, after the answer; a service of the gateway listed after the
    /// audit writer, so shutdown finishes them before the writer drains.
    public let comparisons = BackgroundTasks()
    /// The batched inference calls no request carries inline; a service listed before `comparisons`, so it
    /// stops after them (they call the canary too).
    public let calls = BackgroundTasks()
    let canary: CanaryController
    /// This replica's rollout steps (breach rollbacks) for the shared state, performed by `RolloutEventWriter`.
    let rollout = RolloutEvents()
    let primary: EndpointLane
    let secondary: EndpointLane?
    let coldStart: (@Sendable (String, ContinuousClock.Instant) async -> StoredFeatures?)?
    let logger: Logger

    public init(
        config: GatewayConfiguration, metrics: GatewayMetrics, primary: any InferenceEndpoint,
        secondary: (any InferenceEndpoint)?, features: FeatureMemory, audit: AuditBuffer,
        identities: ModelIdentityStore, logger: Logger,
        coldStart: (@Sendable (String, ContinuousClock.Instant) async -> StoredFeatures?)? = nil
    ) {
        self.config = config
        self.metrics = metrics
        self.features = features
        self.audit = audit
        self.identities = identities
        self.logger = logger
        self.coldStart = coldStart
        cache = ScoreCache()
        let versions = [config.modelVersion, config.canaryVersion]
        let calls = self.calls
        self.primary = EndpointLane(
            endpoint: primary, versions: versions, config: config, metrics: metrics, calls: calls)
        self.secondary = secondary.map {
            EndpointLane(endpoint: $0, versions: versions, config: config, metrics: metrics, calls: calls)
        }
        canary = CanaryController(
            primaryVersion: config.modelVersion, version: config.canaryVersion, canaryEnabled: config.canaryEnabled,
            shadowEnabled: config.shadowEnabled,
            fraction: config.canaryFraction,
            limits: CanaryMonitor.Limits(
                maxErrorRate: config.canaryMaxErrorRate, maxP99Ms: config.canaryMaxP99Ms,
                maxDisagreeRate: config.canaryMaxDisagreeRate, window: config.canaryWindow,
                minSamples: config.canaryMinSamples))
    }

    func decision(_ score: Double?) -> Decision {
        guard let score else { return .abstain }
        return score >= config.decisionThreshold ? .trade : .noTrade
    }

    struct ModelAnswer: Sendable {
        var score: Double
        var version: String
        var latency: Duration
    }

    // MARK: - The chain

    /// Decides `request`. `requestID` is the client's valid `X-Request-Id`, nil when it sent none (then
    /// request_id = decision_id). With `AUDIT_DURABILITY=sync` the answer waits for its audit record to
    /// be in Redis; `.auditUnavailable` when it is not within `AUDIT_SYNC_WAIT_MS` (the caller answers
    /// 503: a decision must not be acted on unaudited). `client` is who asked (its name goes into the
    /// record and its counters count the decision); nil for a caller outside the HTTP API.
    public func score(
        _ request: ScoreRequest, requestID clientRequestID: String?, arrival: ContinuousClock.Instant,
        client: ScoreClient? = nil
    ) async -> ScoreAnswer {
        await decide(request, requestID: clientRequestID, arrival: arrival, client: client, traceID: nil, traced: false)
    }

    /// `score` of a request that carried W3C trace context (`traceparent`, `tracestate`; either may be
    /// absent) or arrived while tracing is on. Returns the answer and the `traceparent` to answer with
    /// (nil: no trace). Tracing on: a server span, a child of a valid incoming `traceparent` (else the
    /// root of a new trace), with spans for the feature lookup, each model leg and Triton call, the
    /// fallbacks and the audit write. Tracing off: no span; a valid incoming `traceparent` still gives
    /// the record and the log lines its trace id, and is answered as it came.
    public func score(
        _ request: ScoreRequest, requestID clientRequestID: String?, arrival: ContinuousClock.Instant,
        client: ScoreClient? = nil, trace incoming: TraceHeaders
    ) async -> (ScoreAnswer, traceparent: String?) {
        let parent = incoming.parent.flatMap { TraceHeaders.traceID(ofParent: $0) == nil ? nil : $0 }
        guard Traces.enabled else {
            guard let parent, let id = TraceHeaders.traceID(ofParent: parent) else {
                return (await score(request, requestID: clientRequestID, arrival: arrival, client: client), nil)
            }
            var context = ServiceContext.topLevel
            context.traceID = String(id)
            let answer = await ServiceContext.withValue(context) {
                await decide(
                    request, requestID: clientRequestID, arrival: arrival, client: client, traceID: String(id),
                    traced: false)
            }
            return (answer, parent)
        }
        let span = Traces.startSpan(
            "POST /v1/score", parent: parent, state: parent == nil ? nil : incoming.state, kind: .server)
        let out = Traces.headers(of: span.context).parent
        let traceID = out.flatMap { TraceHeaders.traceID(ofParent: $0) }.map(String.init)
        var context = span.context
        context.traceID = traceID
        span.attributes["http.request.method"] = "POST"
        span.attributes["http.route"] = "/v1/score"
        span.attributes["te.symbol"] = request.symbol
        let answer = await ServiceContext.withValue(context) {
            await decide(
                request, requestID: clientRequestID, arrival: arrival, client: client, traceID: traceID, traced: true)
        }
        let response = answer.response
        span.attributes["te.decision_id"] = response.decisionId
        span.attributes["te.request_id"] = response.requestId
        span.attributes["te.decision"] = response.decision.rawValue
        span.attributes["te.source"] = response.source.rawValue
        if let model = response.model { span.attributes["model.version"] = model.version }
        if case .auditUnavailable = answer {
            span.attributes["http.response.status_code"] = 503
            span.setStatus(SpanStatus(code: .error, message: "audit unavailable"))
        } else {
            span.attributes["http.response.status_code"] = 200
        }
        span.end()
        return (answer, out)
    }

    /// The decision itself. `traceID`: the record's `trace_id`; `traced`: make spans (tracing on and
    /// a request span is the current context).
    private func decide(
        _ request: ScoreRequest, requestID clientRequestID: String?, arrival: ContinuousClock.Instant,
        client: ScoreClient?, traceID: String?, traced: Bool
    ) async -> ScoreAnswer {
        let decisionID = RequestID.random()
        let requestID = clientRequestID ?? decisionID
        let timeout = Duration.microseconds(Int64(config.scoreTimeoutMs * 1000))
        let hardDeadline = arrival + timeout
        var reasons: [String] = []

        // Features: the request's own, else memory, else te:online (cold start).
        var vector: FeatureVector?
        var ageMs: Double?
        var snapshotID: String?
        var snapshotTsNs: Int64?
        await Traces.child("feature lookup", traced: traced) { span in
            if let values = request.features {
                vector = try? FeatureVector(values)
                ageMs = 0
                span?.attributes["te.features.source"] = "request"
            } else {
                var stored = features.get(request.symbol)
                var from = "memory"
                if stored == nil, let coldStart {
                    stored = await coldStart(request.symbol, hardDeadline)
                    from = "online"
                }
                if let stored {
                    vector = stored.snapshot.features
                    ageMs = stored.ageMs(nowNs: wallClockNs())
                    snapshotID = stored.entryId
                    snapshotTsNs = stored.snapshot.tsNs
                }
                span?.attributes["te.features.source"] = stored == nil ? "missing" : from
                if let snapshotID { span?.attributes["te.feature_snapshot_id"] = snapshotID }
                if let ageMs { span?.attributes["te.feature_age_ms"] = ageMs }
            }
        }
        let maxAge = request.freshnessMs.map(Double.init) ?? config.featureMaxAgeMs
        let fresh: Bool
        if vector == nil {
            reasons.append("features_missing")
            fresh = false
        } else if let ageMs, ageMs > maxAge {
            reasons.append("features_stale")
            fresh = false
        } else {
            fresh = true
        }

        let useCanary = fresh && canary.routesToCanary(requestID: requestID)
        var answer: ModelAnswer?
        var canaryFailed = false
        if fresh, let vector {
            (answer, canaryFailed) = await raceModel(
                vector, useCanary: useCanary, deadline: hardDeadline, traced: traced, reasons: &reasons)
        }

        var score: Double?
        var source: ScoreSource
        var model: ModelIdentity?
        if let answer {
            score = answer.score
            source = .model
            let identity = identities.identity(version: answer.version)
            model = identity
            cache.put(request.symbol, score: answer.score, model: identity, at: .now)
        } else if let cached = cache.get(request.symbol),
            ContinuousClock.now - cached.at <= .microseconds(Int64(config.cacheTTLMs * 1000))
        {
            score = cached.score
            source = .cache
            model = cached.model
            if traced { fallbackSpan("fallback cache", reasons: reasons) }
        } else {
            reasons.append(cache.get(request.symbol) == nil ? "cache_miss" : "cache_expired")
            if fresh, let vector {
                score = RulesBaseline.score(vector)
                source = .rules
                if traced { fallbackSpan("fallback rules", reasons: reasons) }
            } else {
                source = .abstain
                if traced { fallbackSpan("fallback abstain", reasons: reasons) }
            }
        }

        let decision = decision(score)
        let latency = ContinuousClock.now - arrival
        let latencyUs = latency.components.seconds * 1_000_000 + latency.components.attoseconds / 1_000_000_000_000
        if let client {
            client.counters.request(decision: decision, source: source)
        } else {
            metrics.request(decision: decision, source: source)
        }
        metrics.requestDuration.record(duration: latency)
        for r in reasons { metrics.fallback(reason: r) }
        let reason = reasons.isEmpty ? nil : reasons.joined(separator: ",")

        var record = AuditRecord(
            decisionId: decisionID, requestId: requestID, tsNs: wallClockNs(), symbol: request.symbol,
            decision: decision, score: score, source: source, modelName: model?.name, modelVersion: model?.version,
            modelHash: model?.hash, features: vector, featureAgeMs: ageMs, latencyUs: latencyUs, canary: nil,
            reason: reason, featureSnapshotId: snapshotID, featureTsNs: snapshotTsNs, traceId: traceID,
            client: client?.auditName)
        let response = ScoreResponse(
            decisionId: decisionID, requestId: requestID, symbol: request.symbol, decision: decision, score: score,
            source: source, model: model, featureAgeMs: ageMs, latencyUs: latencyUs, reason: reason)

        // Shadow / canary comparison: the record carries its result. Async: it runs after the answer. Sync:
        // the answer waits for the record, so for the comparison too (one more Triton call, in budget).
        let comparison: Comparison? =
            if let answer, vector != nil, useCanary, answer.version == config.canaryVersion {
                .canary
            } else if let answer, vector != nil, canary.shadowing, answer.version == config.modelVersion {
                .shadow
            } else {
                nil
            }
        if comparison == nil, canaryFailed {
            record.canary = CanaryResult(version: config.canaryVersion, score: nil, mode: Comparison.canary.rawValue)
        }
        // Below debug level this is one level check: the metadata is not built.
        logger.debug(
            "decided",
            metadata: [
                "decision_id": "\(decisionID)", "request_id": "\(requestID)", "symbol": "\(request.symbol)",
                "decision": "\(decision.rawValue)", "source": "\(source.rawValue)", "reason": "\(reason ?? "-")",
                "latency_us": "\(latencyUs)"
            ])
        switch config.auditDurability {
        case .async:
            if let mode = comparison, let vector, let answer {
                let queued = comparisons.submit { [record] in
                    self.audit.append(await self.compare(vector, answer: answer, mode: mode, record: record))
                }
                // Shutting down: the record goes without its comparison rather than not at all.
                if !queued { audit.append(record) }
            } else {
                await Traces.child("audit write", traced: traced) { span in
                    span?.attributes["te.audit.durability"] = "async"
                    audit.append(record)
                }
            }
            return .answered(response)
        case .sync:
            if let mode = comparison, let vector, let answer {
                record = await compare(vector, answer: answer, mode: mode, record: record)
            }
            let durable = await Traces.child("audit write", traced: traced) { span in
                span?.attributes["te.audit.durability"] = "sync"
                let durable = await audit.appendDurable(record, wait: config.auditSyncWait)
                if !durable { span?.setStatus(SpanStatus(code: .error, message: "not in Redis within the wait")) }
                return durable
            }
            if durable { return .answered(response) }
            metrics.auditUnavailable.increment()
            return .auditUnavailable(response)
        }
    }

    /// A fallback that answers from memory (cached score, rules, abstain): instant, so a span of its own
    /// only marks which one answered and why the model did not.
    private func fallbackSpan(_ name: String, reasons: [String]) {
        let span = Traces.startSpan(name, in: ServiceContext.current ?? .topLevel)
        span.attributes["te.fallback.reasons"] = reasons.joined(separator: ",")
        span.end()
    }

    /// How the model stage runs its legs; one driver of `FallbackRace` (`modelStage`) for both.
    enum ModelStageMode {
        /// Nothing to race (no secondary endpoint, no canary): the primary alone, in the request's own
        /// task. No task group, timer task or batch task: at one connection those hops cost more than the
        /// rest of the gateway (stage timestamps: task group + timer ≈ 40 µs, batch task ≈ 10 µs, the
        /// group's wake-ups ≈ 25 µs at load 8 on 2 cores). The deadline is the Triton call's own (the
        /// client resets the stream and fails at it), so it holds without a timer.
        case inline
        /// Two legs in a task group, with the hedge and the model deadline as timer tasks. `second` runs
        /// the second leg: the secondary endpoint, or the primary endpoint for a canary's fallback.
        case race(second: EndpointLane)
    }

    private enum RaceMessage: Sendable {
        case leg(FallbackRace.Leg, Result<Double, InferenceFailure>, Duration)
        case timer(FallbackRace.Event)
    }

    /// What `.race` asks of the caller's task group.
    private enum RaceIO {
        case launch(@Sendable () async -> RaceMessage)
        case next
    }

    /// A value per leg, without a dictionary's allocation.
    private struct PerLeg<Value> {
        var primary: Value?
        var secondary: Value?

        subscript(_ leg: FallbackRace.Leg) -> Value? {
            get { leg == .primary ? primary : secondary }
            set { if leg == .primary { primary = newValue } else { secondary = newValue } }
        }

        /// The legs holding a value.
        var legs: [(FallbackRace.Leg, Value)] {
            var out: [(FallbackRace.Leg, Value)] = []
            if let primary { out.append((.primary, primary)) }
            if let secondary { out.append((.secondary, secondary)) }
            return out
        }
    }

    /// The model stage. Returns the answer, if any, and whether a canary attempt failed.
    private func raceModel(
        _ vector: FeatureVector, useCanary: Bool, deadline hardDeadline: ContinuousClock.Instant, traced: Bool,
        reasons: inout [String]
    ) async -> (ModelAnswer?, Bool) {
        let jitter = { (self.config.timeoutJitter > 0) ? Double.random(in: 0...self.config.timeoutJitter) : 0 }
        let timeoutUs = config.scoreTimeoutMs * 1000
        // Reserve for the in-memory fallbacks and writing the answer.
        let reserveUs = min(1000, timeoutUs * 0.1) * (1 + jitter())
        let modelDeadline = hardDeadline - .microseconds(Int64(reserveUs))
        // The canary's fallback leg is the primary version: on the secondary, else on the primary endpoint.
        guard let second = secondary ?? (useCanary ? primary : nil) else {
            return await modelStage(
                .inline, vector, useCanary: useCanary, deadline: modelDeadline, traced: traced, reasons: &reasons)
        }
        let hedgeAt =
            hardDeadline - .microseconds(Int64(timeoutUs))
            + .microseconds(Int64(config.hedgeAfter * 1000 * (1 - jitter())))
        return await withTaskGroup(of: RaceMessage.self) { group -> (ModelAnswer?, Bool) in
            group.addTask {
                try? await Task.sleep(until: modelDeadline, clock: .continuous)
                return .timer(.deadline)
            }
            group.addTask {
                try? await Task.sleep(until: hedgeAt, clock: .continuous)
                return .timer(.hedgeDue)
            }
            defer { group.cancelAll() }
            return await modelStage(
                .race(second: second), vector, useCanary: useCanary, deadline: modelDeadline, traced: traced,
                reasons: &reasons,
                io: { request in
                    switch request {
                    case .launch(let leg):
                        group.addTask(operation: leg)
                        return nil
                    case .next:
                        return await group.next()
                    }
                })
        }
    }

    /// Drives `FallbackRace`: starts the legs it asks for (a breaker may refuse one), feeds it their
    /// outcomes and the timers, keeps the breakers, metrics and canary monitor. `.inline` runs a leg to
    /// its end where it starts; `.race` launches it into the caller's task group and waits on it (`io`).
    private func modelStage(
        _ mode: ModelStageMode, _ vector: FeatureVector, useCanary: Bool,
        deadline modelDeadline: ContinuousClock.Instant,
        traced: Bool, reasons: inout [String],
        io: (RaceIO) async -> RaceMessage? = { _ in nil }
    ) async -> (ModelAnswer?, Bool) {
        let servingPrimary = canary.servingPrimary
        let primaryVersion = useCanary ? config.canaryVersion : servingPrimary
        let secondLane: EndpointLane?
        let inline: Bool
        switch mode {
        case .inline: (secondLane, inline) = (nil, true)
        case .race(let second): (secondLane, inline) = (second, false)
        }
        var race = FallbackRace(hasSecondary: secondLane != nil)
        var permissions = PerLeg<CircuitBreaker.Permission>()
        var started = PerLeg<ContinuousClock.Instant>()
        var canaryFailed = false

        func lane(_ leg: FallbackRace.Leg) -> EndpointLane {
            switch leg {
            case .primary: return primary
            case .secondary: return secondLane ?? primary  // FallbackRace never starts it without one
            }
        }
        func version(_ leg: FallbackRace.Leg) -> String { leg == .primary ? primaryVersion : servingPrimary }

        @Sendable func run(_ leg: FallbackRace.Leg, _ l: EndpointLane, _ v: String) async -> RaceMessage {
            // The secondary leg is the chain's retry: its span says so.
            await Traces.child(leg == .primary ? "model primary" : "fallback secondary", traced: traced) { span in
                span?.attributes["triton.endpoint"] = l.label
                span?.attributes["model.version"] = v
                let t0 = ContinuousClock.now
                do throws(InferenceFailure) {
                    let s = try await l.score(vector, version: v, deadline: modelDeadline, inline: inline)
                    return .leg(leg, .success(s), .now - t0)
                } catch {
                    span?.setStatus(SpanStatus(code: .error, message: error.kind.rawValue))
                    return .leg(leg, .failure(error), .now - t0)
                }
            }
        }

        func finishLeg(_ leg: FallbackRace.Leg, _ outcome: Result<Double, InferenceFailure>?, _ elapsed: Duration) {
            guard let permission = permissions[leg] else { return }
            permissions[leg] = nil
            let l = lane(leg)
            l.record(outcome.map { $0.map { _ in () } }, permission: permission)
            if case .success = outcome { l.recordCall(version: version(leg), duration: elapsed) }
            if leg == .primary, useCanary {
                switch outcome {
                case .success: break  // judged with its disagreement in compare()
                case .failure, nil:
                    canaryFailed = true
                    metrics.canaryErrors.increment()
                    observeCanary(.init(failed: true, latencyMs: elapsed.milliseconds, disagreed: nil))
                }
            }
        }

        var pending: RaceMessage?
        var action = race.start()
        var result: ModelAnswer?
        loop: while true {
            switch action {
            case .start(let leg):
                let l = lane(leg)
                let permission = l.acquire()
                guard permission != .rejected else {
                    action = race.on(.skipped(leg))
                    continue loop
                }
                permissions[leg] = permission
                started[leg] = .now
                let v = version(leg)
                switch mode {
                case .inline: pending = await run(leg, l, v)
                case .race: _ = await io(.launch({ await run(leg, l, v) }))
                }
            case .answer, .giveUp:
                break loop
            case .wait:
                break
            }
            let message: RaceMessage?
            if let p = pending {
                (message, pending) = (p, nil)
            } else {
                message = await io(.next)
            }
            guard let message else { break loop }
            switch message {
            case .timer(let event):
                action = race.on(event)
                if event == .deadline {
                    for (leg, t0) in started.legs where permissions[leg] != nil {
                        finishLeg(leg, .failure(InferenceFailure(.timeout, "model deadline")), .now - t0)
                    }
                }
            case .leg(let leg, let outcome, let elapsed):
                switch outcome {
                case .success(let s):
                    action = race.on(.succeeded(leg))
                    if case .answer = action { result = ModelAnswer(score: s, version: version(leg), latency: elapsed) }
                    finishLeg(leg, outcome, elapsed)
                case .failure(let f):
                    action = race.on(.failed(leg, reason: f.kind == .cancelled ? "timeout" : f.kind.rawValue))
                    finishLeg(leg, outcome, elapsed)
                }
            }
        }
        // Legs still running lost the race to another leg: abandoned, not failed.
        if permissions.primary != nil || permissions.secondary != nil {
            for (leg, t0) in started.legs where permissions[leg] != nil { finishLeg(leg, nil, .now - t0) }
        }
        reasons.append(contentsOf: race.reasons)
        return (result, canaryFailed)
    }

    // MARK: - Shadow and canary

    /// Scores the other version (canary beside a primary answer, or primary beside a canary answer),
    /// records delta/disagreement for the canary, then writes the audit record with the canary result.
    /// Which version answered and which is scored beside it (the record's `canary.mode`).
    enum Comparison: String, Sendable {
        /// The canary answered; the primary version is scored beside it.
        case canary
        /// The primary version answered; the canary is scored beside it.
        case shadow
    }

    /// The other version's score in a comparison.
    private enum OtherScore {
        case scored(Double)
        case failed(InferenceFailure)
        /// Not tried: the primary endpoint's breaker is not closed (the endpoint's trouble, not the canary's).
        case skipped
    }

    private func compare(_ vector: FeatureVector, answer: ModelAnswer, mode: Comparison, record: AuditRecord) async
        -> AuditRecord
    {
        var record = record
        let otherVersion: String
        switch mode {
        case .canary: otherVersion = config.modelVersion
        case .shadow: otherVersion = config.canaryVersion
        }
        let deadline = ContinuousClock.now + .microseconds(Int64(config.scoreTimeoutMs * 1000))
        let t0 = ContinuousClock.now
        let other: OtherScore
        if case .closed = primary.breakerState {
            do throws(InferenceFailure) {
                other = .scored(try await primary.score(vector, version: otherVersion, deadline: deadline))
            } catch {
                other = .failed(error)
            }
        } else {
            other = .skipped
        }
        let elapsed = ContinuousClock.now - t0
        let otherScore: Double? =
            switch other {
            case .scored(let s): s
            case .failed, .skipped: nil
            }
        let (canaryScore, primaryScore): (Double?, Double?)
        switch mode {
        case .canary: (canaryScore, primaryScore) = (answer.score, otherScore)
        case .shadow: (canaryScore, primaryScore) = (otherScore, answer.score)
        }
        var disagreed: Bool?
        if let canaryScore, let primaryScore {
            metrics.canaryAbsDelta.record(abs(canaryScore - primaryScore))
            disagreed = decision(canaryScore) != decision(primaryScore)
            if disagreed == true { metrics.canaryDisagree.increment() }
        }
        switch (mode, other) {
        case (.canary, _):
            observeCanary(.init(failed: false, latencyMs: answer.latency.milliseconds, disagreed: disagreed))
        case (.shadow, .scored):
            primary.recordCall(version: otherVersion, duration: elapsed)
            observeCanary(.init(failed: false, latencyMs: elapsed.milliseconds, disagreed: disagreed))
        case (.shadow, .failed):
            metrics.canaryErrors.increment()
            observeCanary(.init(failed: true, latencyMs: elapsed.milliseconds, disagreed: nil))
        case (.shadow, .skipped):
            break
        }
        record.canary = CanaryResult(version: config.canaryVersion, score: canaryScore, mode: mode.rawValue)
        return record
    }

    private func observeCanary(_ observation: CanaryMonitor.Observation) {
        guard let rolledBack = canary.record(observation) else { return }
        let (breach, generation) = rolledBack
        metrics.canaryRollbacks.increment()
        metrics.rolloutState(canary.followed.generation, status: .rolledBack)
        let identity = identities.identity(version: config.canaryVersion)
        logger.error(
            "canary rolled back",
            metadata: [
                "canary_version": "\(config.canaryVersion)", "model_hash": "\(identity.hash)",
                "breach": "\(breach)", "generation": "\(generation)"
            ])
        rollout.emit(
            RolloutRequest(
                event: Self.rollbackEvent(identity: identity, breach: breach, config: config, replica: rollout.replica),
                expectedGeneration: generation, status: .rolledBack))
    }

    /// Serves the shared rollout state from now on (see `CanaryController.apply`); logs and counts a change.
    public func applyRollout(_ state: RolloutState) {
        guard let change = canary.apply(state) else { return }
        metrics.rolloutState(state.generation, status: change.to)
        // A rollback this replica made itself was counted when it saw the breach.
        guard change.from != change.to else { return }
        if change.to == .rolledBack { metrics.canaryRollbacks.increment() }
        logger.notice(
            "rollout state followed",
            metadata: [
                "generation": "\(state.generation)", "from": "\(change.from.rawValue)", "to": "\(change.to.rawValue)",
                "serving_primary": "\(canary.servingPrimary)", "event_id": "\(state.eventId ?? "-")"
            ])
    }

    /// The rollout event of an automatic canary rollback: traffic goes from the canary back to the
    /// primary version. Not a decision: it goes to `te:rollout`, never to `te:audit`.
    static func rollbackEvent(
        identity: ModelIdentity, breach: CanaryMonitor.Breach, config: GatewayConfiguration, replica: String
    ) -> RolloutEvent {
        let limits = CanaryMonitor.Limits(
            maxErrorRate: config.canaryMaxErrorRate, maxP99Ms: config.canaryMaxP99Ms,
            maxDisagreeRate: config.canaryMaxDisagreeRate, window: config.canaryWindow,
            minSamples: config.canaryMinSamples)
        return RolloutState.event(
            .rollback, model: identity.name, primary: config.modelVersion, canary: config.canaryVersion,
            metric: breach.metric, value: breach.value, limit: breach.limit(limits), replica: replica,
            eventId: RequestID.random(), tsNs: wallClockNs())
    }
}

extension Duration {
    var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}

// MARK: - What the HTTP layer reads

extension DecisionEngine {
    /// The features the engine holds for `symbol` (from the feed or a cold start), if any.
    public func latestFeatures(_ symbol: String) -> StoredFeatures? { features.get(symbol) }

    /// The model identity Triton reported for `version` (hash `unknown` until it has).
    public func identity(version: String) -> ModelIdentity { identities.identity(version: version) }

    /// The primary Triton endpoint (`/debug/triton` calls it directly, outside the fallback chain).
    public var primaryEndpoint: any InferenceEndpoint { primary.endpoint }

    /// What `/readyz` reports of the engine.
    public struct Health: Sendable {
        public var primaryBreaker: CircuitBreaker.State
        /// nil without a secondary endpoint.
        public var secondaryBreaker: CircuitBreaker.State?
        public var audit: AuditBuffer
        /// Why the canary was rolled back; nil while it is active.
        public var canaryRollback: CanaryMonitor.Breach?
    }

    public var health: Health {
        Health(
            primaryBreaker: primary.breakerState, secondaryBreaker: secondary?.breakerState, audit: audit,
            canaryRollback: canary.rollback)
    }
}
