import Foundation
import GatewayEngine
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Prometheus
import ServiceKit
import ServiceLifecycle
import TEModels
import TERedis

/// Everything the HTTP layer needs, built once per process (or per test).
public struct GatewayDependencies: Sendable {
    public let config: GatewayConfiguration
    public let engine: DecisionEngine
    /// The gateway's metrics (`/metrics` serves their registry).
    public let metrics: GatewayMetrics
    /// Opportunities, debug reads, readiness and cold starts.
    public let redis: RedisClient
    public let onlineLoader: OnlineFeatureLoader
    public let services: [any Service]
    public let logger: Logger
    /// What `/readyz` requires: Redis answering.
    public let readiness: ReadinessChecks
    /// What `/readyz` only reports: the Triton endpoints (the fallback chain answers without them).
    public let tritonProbes: ReadinessChecks
    /// The push streams' clients (`/v1/opportunities/stream`, `/v1/decisions/stream`).
    public let push: PushStreams
    /// Who may call `/v1/*` and `/debug/*`, and each client's counters and rate limit.
    public let keys: APIKeyStore
    /// The fast path's decisions, each a child task of this service (the last of `services`: it stops right
    /// after the HTTP server, once no connection waits for an answer).
    public let decisions: BackgroundTasks
}

/// Builds the gateway's clients, state and background services from its configuration.
public func buildDependencies(
    _ config: GatewayConfiguration, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
    logger: Logger = Logger(label: "gateway")
) throws -> GatewayDependencies {
    let redisConfiguration = try RedisConfiguration(url: config.redisURL)
    let queryRedis = RedisClient(configuration: redisConfiguration, name: "gateway-query", logger: logger)
    // One feed (and connection: a blocked XREAD holds it) per shard of te:features; on a cluster the shards
    // live on different nodes, so one XREAD cannot follow them all.
    let featureStreams = StreamKey.allShards(config.featuresStream, shards: config.streamShards)
    let feedRedis = featureStreams.indices.map {
        RedisClient(configuration: redisConfiguration, name: "gateway-features-\($0)", logger: logger)
    }
    let auditRedis = RedisClient(configuration: redisConfiguration, name: "gateway-audit", logger: logger)
    let metrics = GatewayMetrics(registry: registry)
    let keepalive = (
        interval: config.tritonKeepaliveMs > 0 ? Duration.milliseconds(config.tritonKeepaliveMs) : nil,
        timeout: Duration.milliseconds(config.tritonKeepaliveTimeoutMs)
    )
    let primary = try TritonEndpoint(
        label: "primary", url: config.tritonURL, modelName: config.modelName, keepalive: keepalive)
    let secondary = try config.tritonSecondaryURL.map {
        try TritonEndpoint(label: "secondary", url: $0, modelName: config.modelName, keepalive: keepalive)
    }
    let memory = FeatureMemory()
    let audit = AuditBuffer(capacity: config.auditBufferMax, metrics: metrics)
    let identities = ModelIdentityStore(modelName: config.modelName)
    let loader = OnlineFeatureLoader(
        redis: queryRedis, memory: memory, keyPrefix: config.onlineKeyPrefix, logger: logger)
    let engine = DecisionEngine(
        config: config, metrics: metrics, primary: primary, secondary: secondary, features: memory, audit: audit,
        identities: identities, logger: logger,
        coldStart: { symbol, deadline in await loader.load(symbol, deadline: deadline) })
    var initialKeys = config.apiKeys
    if let path = config.apiKeysFile {
        do {
            initialKeys = try APIKeyFileWatcher.load(path: path, fixed: config.apiKeys)
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError(variable: "GATEWAY_API_KEYS_FILE", problem: "cannot be read: \(error)")
        }
    }
    let keys = APIKeyStore(
        table: initialKeys, authEnabled: config.authEnabled, metrics: metrics, rateLimit: config.rateLimit)
    var endpoints: [any InferenceEndpoint] = [primary]
    if let secondary { endpoints.append(secondary) }
    let push = PushStreams(config: config, metrics: metrics)
    // A blocked XREAD holds its connection: one client per push feed.
    let pushRedis = (0..<2).map {
        RedisClient(configuration: redisConfiguration, name: "gateway-push-\($0)", logger: logger)
    }
    // Stopped in reverse order: the clients' closer first in the list, so it stops last.
    var services: [any Service] = [
        RedisClientsCloser(clients: [queryRedis, auditRedis] + feedRedis + pushRedis),
        AuditStreamWriter(
            redis: auditRedis, buffer: audit, stream: config.auditStream, group: config.auditGroup,
            batchMax: config.auditBatchMax, maxLen: config.streamMaxLen, durability: config.auditDurability,
            syncWait: config.auditSyncWait, logger: logger),
        // After the audit writer, so they stop first: the comparisons' records reach the writer's drain, and the
        // batched calls outlive the comparisons that make them.
        engine.calls,
        engine.comparisons,
        loader.tasks,
        RolloutEventWriter(
            store: RolloutStore(
                redis: auditRedis, model: config.modelName, stream: config.rolloutStream, group: config.auditGroup),
            engine: engine, logger: logger),
        RolloutFollower(
            store: RolloutStore(redis: queryRedis, model: config.modelName, stream: config.rolloutStream, group: nil),
            engine: engine, interval: .milliseconds(config.rolloutPollMs), logger: logger),
        IdentityRefresher(
            endpoints: endpoints, versions: [config.modelVersion, config.canaryVersion], store: identities,
            interval: .milliseconds(Int64(config.identityRefreshSeconds * 1000)), logger: logger),
        PushFeed(
            redis: pushRedis[0], stream: config.opportunitiesStream, broadcaster: push.opportunities,
            heartbeatInterval: .milliseconds(config.pushHeartbeatMs), logger: logger, encode: PushEncoding.opportunity),
        PushFeed(
            redis: pushRedis[1], stream: config.auditStream, broadcaster: push.decisions,
            heartbeatInterval: .milliseconds(config.pushHeartbeatMs), logger: logger, encode: PushEncoding.decision)
    ]
    services.insert(
        contentsOf: zip(feedRedis, featureStreams).map { redis, stream in
            FeatureFeed(redis: redis, memory: memory, stream: stream, logger: logger) as any Service
        }, at: 1)
    if let path = config.apiKeysFile {
        services.append(APIKeyFileWatcher(path: path, fixed: config.apiKeys, store: keys, logger: logger))
    }
    let readiness = ReadinessChecks()
    readiness.add("redis") { try await queryRedis.ping() }
    let tritonProbes = ReadinessChecks()
    let decisions = BackgroundTasks()
    // The probes' tasks; the decisions last, so they stop first (before what a decision uses).
    services += [readiness, tritonProbes, decisions]
    tritonProbes.add("triton_primary") {
        guard await primary.isReady(version: config.modelVersion) else { throw TritonNotReady() }
    }
    if let secondary {
        tritonProbes.add("triton_secondary") {
            guard await secondary.isReady(version: config.modelVersion) else { throw TritonNotReady() }
        }
    }
    return GatewayDependencies(
        config: config, engine: engine, metrics: metrics, redis: queryRedis, onlineLoader: loader, services: services,
        logger: logger,
        readiness: readiness, tritonProbes: tritonProbes, push: push, keys: keys, decisions: decisions)
}

