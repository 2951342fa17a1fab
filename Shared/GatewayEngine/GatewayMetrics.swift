import Metrics
import Prometheus
import ServiceKit
import Synchronization
import TEModels

/// The gateway's metrics (names are the contract with dashboards, alerts and the HPA adapter:
/// deploy/metrics.txt), through swift-metrics like every service's, with HELP text from `MetricHelp`.
/// Handles are made once and looked up by index or small dictionaries so the request path does no
/// registry lookup and builds no label string.
public final class GatewayMetrics: Sendable {
    /// What `/metrics` serves. Each gateway its own (tests run several in one process), the process's
    /// `ServiceBootstrap.registry` in the service.
    public let registry: PrometheusCollectorRegistry
    /// The swift-metrics factory onto `registry`, with the gateway's histogram buckets; the HTTP layer's metrics
    /// (push streams) go through it too.
    public let factory: any MetricsFactory
    /// `process_*`, read at each scrape.
    public let process: ProcessMetrics
    let requestDuration: Metrics.Timer
    let auditBufferDepth: Metrics.Gauge
    let auditDropped: Metrics.Counter
    let auditWritten: Metrics.Counter
    let auditUnavailable: Metrics.Counter
    let canaryAbsDelta: Metrics.Recorder
    let canaryDisagree: Metrics.Counter
    let canaryRollbacks: Metrics.Counter
    let canaryErrors: Metrics.Counter
    private let rolloutGeneration: Metrics.Gauge
    private let rolloutStatus: [RolloutState.Status: Metrics.Gauge]
    private let rolloutTransitions: [RolloutEvent.Kind: Metrics.Counter]
    /// Decisions made without a client (an engine called directly).
    private let anonymousRequests: ClientCounters
    private let fallbacks = Mutex<[String: Metrics.Counter]>([:])
    private let breakerGauges = Mutex<[String: Metrics.Gauge]>([:])

