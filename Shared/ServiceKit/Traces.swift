import Logging
import OTel
import ServiceLifecycle
import Synchronization
import Tracing

/// OpenTelemetry traces for every service (DESIGN.md "Environment"), from the SDK's standard
/// variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns them on,
/// `OTEL_SERVICE_NAME` (default: the service's name), `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`,
/// `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` default, or `http/json`; OTLP/gRPC is not built in).
///
/// Unset endpoint: no tracer is bootstrapped and `Traces.enabled` is false, so the callers skip every
/// span (no span, context or header is made: one atomic load per request or entry).
///
/// Sampling: with `OTEL_TRACES_SAMPLER_ARG` set and no `OTEL_TRACES_SAMPLER`, the sampler is
/// `parentbased_traceidratio` (the SDK's default ignores the ratio): the ratio decides at each head
/// (a gateway request without a sampled parent, a tick at ingest) and everything downstream follows it.
public enum Traces {
    private static let on = Atomic<Bool>(false)

    /// True once `bootstrap` installed the OTLP tracer.
    @inline(__always)
    public static var enabled: Bool { on.load(ordering: .relaxed) }

    /// The tracer's background exporter as a `Service`, or nil when tracing is off (no endpoint, or
    /// `OTEL_SDK_DISABLED=true`). Once per process; the service must run in the `ServiceGroup`, where it
    /// flushes the spans still queued at graceful shutdown.
    public static func bootstrap(service: String, env: Env, logger: Logger) throws(ConfigurationError) -> (any Service)?
    {
        let endpoint = env.optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") ?? env.optional("OTEL_EXPORTER_OTLP_ENDPOINT")
        guard let endpoint, !endpoint.isEmpty else { return nil }
        if try env.bool("OTEL_SDK_DISABLED", default: false) { return nil }
        var environment = env.values
        if environment["OTEL_TRACES_SAMPLER"] == nil, environment["OTEL_TRACES_SAMPLER_ARG"] != nil {
            environment["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        }
        if let arg = environment["OTEL_TRACES_SAMPLER_ARG"], Double(arg).map({ (0...1).contains($0) }) != true {
            throw ConfigurationError(
                variable: "OTEL_TRACES_SAMPLER_ARG", problem: "must be a ratio in 0...1, got \"\(arg)\"")
        }
        var configuration = OTel.Configuration.default
        configuration.serviceName = service
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.enabled = true
        configuration.traces.exporter = .otlp
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        let exporter: any Service
        do {
            exporter = try OTel.bootstrap(configuration: configuration, environment: environment)
        } catch {
            throw ConfigurationError(
                variable: "OTEL_EXPORTER_OTLP_ENDPOINT", problem: "OpenTelemetry setup failed: \(error)")
        }
        on.store(true, ordering: .relaxed)
        logger.info("traces exported over OTLP/HTTP", metadata: ["endpoint": "\(endpoint)"])
        return exporter
    }

    /// A span whose parent is the W3C `traceparent` text `parent` (nil: a new trace), on the bootstrapped
    /// tracer. Call only when `enabled`.
    public static func startSpan(
        _ name: String, parent: String?, state: String? = nil, kind: SpanKind = .internal
    ) -> any Span {
        let tracer = InstrumentationSystem.tracer
        var context = ServiceContext.topLevel
        if let parent {
            tracer.extract(
                TraceHeaders(parent: parent, state: state), into: &context, using: TraceHeaders.HeaderExtractor())
        }
        return tracer.startSpan(name, context: context, ofKind: kind)
    }

    /// A child of `parent` (a span's context).
    public static func startSpan(_ name: String, in parent: ServiceContext, kind: SpanKind = .internal) -> any Span {
        InstrumentationSystem.tracer.startSpan(name, context: parent, ofKind: kind)
    }

    /// The `traceparent` (and `tracestate`) text of a span's context.
    public static func headers(of context: ServiceContext) -> TraceHeaders {
        var headers = TraceHeaders()
        InstrumentationSystem.tracer.inject(context, into: &headers, using: TraceHeaders.HeaderInjector())
        return headers
    }
}

/// The W3C trace-context headers of one hop: `traceparent` and `tracestate`.
public struct TraceHeaders: Sendable, Equatable {
    public var parent: String?
    public var state: String?

    public init(parent: String? = nil, state: String? = nil) {
        self.parent = parent
        self.state = state
    }

    /// The 32-hex trace id of a well-formed version-00 `traceparent`
    /// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero), else nil.
    public static func traceID(ofParent text: String) -> Substring? {
        let u = text.utf8
        guard u.count == 55 else { return nil }
        let hex = { (c: UInt8) in (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) }
        var i = 0
        var traceZero = true
        var spanZero = true
        for c in u {
            switch i {
            case 0, 1: guard c == 0x30 else { return nil }
            case 2, 35, 52: guard c == 0x2D else { return nil }
            default:
                guard hex(c) else { return nil }
                if (3..<35).contains(i), c != 0x30 { traceZero = false }
                if (36..<52).contains(i), c != 0x30 { spanZero = false }
            }
            i += 1
        }
        guard !traceZero, !spanZero else { return nil }
        let start = text.index(text.startIndex, offsetBy: 3)
        return text[start..<text.index(start, offsetBy: 32)]
    }

    /// The sampled flag of a `traceparent`.
    public static func isSampled(_ parent: String) -> Bool {
        guard let last = parent.utf8.last, let digit = Int(String(UnicodeScalar(last)), radix: 16) else { return false }
        return digit & 1 == 1
    }

    struct HeaderExtractor: Extractor {
        func extract(key: String, from carrier: TraceHeaders) -> String? {
            switch key.lowercased() {
            case "traceparent": carrier.parent
            case "tracestate": carrier.state
            default: nil
            }
        }
    }

    struct HeaderInjector: Injector {
        func inject(_ value: String, forKey key: String, into carrier: inout TraceHeaders) {
            switch key.lowercased() {
            case "traceparent": carrier.parent = value
            case "tracestate": carrier.state = value.isEmpty ? nil : value
            default: break
            }
        }
    }
}

extension ServiceContext {
    /// The W3C trace id (32 hex) of the request or entry being handled, for log lines and the audit
    /// record; set by whoever starts the work (also when only a `traceparent` came in and tracing is off).
    public var traceID: String? {
        get { self[TraceIDKey.self] }
        set { self[TraceIDKey.self] = newValue }
    }
}

private enum TraceIDKey: ServiceContextKey {
    typealias Value = String
    static var nameOverride: String? { "trace_id" }
}

extension Logger.MetadataProvider {
    /// `trace_id` on every line logged inside a traced request or entry (`ServiceContext.current`).
    public static let traceID = Logger.MetadataProvider {
        guard let id = ServiceContext.current?.traceID else { return [:] }
        return ["trace_id": .string(id)]
    }
}

extension Traces {
    /// Runs `body` in a child span of the current context (`ServiceContext.current`) when `traced`, else
    /// plainly with nil: the untraced path makes no span and no context.
    @inline(__always)
    public static func child<T>(
        _ name: String, traced: Bool, kind: SpanKind = .internal, _ body: ((any Span)?) async -> T
    ) async -> T {
        guard traced else { return await body(nil) }
        let span = startSpan(name, in: ServiceContext.current ?? .topLevel, kind: kind)
        defer { span.end() }
        return await ServiceContext.withValue(span.context) { await body(span) }
    }
}

/// Trace context across the stream stages (DESIGN.md "Messages"): a sampled entry carries its W3C
/// `traceparent` text in the field `tp`, written last; entries that are not sampled have no `tp`, and
/// readers that do not know the field ignore it. Ingest (the head) starts a trace per tick, sampled by
/// the tracer's sampler (`OTEL_TRACES_SAMPLER_ARG`); each later stage makes a span per carried entry,
/// a child of its `tp`, and writes that span's `traceparent` as the `tp` of what it emits.
public enum StreamTrace {
    /// The field name.
    public static let field = "tp"

    /// A new trace for an entry at the head of the pipeline: the span (end it when the entry is
    /// handled) and the `tp` to write, or nil when tracing is off or the sampler dropped it.
    public static func head(_ name: String) -> (span: any Span, tp: String)? {
        guard Traces.enabled else { return nil }
        let span = Traces.startSpan(name, parent: nil, kind: .producer)
        guard let tp = Traces.headers(of: span.context).parent, TraceHeaders.isSampled(tp) else {
            span.end()
            return nil
        }
        return (span, tp)
    }

    /// Continues an entry's trace in a stage: a span, child of `tp`, and the `tp` for the stage's
    /// output. Tracing off: no span, and `tp` passes on unchanged (the context still reaches the end).
    /// No `tp` (not sampled): nothing.
    public static func stage(_ name: String, parent tp: String?) -> (span: (any Span)?, tp: String?) {
        guard let tp, TraceHeaders.traceID(ofParent: tp) != nil else { return (nil, nil) }
        guard Traces.enabled else { return (nil, tp) }
        let span = Traces.startSpan(name, parent: tp, kind: .consumer)
        return (span, Traces.headers(of: span.context).parent ?? tp)
    }
}