struct TritonNotReady: Error, CustomStringConvertible {
    var description: String { "model not ready (or server unreachable)" }
}

/// The gateway application: router plus background services (feature feed, audit writer, identity refresher).
public func buildApplication(_ config: GatewayConfiguration, logger: Logger = Logger(label: "gateway"))
    throws -> some ApplicationProtocol
{
    let dependencies = try buildDependencies(config, logger: logger)
    return buildApplication(dependencies)
}

public func buildApplication(_ dependencies: GatewayDependencies) -> some ApplicationProtocol {
    let config = dependencies.config
    let api = GatewayAPI(dependencies)
    let fastPath = config.scoreFastPath
    let routes = PushRoute.all(dependencies)
    return Application(
        router: buildRouter(dependencies),
        server: HTTPServerBuilder { responder in
            GatewayChannel(
                responder: responder, api: api, routes: routes,
                additionalChannelHandlers: { GatewayChannel.httpHandlers(api: api, fastPath: fastPath) })
        },
        configuration: .init(address: .hostname(config.httpHost, port: config.httpPort), serverName: "te-gateway"),
        services: dependencies.services,
        logger: dependencies.logger)
}

public func buildRouter(_ d: GatewayDependencies) -> Router<GatewayRequestContext> {
    let router = Router(context: GatewayRequestContext.self)
    let api = GatewayAPI(d)
    router.add(middleware: RouteErrorMiddleware(methods: GatewayAPI.routeMethods))
    if d.config.authEnabled || d.config.rateLimit != nil { router.add(middleware: AdmissionMiddleware(api: api)) }
    router.post("/v1/score") { request, context in try await api.score(request, context) }
    router.get("/v1/opportunities") { request, _ in try await api.opportunities(request) }
    for (path, route) in PushRoute.all(d) {
        router.get(RouterPath(path)) { request, context in try await api.pushStream(request, context, route: route) }
    }
    router.get("/debug/features") { request, _ in try await api.debugFeatures(request) }
    router.get("/debug/triton") { request, _ in try await api.debugTriton(request) }
    router.get("/healthz") { _, _ in GatewayAPI.json(.ok, "{\"status\":\"ok\"}") }
    router.get("/readyz") { _, _ in await api.readyz() }
    router.get("/metrics") { _, _ in api.metrics() }
    router.get("/openapi.yaml") { _, _ in
        Response(
            status: .ok, headers: [.contentType: "application/yaml"],
            body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.yaml)))
    }
    return router
}

