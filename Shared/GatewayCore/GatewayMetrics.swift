import Prometheus
import ServiceKit
import Synchronization
import TEModels

/// The gateway's metrics (names are the contract with dashboards, see COMMON.md). Collectors are made
/// once and looked up by index or small dictionaries so the request path does no registry lookups.
public final class GatewayMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// `process_*`, read at each scrape.
    public let process: ProcessMetrics
    let requestDuration: DurationHistogram
    let auditBufferDepth: Gauge
    let auditDropped: Counter
    let auditWritten: Counter
    let auditUnavailable: Counter
    let canaryAbsDelta: ValueHistogram
    let canaryDisagree: Counter
    let canaryRollbacks: Counter
    let canaryErrors: Counter
    private let rolloutGeneration: Gauge
    private let rolloutStatus: [RolloutState.Status: Gauge]
    private let rolloutTransitions: [RolloutEvent.Kind: Counter]
    /// Decisions made without a client (an engine called directly).
    private let anonymousRequests: ClientCounters
    private let fallbacks = Mutex<[String: Counter]>([:])
    private let tritonDurations = Mutex<[String: DurationHistogram]>([:])
    private let breakerGauges = Mutex<[String: Gauge]>([:])

    static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .microseconds(750), .milliseconds(1),
        .microseconds(1500), .milliseconds(2), .milliseconds(3), .milliseconds(5), .milliseconds(10),
        .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1)
    ]

    static func name(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        process = ProcessMetrics(registry: registry)
        anonymousRequests = Self.makeClientCounters(registry, APIClient.anonymousName)
        requestDuration = registry.makeDurationHistogram(
            descriptor: Self.name("te_gateway_request_duration_seconds", "Score request duration, arrival to answer"),
            labels: [], buckets: Self.latencyBuckets)
        auditBufferDepth = registry.makeGauge(
            descriptor: Self.name("te_gateway_audit_buffer_depth", "Audit records waiting to be written to te:audit"),
            labels: [])
        auditDropped = registry.makeCounter(
            descriptor: Self.name(
                "te_gateway_audit_dropped_total", "Audit records dropped because the buffer was full"),
            labels: [])
        auditWritten = registry.makeCounter(
            descriptor: Self.name("te_gateway_audit_written_total", "Audit records written to te:audit"), labels: [])
        auditUnavailable = registry.makeCounter(
            descriptor: Self.name(
                "te_gateway_audit_unavailable_total",
                "Decisions answered 503 audit_unavailable: their record did not reach Redis in time (sync durability)"),
            labels: [])
        canaryAbsDelta = registry.makeValueHistogram(
            descriptor: Self.name("canary_abs_delta", "Absolute difference between canary and primary scores"),
            labels: [], buckets: [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1])
        canaryDisagree = registry.makeCounter(
            descriptor: Self.name("canary_disagree_total", "Canary decisions that differ from the primary's"),
            labels: [])
        canaryRollbacks = registry.makeCounter(
            descriptor: Self.name("canary_rollbacks_total", "Automatic canary rollbacks"), labels: [])
        canaryErrors = registry.makeCounter(
            descriptor: Self.name("te_gateway_canary_errors_total", "Canary inference calls that failed"), labels: [])
        rolloutGeneration = registry.makeGauge(
            descriptor: Self.name(
                "te_rollout_generation", "Generation of the shared rollout state this replica follows"),
            labels: [])
        var status: [RolloutState.Status: Gauge] = [:]
        for s in RolloutState.Status.allCases {
            status[s] = registry.makeGauge(
                descriptor: Self.name(
                    "te_rollout_status",
                    "1 for the rollout status this replica serves (configured, rolled_back, promoted), else 0"),
                labels: [("status", s.rawValue)])
        }
        rolloutStatus = status
        var transitions: [RolloutEvent.Kind: Counter] = [:]
        for k in RolloutEvent.Kind.allCases {
            transitions[k] = registry.makeCounter(
                descriptor: Self.name(
                    "te_rollout_transitions_total", "Transitions of the shared rollout state this process made, by kind"
                ),
                labels: [("kind", k.rawValue)])
        }
        rolloutTransitions = transitions
        rolloutState(0, status: .configured)
        for reason in Self.chainFallbackReasons { fallback(reason: reason, by: 0) }
    }

    /// The rollout state served: its generation and status.
    func rolloutState(_ generation: Int64, status: RolloutState.Status) {
        rolloutGeneration.set(Double(generation))
        for (s, gauge) in rolloutStatus { gauge.set(s == status ? 1.0 : 0.0) }
    }

    func rolloutTransition(_ kind: RolloutEvent.Kind) { rolloutTransitions[kind]?.increment() }

    /// Fallback reasons of the cache/rules links, known up front: registered at 0 so that `rate()` in
    /// alerts and dashboards has a series before the first fallback.
    static let chainFallbackReasons = ["features_missing", "features_stale", "cache_miss", "cache_expired"]

    /// The reasons `FallbackRace` can give for an endpoint's leg (`<leg>_<reason>`).
    static func legFallbackReasons(_ leg: String) -> [String] {
        var reasons = ["breaker_open", "timeout", "unavailable", "model_error"].map { "\(leg)_\($0)" }
        if leg == FallbackRace.Leg.secondary.rawValue { reasons.append("primary_slow") }
        return reasons
    }

    /// Registers an endpoint's series at their idle values: breaker closed, its fallback reasons at 0.
    func register(endpoint: String) {
        breaker(endpoint: endpoint, state: 0)
        for reason in Self.legFallbackReasons(endpoint) { fallback(reason: reason, by: 0) }
    }

    func request(decision: Decision, source: ScoreSource) {
        anonymousRequests.request(decision: decision, source: source)
    }

    /// A client's series: decisions by decision and source, and its rate-limited requests. Registered at 0
    /// when the client first appears (the registry hands back the same counters for the same labels).
    struct ClientCounters: Sendable {
        let requests: [Counter]  // indexed by `index(decision:source:)`
        let rateLimited: Counter

        static let decisions: [Decision] = [.trade, .noTrade, .abstain]

        static func index(_ decision: Decision, _ source: ScoreSource) -> Int {
            decisions.firstIndex(of: decision)! * ScoreSource.allCases.count + ScoreSource.allCases.firstIndex(
                of: source)!
        }

        func request(decision: Decision, source: ScoreSource) { requests[Self.index(decision, source)].increment() }
    }

    func clientCounters(_ client: String) -> ClientCounters { Self.makeClientCounters(registry, client) }

    private static func makeClientCounters(_ registry: PrometheusCollectorRegistry, _ client: String) -> ClientCounters
    {
        var requests: [Counter] = []
        for decision in ClientCounters.decisions {
            for source in ScoreSource.allCases {
                requests.append(
                    registry.makeCounter(
                        descriptor: name("te_gateway_requests_total", "Score decisions by decision, source and client"),
                        labels: [("decision", decision.rawValue), ("source", source.rawValue), ("client", client)]))
            }
        }
        let rateLimited = registry.makeCounter(
            descriptor: name(
                "te_gateway_rate_limited_total", "Requests answered 429 rate_limited (GATEWAY_RATE_LIMIT), by client"),
            labels: [("client", client)])
        return ClientCounters(requests: requests, rateLimited: rateLimited)
    }

    func fallback(reason: String, by amount: Int64 = 1) {
        let counter = fallbacks.withLock { map in
            if let c = map[reason] { return c }
            let c = registry.makeCounter(
                descriptor: Self.name("te_gateway_fallback_total", "Why a link of the fallback chain did not answer"),
                labels: [("reason", reason)])
            map[reason] = c
            return c
        }
        if amount > 0 { counter.increment(by: amount) }
    }

    func triton(endpoint: String, version: String, duration: Duration) {
        let key = "\(endpoint)/\(version)"
        let histogram = tritonDurations.withLock { map in
            if let h = map[key] { return h }
            let h = registry.makeDurationHistogram(
                descriptor: Self.name("te_gateway_triton_duration_seconds", "Triton inference call duration"),
                labels: [("endpoint", endpoint), ("version", version)], buckets: Self.latencyBuckets)
            map[key] = h
            return h
        }
        histogram.record(duration)
    }

    /// Rows per inference call (how well requests coalesce), per endpoint and version.
    func batchRows(endpoint: String, version: String) -> ValueHistogram {
        registry.makeValueHistogram(
            descriptor: Self.name("te_gateway_batch_rows", "Rows per batched Triton inference call"),
            labels: [("endpoint", endpoint), ("version", version)], buckets: [1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256])
    }

    func breaker(endpoint: String, state: Int) {
        let gauge = breakerGauges.withLock { map in
            if let g = map[endpoint] { return g }
            let g = registry.makeGauge(
                descriptor: Self.name(
                    "te_gateway_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open"),
                labels: [("endpoint", endpoint)])
            map[endpoint] = g
            return g
        }
        gauge.set(Double(state))
    }
}