    static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .microseconds(750), .milliseconds(1),
        .microseconds(1500), .milliseconds(2), .milliseconds(3), .milliseconds(5), .milliseconds(10),
        .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1)
    ]

    /// The gateway's histograms' buckets, by family.
    static let durationBuckets: [String: [Duration]] = [
        "te_gateway_request_duration_seconds": latencyBuckets, "te_gateway_triton_duration_seconds": latencyBuckets
    ]
    static let valueBuckets: [String: [Double]] = [
        "canary_abs_delta": [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1],
        "te_gateway_batch_rows": [1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256]
    ]

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        let factory = ServiceBootstrap.metricsFactory(
            registry: registry, durationBuckets: Self.durationBuckets, valueBuckets: Self.valueBuckets)
        self.factory = factory
        process = ProcessMetrics(registry: registry)
        anonymousRequests = Self.makeClientCounters(factory, ScoreClient.anonymousName)
        requestDuration = Metrics.Timer(label: "te_gateway_request_duration_seconds", factory: factory)
        auditBufferDepth = Metrics.Gauge(label: "te_gateway_audit_buffer_depth", factory: factory)
        auditDropped = Metrics.Counter(label: "te_gateway_audit_dropped_total", factory: factory)
        auditWritten = Metrics.Counter(label: "te_gateway_audit_written_total", factory: factory)
        auditUnavailable = Metrics.Counter(label: "te_gateway_audit_unavailable_total", factory: factory)
        canaryAbsDelta = Metrics.Recorder(label: "canary_abs_delta", factory: factory)
        canaryDisagree = Metrics.Counter(label: "canary_disagree_total", factory: factory)
        canaryRollbacks = Metrics.Counter(label: "canary_rollbacks_total", factory: factory)
        canaryErrors = Metrics.Counter(label: "te_gateway_canary_errors_total", factory: factory)
        rolloutGeneration = Metrics.Gauge(label: "te_rollout_generation", factory: factory)
        var status: [RolloutState.Status: Metrics.Gauge] = [:]
        for s in RolloutState.Status.allCases {
            status[s] = Metrics.Gauge(
                label: "te_rollout_status", dimensions: [("status", s.rawValue)], factory: factory)
        }
        rolloutStatus = status
        var transitions: [RolloutEvent.Kind: Metrics.Counter] = [:]
        for k in RolloutEvent.Kind.allCases {
            transitions[k] = Metrics.Counter(
                label: "te_rollout_transitions_total", dimensions: [("kind", k.rawValue)], factory: factory)
        }
        rolloutTransitions = transitions
        rolloutState(0, status: .configured)
        for reason in Self.chainFallbackReasons { fallback(reason: reason, by: 0) }
    }

    /// The rollout state served: its generation and status.
    func rolloutState(_ generation: Int64, status: RolloutState.Status) {
        rolloutGeneration.record(generation)
        for (s, gauge) in rolloutStatus { gauge.record(s == status ? 1 : 0) }
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
    public struct ClientCounters: Sendable {
        let requests: [Metrics.Counter]  // indexed by `index(decision:source:)`
        /// `te_gateway_rate_limited_total`: the HTTP layer counts its 429s here.
        public let rateLimited: Metrics.Counter

        static let decisions: [Decision] = [.trade, .noTrade, .abstain]

        static func index(_ decision: Decision, _ source: ScoreSource) -> Int {
            decisions.firstIndex(of: decision)! * ScoreSource.allCases.count + ScoreSource.allCases.firstIndex(
                of: source)!
        }

        func request(decision: Decision, source: ScoreSource) { requests[Self.index(decision, source)].increment() }
    }

    public func clientCounters(_ client: String) -> ClientCounters { Self.makeClientCounters(factory, client) }

    private static func makeClientCounters(_ factory: any MetricsFactory, _ client: String) -> ClientCounters {
        var requests: [Metrics.Counter] = []
        for decision in ClientCounters.decisions {
            for source in ScoreSource.allCases {
                requests.append(
                    Metrics.Counter(
                        label: "te_gateway_requests_total",
                        dimensions: [("decision", decision.rawValue), ("source", source.rawValue), ("client", client)],
                        factory: factory))
            }
        }
        let rateLimited = Metrics.Counter(
            label: "te_gateway_rate_limited_total", dimensions: [("client", client)], factory: factory)
        return ClientCounters(requests: requests, rateLimited: rateLimited)
    }

    func fallback(reason: String, by amount: Int64 = 1) {
        let counter = fallbacks.withLock { map in
            if let c = map[reason] { return c }
            let c = Metrics.Counter(
                label: "te_gateway_fallback_total", dimensions: [("reason", reason)], factory: factory)
            map[reason] = c
            return c
        }
        if amount > 0 { counter.increment(by: amount) }
    }

    /// Triton call durations of one endpoint and version (made once per lane and version, not per call).
    func tritonDuration(endpoint: String, version: String) -> Metrics.Timer {
        Metrics.Timer(
            label: "te_gateway_triton_duration_seconds", dimensions: [("endpoint", endpoint), ("version", version)],
            factory: factory)
    }

    /// Rows per inference call (how well requests coalesce), per endpoint and version.
    func batchRows(endpoint: String, version: String) -> Metrics.Recorder {
        Metrics.Recorder(
            label: "te_gateway_batch_rows", dimensions: [("endpoint", endpoint), ("version", version)], factory: factory
        )
    }

    func breaker(endpoint: String, state: Int) {
        let gauge = breakerGauges.withLock { map in
            if let g = map[endpoint] { return g }
            let g = Metrics.Gauge(
                label: "te_gateway_breaker_state", dimensions: [("endpoint", endpoint)], factory: factory)
            map[endpoint] = g
            return g
        }
        gauge.record(state)
    }
}

/// Who a decision is for, as the engine needs it: the name in the audit record (`client`; nil for the
/// anonymous caller) and the counters its decisions go to. The HTTP layer's `APIClient` holds one per client.
public struct ScoreClient: Sendable {
    public let auditName: String?
    public let counters: GatewayMetrics.ClientCounters

    public init(auditName: String?, counters: GatewayMetrics.ClientCounters) {
        self.auditName = auditName
        self.counters = counters
    }

    /// The `client` label of requests made with auth off.
    public static let anonymousName = "anonymous"
}