/// An unknown path is 404, a known path with a method it does not serve 405 with `Allow`, both with the
/// error JSON (Hummingbird's router answers both with an empty 404).
struct RouteErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Each path's methods.
    let methods: [String: [HTTPRequest.Method]]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var path = request.uri.path
        if path.count > 1, path.hasSuffix("/") { path.removeLast() }  // the router matches "/healthz/" as "/healthz"
        if let allowed = methods[path], !allowed.contains(request.method) {
            let list = allowed.map(\.rawValue).joined(separator: ", ")
            var response = GatewayAPI.clientError(
                RequestError(
                    .methodNotAllowed, "\(request.method.rawValue) is not allowed on \(path); allowed: \(list)"))
            response.headers[.allow] = list
            return response
        }
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            return GatewayAPI.clientError(RequestError(.notFound, "no such path: \(path)"))
        }
    }
}

/// `/v1/*` and `/debug/*` need `Authorization: Bearer <key>` when keys are configured (401 otherwise),
/// and each client is held to `GATEWAY_RATE_LIMIT` (429). The fast path applies the same `admit`.
struct AdmissionMiddleware<Context: RequestContext>: RouterMiddleware {
    let api: GatewayAPI

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let path = request.uri.path
        guard GatewayAPI.isProtected(path) else { return try await next(request, context) }
        switch api.admit(authorization: request.headers[.authorization]) {
        case .admitted: return try await next(request, context)
        case .refused(let status, let body, let retryAfter):
            return GatewayAPI.refusal(status, body, retryAfter: retryAfter)
        }
    }
}

struct GatewayAPI: Sendable {
    let d: GatewayDependencies
    var keys: APIKeyStore { d.keys }
    init(_ d: GatewayDependencies) { self.d = d }

    static let unauthorizedBody = RequestError.json(
        code: "unauthorized", message: "missing or invalid bearer token", field: nil)

    /// Paths that need a key and count against the client's rate limit.
    static func isProtected(_ path: String) -> Bool { path.hasPrefix("/v1/") || path.hasPrefix("/debug/") }

    enum Admission {
        case admitted(APIClient)
        /// The status, error JSON and `Retry-After` seconds to answer with.
        case refused(HTTPResponse.Status, String, retryAfter: Int?)
    }

