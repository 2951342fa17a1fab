import Logging
import Metrics
import Prometheus
import Synchronization

/// Process-wide logging and metrics setup; each runs once per process (swift-log and
/// swift-metrics allow one bootstrap), later calls are no-ops.
public enum ServiceBootstrap {
    private static let state = Mutex((logging: false, metrics: false))

    /// The registry `/metrics` serves; swift-metrics is bootstrapped onto it by `metrics()`.
    public static let registry = PrometheusCollectorRegistry()

    /// JSON lines on stderr at `LOG_LEVEL` (trace, debug, info, notice, warning, error, critical;
    /// default info).
    public static func logging(service: String, env: Env = Env()) throws(ConfigurationError) {
        let level: Logger.Level
        if let text = env.optional("LOG_LEVEL") {
            guard let parsed = Logger.Level(rawValue: text.lowercased()) else {
                throw ConfigurationError(
                    variable: "LOG_LEVEL",
                    problem: "must be one of trace, debug, info, notice, warning, error, critical, got \"\(text)\"")
            }
            level = parsed
        } else {
            level = .info
        }
        let first = state.withLock { s -> Bool in
            defer { s.logging = true }
            return !s.logging
        }
        guard first else { return }
        // `trace_id` of the traced request or entry being handled joins every line (see `Traces`).
        LoggingSystem.bootstrap(
            { label, provider in
                var handler = JSONLogHandler(label: label, service: service, logLevel: level)
                handler.metadataProvider = provider
                return handler
            }, metadataProvider: .traceID)
    }

    /// Bootstraps swift-metrics onto `registry` (once) and returns the registry.
    @discardableResult
    public static func metrics() -> PrometheusCollectorRegistry {
        let first = state.withLock { s -> Bool in
            defer { s.metrics = true }
            return !s.metrics
        }
        if first {
            MetricsSystem.bootstrap(
                metricsFactory(
                    registry: registry, durationBuckets: MetricHelp.durationBuckets,
                    valueBuckets: MetricHelp.valueBuckets))
        }
        return registry
    }

    /// The swift-metrics factory every service's metrics go through: onto `registry`, HELP text from
    /// `MetricHelp`, the services' default duration buckets, and a family's own buckets where given. `metrics()`
    /// bootstraps the process with one on `ServiceBootstrap.registry`; a component that serves its own registry
    /// (the gateway: one per instance, several in a test process) makes its own with its histograms' buckets.
    public static func metricsFactory(
        registry: PrometheusCollectorRegistry, durationBuckets: [String: [Duration]] = [:],
        valueBuckets: [String: [Double]] = [:]
    ) -> any MetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)
        ]
        factory.durationHistogramBuckets = durationBuckets
        factory.valueHistogramBuckets = valueBuckets
        return HelpTextMetricsFactory(inner: factory)
    }
}