    /// Who is calling (401 when the key is missing or unknown), and whether its rate limit lets it in (429).
    func admit(authorization: String?) -> Admission {
        switch keys.verdict(authorization: authorization) {
        case .refused: return .refused(.unauthorized, Self.unauthorizedBody, retryAfter: nil)
        case .client(let client):
            guard let limiter = client.limiter else { return .admitted(client) }
            switch limiter.take() {
            case .allowed: return .admitted(client)
            case .limited(let seconds):
                client.counters.rateLimited.increment()
                d.logger.debug("rate limited", metadata: ["client": "\(client.name)", "retry_after_s": "\(seconds)"])
                let body = Self.rateLimitedBody(client: client, retryAfter: seconds, limit: d.config.rateLimit ?? 0)
                return .refused(.tooManyRequests, body, retryAfter: seconds)
            }
        }
    }

    /// A 401 (with `WWW-Authenticate`) or 429 (with `Retry-After`) answer.
    static func refusal(_ status: HTTPResponse.Status, _ body: String, retryAfter: Int?) -> Response {
        let reply = ScoreReply(status: status, json: body, retryAfter: retryAfter)
        var response = json(status, body)
        reply.addHeaders(to: &response.headers)
        return response
    }

    static func rateLimitedBody(client: APIClient, retryAfter: Int, limit: Double) -> String {
        RequestError.json(
            code: "rate_limited",
            message: "client \(client.name) is over its limit of \(limit) requests/s; retry after \(retryAfter) s",
            field: nil)
    }
    static let bodyTooLarge = RequestError(.bodyTooLarge, "body exceeds \(ScoreRequestParser.maxBodyBytes) bytes")

    static func json(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func error(_ status: HTTPResponse.Status, code: String, message: String, field: String?) -> Response {
        json(status, RequestError.json(code: code, message: message, field: field))
    }

    static func clientError(_ e: RequestError) -> Response { json(e.status, e.json) }

    /// Every route's path and methods (`buildRouter` registers them; a test checks them against deploy/openapi.yaml).
    static let routeMethods: [String: [HTTPRequest.Method]] = [
        "/v1/score": [.post], "/v1/opportunities": [.get], "/v1/opportunities/stream": [.get],
        "/v1/decisions/stream": [.get],
        "/debug/features": [.get], "/debug/triton": [.get],
        "/healthz": [.get], "/readyz": [.get], "/metrics": [.get], "/openapi.yaml": [.get]
    ]

    // MARK: POST /v1/score

    /// Hummingbird's route, for a score request the fast path left to it (pipelined behind another route's
    /// request, or `SCORE_FAST_PATH=0`): the same `validate` and `decide` as the fast path.
    func score(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let arrival = ContinuousClock.now
        var body: ByteBuffer?  // nil: over the limit, declared or found while reading
        let declared = request.headers[.contentLength].flatMap { Int($0) } ?? 0
        if declared <= ScoreRequestParser.maxBodyBytes {
            do {
                body = try await request.body.collect(upTo: ScoreRequestParser.maxBodyBytes)
            } catch let error as HTTPError where error.status == .contentTooLarge {
                body = nil
            }
        }
        // Admitted by `AdmissionMiddleware` (auth and rate limit); looked up again for the client's name.
        let reply: ScoreReply
        switch keys.verdict(authorization: request.headers[.authorization]) {
        case .refused: reply = ScoreReply(status: .unauthorized, json: Self.unauthorizedBody)
        case .client(let client):
            switch validate(headers: request.headers, body: body, client: client) {
            case .reply(let r): reply = r
            case .decide(let admitted): reply = await decide(admitted, arrival: arrival)
            }
        }
        var response = Self.json(reply.status, reply.json)
        reply.addHeaders(to: &response.headers)
        return response
    }

    static let traceparentHeader = HTTPField.Name("traceparent")!
    static let tracestateHeader = HTTPField.Name("tracestate")!

    /// The request's W3C trace context when tracing is on or it carries a `traceparent`; nil otherwise
    /// (the untraced path: no context is made).
    static func traceHeaders(_ headers: HTTPFields) -> TraceHeaders? {
        let parent = headers[traceparentHeader]
        guard parent != nil || Traces.enabled else { return nil }
        return TraceHeaders(parent: parent, state: headers[tracestateHeader])
    }

    /// A score request of an admitted client, ready to decide.
    struct AdmittedScore: Sendable {
        var request: ScoreRequest
        var requestID: String?
        var client: APIClient
        var trace: TraceHeaders?
    }

    /// A client's score request: the 4xx for its headers or body (`body` nil: over the size limit), or the
    /// request to decide.
    func validate(headers: HTTPFields, body: ByteBuffer?, client: APIClient) -> ScoreAdmission<AdmittedScore> {
        guard Self.isJSON(contentType: headers[.contentType]) else { return .reply(Self.notJSON.reply) }
        guard let body else { return .reply(Self.bodyTooLarge.reply) }
        switch body.withUnsafeReadableBytes({ ScoreRequestParser.parseResult($0) }) {
        case .failure(let error): return .reply(error.reply)
        case .success(let request):
            return .decide(
                AdmittedScore(
                    request: request, requestID: Self.requestID(headers[Self.requestIDHeader]), client: client,
                    trace: Self.traceHeaders(headers)))
        }
    }

    static let requestIDHeader = HTTPField.Name("X-Request-Id")!

    static let notJSON = RequestError(
        .unsupportedMediaType, "Content-Type must be application/json", field: "Content-Type")

    /// `application/json`, any case, parameters (`; charset=utf-8`) allowed. A missing type is not JSON:
    /// the body is only read as what the client declares.
    static func isJSON(contentType: String?) -> Bool {
        guard let contentType else { return false }
        let mediaType = contentType.utf8.prefix { $0 != UInt8(ascii: ";") }
        let expected = "application/json".utf8
        var trimmed = mediaType.drop { $0 == 0x20 || $0 == 0x09 }
        while let last = trimmed.last, last == 0x20 || last == 0x09 { trimmed = trimmed.dropLast() }
        return trimmed.count == expected.count
            && zip(trimmed, expected).allSatisfy { b, e in (b >= 0x41 && b <= 0x5A ? b | 0x20 : b) == e }
    }

    /// The client's `X-Request-Id` when it is an allowed id (1–128 of `[A-Za-z0-9_-]`), else nil (the
    /// decision's request_id is then its decision_id).
    static func requestID(_ header: String?) -> String? {
        if let header, (1...128).contains(header.utf8.count),
            header.utf8.allSatisfy({ b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D
                    || b == 0x5F
            })
        {
            return header
        }
        return nil
    }

    // MARK: GET /v1/opportunities

    func opportunities(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let symbol = query["symbol"].map(String.init)
        if let symbol, !Symbol.isValid(symbol) {
            return Self.clientError(RequestError(.invalidSymbol, "not a valid symbol", field: "symbol"))
        }
        var limit = 20
        if let raw = query["limit"] {
            guard let value = Int(raw), (1...1000).contains(value) else {
                return Self.clientError(
                    RequestError(.invalidQuery, "limit must be an integer in 1...1000", field: "limit"))
            }
            limit = value
        }
        // Newest first; an opportunity appears once per emit (first/upgrade/close): keep its latest entry.
        let scan = min(10_000, symbol == nil ? limit * 4 : limit * 50)
        let entries: [StreamEntry]
        do {
            entries = try await d.redis.xrevrange(d.config.opportunitiesStream, count: scan)
        } catch {
            return Self.error(.serviceUnavailable, code: "redis_unavailable", message: "\(error)", field: nil)
        }
        var seen: Set<String> = []
        var out: [Opportunity] = []
        for entry in entries {
            guard let o = try? StreamFieldDecoder.decode(Opportunity.self, from: entry.fields) else { continue }
            if let symbol, o.symbol != symbol { continue }
            guard seen.insert(o.id).inserted else { continue }
            out.append(o)
            if out.count >= limit { break }
        }
        let items = String(decoding: try PushEncoding.encoder.encode(out), as: UTF8.self)
        return Self.json(.ok, "{\"opportunities\":\(items)}")
    }

    // MARK: GET /debug/features

    func debugFeatures(_ request: Request) async throws -> Response {
        guard let symbol = request.uri.queryParameters["symbol"].map(String.init) else {
            return Self.clientError(RequestError(.missingField, "query parameter symbol is required", field: "symbol"))
        }
        guard Symbol.isValid(symbol) else {
            return Self.clientError(RequestError(.invalidSymbol, "not a valid symbol", field: "symbol"))
        }
        var stored = d.engine.latestFeatures(symbol)
        var origin = "memory"
        if stored == nil {
            stored = await d.onlineLoader.fetch(symbol)
            origin = "te:online"
        }
        guard let stored else {
            return Self.error(.notFound, code: "no_features", message: "no features for \(symbol)", field: "symbol")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let snapshot = String(decoding: try encoder.encode(stored.snapshot), as: UTF8.self)
        let age = stored.ageMs(nowNs: wallClockNs())
        return Self.json(
            .ok,
            "{\"symbol\":\"\(symbol)\",\"origin\":\"\(origin)\",\"written_at_ns\":\(stored.writtenAtNs),\"feature_age_ms\":\(age),\"snapshot\":\(snapshot)}"
        )
    }

    // MARK: GET /debug/triton

    func debugTriton(_ request: Request) async throws -> Response {
        var n = 8
        if let raw = request.uri.queryParameters["n"] {
            guard let value = Int(raw), (1...1000).contains(value) else {
                return Self.clientError(RequestError(.invalidQuery, "n must be an integer in 1...1000", field: "n"))
            }
            n = value
        }
        let endpoint = d.engine.primaryEndpoint
        let version = d.config.modelVersion
        let row = [Float](repeating: 0, count: FeatureVector.count)
        var latencies: [Int64] = []
        var errors: [String] = []
        var lastScore: Float?
        for _ in 0..<n {
            let t0 = ContinuousClock.now
            do throws(InferenceFailure) {
                let scores = try await endpoint.infer(
                    version: version, rows: row, rowCount: 1, deadline: .now + .seconds(2))
                lastScore = scores.first
                let elapsed = ContinuousClock.now - t0
                latencies.append(
                    elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000)
            } catch {
                errors.append("\(error)")
            }
        }
        let sorted = latencies.sorted()
        func pct(_ p: Double) -> String {
            guard !sorted.isEmpty else { return "null" }
            return String(sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))])
        }
        let identity = d.engine.identity(version: version)
        let errorList = errors.prefix(5).map { "\"\(JSONText.escape($0))\"" }.joined(separator: ",")
        let body =
            "{\"endpoint\":\"\(JSONText.escape(d.config.tritonURL))\",\"n\":\(n),\"ok\":\(latencies.count),"
            + "\"latencies_us\":[\(latencies.map(String.init).joined(separator: ","))],"
            + "\"p50_us\":\(pct(0.5)),\"max_us\":\(sorted.last.map(String.init) ?? "null"),"
            + "\"score\":\(JSONText.number(lastScore.map(Double.init))),"
            + "\"model\":\(ScoreResponseJSON.model(identity)),\"errors\":[\(errorList)]}"
        return Self.json(errors.isEmpty ? .ok : .serviceUnavailable, body)
    }

    // MARK: health

    /// 200 while the gateway can answer and audit what it answers: Redis answering and the audit buffer
    /// not full (nor failing to write). Triton is reported, never required: the fallback chain answers
    /// without it. Answers within ~80 ms whatever the dependencies do (`ReadinessChecks`).
    func readyz() async -> Response {
        async let redisFailures = d.readiness.failures()
        async let tritonFailures = d.tritonProbes.failures()
        let (redisDown, tritonDown) = await (redisFailures, tritonFailures)
        let health = d.engine.health
        let audit = health.audit
        // A failed last write counts only while records wait: once Redis answers again an idle (unready,
        // so trafficless) replica has nothing to write that would clear the flag.
        let auditOK = !(audit.degraded && audit.depth > 0) && !audit.isFull
        let redisError = redisDown.first?.reason
        let ready = redisError == nil && auditOK
        func triton(_ name: String) -> String {
            guard d.tritonProbes.names.contains(name) else { return "null" }
            return tritonDown.contains { $0.name == name } ? "false" : "true"
        }
        func breaker(_ state: CircuitBreaker.State?) -> String {
            guard let state else { return "null" }
            switch state {
            case .closed: return "\"closed\""
            case .open: return "\"open\""
            case .halfOpen: return "\"half_open\""
            }
        }
        var body = "{\"ready\":\(ready),\"redis\":\(redisError == nil)"
        if let redisError { body += ",\"redis_error\":\(JSONText.quoted(redisError))" }
        body += ",\"triton_primary\":\(triton("triton_primary")),\"triton_secondary\":\(triton("triton_secondary"))"
        body +=
            ",\"breakers\":{\"primary\":\(breaker(health.primaryBreaker)),\"secondary\":\(breaker(health.secondaryBreaker))}"
        body += ",\"audit\":{\"ok\":\(auditOK),\"durability\":\"\(d.config.auditDurability.rawValue)\""
        body += ",\"buffer_depth\":\(audit.depth),\"capacity\":\(audit.capacity),\"dropped\":\(audit.dropped)"
        body += ",\"withdrawn\":\(audit.withdrawn)}"
        body += ",\"canary\":\(health.canaryRollback.map { JSONText.quoted("rolled_back: \($0)") } ?? "\"active\"")}"
        return Self.json(ready ? .ok : .serviceUnavailable, body)
    }

    func metrics() -> Response {
        d.metrics.process.update()
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: d.metrics.registry.emitToBuffer())))
    }
}

/// Hand-written response JSON: the hot path, and a fixed shape.
enum ScoreResponseJSON {
    /// The status and body of a score answer: 200 with the decision, or 503 `audit_unavailable` when
    /// sync durability could not get its record into Redis in time.
    static func answer(_ answer: ScoreAnswer) -> (HTTPResponse.Status, String) {
        switch answer {
        case .answered(let r): return (.ok, encode(r))
        case .auditUnavailable: return (.serviceUnavailable, auditUnavailableBody)
        }
    }

    static let auditUnavailableBody = RequestError.json(
        code: "audit_unavailable", message: "the decision could not be audited (Redis unavailable); retry", field: nil)

    static func encode(_ r: ScoreResponse) -> String {
        // decision_id is a gateway-made UUID: hex and dashes, nothing to escape.
        var s =
            "{\"decision_id\":\"\(r.decisionId)\",\"request_id\":\"\(JSONText.escape(r.requestId))\",\"symbol\":\"\(JSONText.escape(r.symbol))\""
        s += ",\"decision\":\"\(r.decision.rawValue)\",\"score\":\(JSONText.number(r.score))"
        s += ",\"source\":\"\(r.source.rawValue)\",\"model\":\(r.model.map(model) ?? "null")"
        s += ",\"feature_age_ms\":\(JSONText.number(r.featureAgeMs)),\"latency_us\":\(r.latencyUs)"
        s += ",\"reason\":\(r.reason.map { "\"\(JSONText.escape($0))\"" } ?? "null")}"
        return s
    }

    static func model(_ m: ModelIdentity) -> String {
        "{\"name\":\"\(JSONText.escape(m.name))\",\"version\":\"\(JSONText.escape(m.version))\",\"hash\":\"\(JSONText.escape(m.hash))\"}"
    }
}

extension GatewayAPI: ScoreResponder {
    /// The fast path's admission: the key and rate limit (`AdmissionMiddleware` on the router), then `validate`.
    func admit(_ head: HTTPRequest, body: ByteBuffer?) -> ScoreAdmission<AdmittedScore> {
        switch admit(authorization: head.headerFields[.authorization]) {
        case .refused(let status, let json, let retryAfter):
            return .reply(ScoreReply(status: status, json: json, retryAfter: retryAfter))
        case .admitted(let client):
            return validate(headers: head.headerFields, body: body, client: client)
        }
    }

    /// Decides and encodes. Trace context only when a trace is on or came in: otherwise the untraced call.
    func decide(_ a: AdmittedScore, arrival: ContinuousClock.Instant) async -> ScoreReply {
        guard let incoming = a.trace else {
            let (status, json) = ScoreResponseJSON.answer(
                await d.engine.score(a.request, requestID: a.requestID, arrival: arrival, client: a.client.score))
            return ScoreReply(status: status, json: json)
        }
        let (answer, traceparent) = await d.engine.score(
            a.request, requestID: a.requestID, arrival: arrival, client: a.client.score, trace: incoming)
        let (status, json) = ScoreResponseJSON.answer(answer)
        return ScoreReply(status: status, json: json, traceparent: traceparent)
    }
}
