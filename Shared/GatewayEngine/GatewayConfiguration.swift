import Foundation
import ServiceKit
import TEModels

/// Everything the gateway reads from its environment. Every field documents its variable and default;
/// `init(environment:)` fails with one line naming the variable when a value is missing or malformed.
public struct GatewayConfiguration: Sendable {
    /// `HTTP_HOST`. Default: 0.0.0.0.
    public var httpHost: String = "0.0.0.0"
    /// `HTTP_PORT`: API, `/metrics`, `/healthz`, `/readyz`. Default: 8080.
    public var httpPort: Int = 8080
    /// `REDIS_URL` (required).
    public var redisURL: String
    /// `TRITON_URL` (required): host:port of the primary Triton gRPC endpoint.
    public var tritonURL: String
    /// `TRITON_SECONDARY_URL`: the replica tried once when the primary fails or is late. Default: none.
    public var tritonSecondaryURL: String?
    /// `MODEL_NAME`. Default: trade_eligibility.
    public var modelName: String = "trade_eligibility"
    /// `MODEL_VERSION`. Default: 1.
    public var modelVersion: String = "1"
    /// `CANARY_VERSION`. Default: 2.
    public var canaryVersion: String = "2"
    /// `CANARY_ENABLED`: answer `canaryFraction` of requests with the canary. Default: false.
    public var canaryEnabled: Bool = false
    /// `CANARY_FRACTION` in [0, 1]. Default: 0.
    public var canaryFraction: Double = 0
    /// `SHADOW_ENABLED`: score the canary beside the primary without changing the answer. Default: false.
    public var shadowEnabled: Bool = false
    /// `SCORE_TIMEOUT_MS`: the hard budget of one decision, from the request's arrival. Default: 20.
    public var scoreTimeoutMs: Double = 20
    /// `SCORE_TIMEOUT_JITTER`: fraction by which the per-attempt cut-offs (not the hard deadline) are
    /// randomly shortened, so replicas that time out together do not retry in lock-step. Default: 0.1.
    public var timeoutJitter: Double = 0.1
    /// `HEDGE_AFTER_MS`: when the primary has not answered after this long, a hedged request goes to the
    /// secondary. Default: 40 % of `SCORE_TIMEOUT_MS`.
    public var hedgeAfterMs: Double?
    /// `FEATURE_MAX_AGE_MS`: features older than this are stale (requests may ask for less with
    /// `freshness_ms`). Default: 2000.
    public var featureMaxAgeMs: Double = 2000
    /// `CACHE_TTL_MS`: a symbol's last model score answers when the model cannot, if younger. Default: 1000.
    public var cacheTTLMs: Double = 1000
    /// `DECISION_THRESHOLD`: score ≥ threshold → `trade`. Default: 0.5.
    public var decisionThreshold: Double = 0.5
    /// `BREAKER_FAILURES`: consecutive failures that open an endpoint's breaker. Default: 5.
    public var breakerFailures: Int = 5
    /// `BREAKER_OPEN_MS`: how long an open breaker skips its endpoint before one probe. Default: 1000.
    public var breakerOpenMs: Double = 1000
    /// `CANARY_MAX_ERROR_RATE`. Default: 0.05.
    public var canaryMaxErrorRate: Double = 0.05
    /// `CANARY_MAX_P99_MS`. Default: 25.
    public var canaryMaxP99Ms: Double = 25
    /// `CANARY_MAX_DISAGREE_RATE`: share of decisions that differ from the primary's. Default: 0.2.
    public var canaryMaxDisagreeRate: Double = 0.2
    /// `CANARY_WINDOW`: number of most recent canary observations judged. Default: 200.
    public var canaryWindow: Int = 200
    /// `CANARY_MIN_SAMPLES`: observations needed before the canary is judged. Default: 20.
    public var canaryMinSamples: Int = 20
    /// `ROLLOUT_POLL_MS`: how often the shared rollout state (`RolloutState`: rolled back, promoted,
    /// restored — by any replica, the outcome-tracker or `te model rollout`) is re-read; every replica
    /// serves a transition within this long. Default: 1000.
    public var rolloutPollMs: Int = 1000
    /// `GATEWAY_API_KEYS`: comma-separated `client:key` (a bare key is client `default`) bearer keys for
    /// `/v1/*` and `/debug/*`. Default: none (with no file either, the API is open).
    public var apiKeys = APIKeyTable()
    /// `GATEWAY_API_KEYS_FILE`: more keys, one `client:key` a line, re-read on change and on SIGHUP.
    /// Default: none.
    public var apiKeysFile: String?
    /// `GATEWAY_RATE_LIMIT`: requests a second per client, with a burst of the same size; over it → 429
    /// `rate_limited`. Default: none (no limit, nothing checked).
    public var rateLimit: Double?
    /// `AUDIT_BUFFER_MAX`: audit records held while Redis is unreachable. Default: 100000.
    public var auditBufferMax: Int = 100_000
    /// `AUDIT_BATCH_MAX`: records per pipelined write. Default: 512.
    public var auditBatchMax: Int = 512
    /// `STREAM_MAXLEN`: cap of `te:audit`, trimmed (about once a second) only past what every consumer
    /// group has acknowledged (`StreamTrim`). Default: none.
    public var streamMaxLen: Int?
    /// `AUDIT_DURABILITY`: `sync` (a decision is answered only once its record's XADD is acknowledged;
    /// else 503 `audit_unavailable`) or `async` (answered first, the record follows). Default: sync.
    public var auditDurability: AuditDurability = .sync
    /// `AUDIT_SYNC_WAIT_MS`: in sync mode, how long a decided request waits for its record to reach
    /// Redis before answering 503 `audit_unavailable`. Long enough to ride out a scheduling or fsync
    /// hiccup (a retry would cost a whole new decision), short enough to free connections quickly
    /// while Redis is down. Default: 100.
    public var auditSyncWaitMs: Double = 100
    /// `GATEWAY_PUSH_MAX_CLIENTS`: push clients (SSE and WebSocket together) per stream at a time; one more is answered 503
    /// `too_many_streams`. Default: 256.
    public var pushMaxClients: Int = 256
    /// `GATEWAY_PUSH_QUEUE`: events queued per push client; a client that falls this far behind is dropped
    /// (`slow_consumer`) so that it never holds up the others. Default: 4096.
    public var pushQueueLimit: Int = 4096
    /// `GATEWAY_PUSH_HEARTBEAT_MS`: how often an idle push client gets a keep-alive (an SSE comment, a
    /// WebSocket ping), so proxies keep the connection and a dead one is noticed. Default: 15000.
    public var pushHeartbeatMs: Int = 15_000
    /// The consumer group the gateway creates on `te:audit` (from its first entry) if it is missing,
    /// so nothing is trimmed before audit-writer has read it. Default: `audit-writer`.
    public var auditGroup: String = "audit-writer"
    /// `MODEL_IDENTITY_REFRESH_SEC`: how often name/version/hash are re-read from Triton. Default: 10.
    public var identityRefreshSeconds: Double = 10
    /// `BATCH_MAX_ROWS`: rows coalesced into one inference call. Default: 64.
    public var batchMaxRows: Int = 64
    /// `BATCH_MAX_IN_FLIGHT`: inference calls in flight per endpoint and version before requests queue
    /// into the next batch. Default: 1 — with the Python backend each call costs ~0.5 ms of Triton CPU,
    /// so fewer, bigger batches win on 2 cores (measured at load ≈ 2.4: 32 connections 7.4k req/s with
    /// 11 rows per call vs 6.6k with 2 in flight and 7 rows; 64 connections 8.1k vs 5.9k). An idle
    /// batcher still sends at once.
    public var batchMaxInFlight: Int = 1
    /// `SCORE_FAST_PATH`: serve `POST /v1/score` on the event loop ahead of the router
    /// (`ScoreFastPathHandler`); `false` sends it through Hummingbird's router like every other route.
    /// Default: true.
    public var scoreFastPath = true
    /// `TRITON_KEEPALIVE_MS`: HTTP/2 PING on a Triton connection with calls in flight after this long
    /// without a read (0: off). Default: 10000.
    public var tritonKeepaliveMs: Int = 10_000
    /// `TRITON_KEEPALIVE_TIMEOUT_MS`: a Triton connection whose PING is not answered within this is dropped
    /// and the next call reconnects. Default: 2000.
    public var tritonKeepaliveTimeoutMs: Int = 2_000

    /// `STREAM_SHARDS` (DESIGN.md "Shards"): the feature feed follows every shard of `featuresStream`.
    public var streamShards = 1
    /// Stream and key names (DESIGN.md); settable so tests use keys of their own.
    public var featuresStream = StreamKey.features
    public var auditStream = StreamKey.audit
    public var rolloutStream = StreamKey.rollout
    public var opportunitiesStream = StreamKey.opportunities
    public var onlineKeyPrefix = "te:online:"

    public init(redisURL: String, tritonURL: String) {
        self.redisURL = redisURL
        self.tritonURL = tritonURL
    }

    /// Whether `/v1/*` and `/debug/*` need a key: keys given, or a keys file (even one empty for now).
    public var authEnabled: Bool { !apiKeys.isEmpty || apiKeysFile != nil }

    public var auditSyncWait: Duration { .microseconds(Int64(auditSyncWaitMs * 1000)) }
    public var hedgeAfter: Double { hedgeAfterMs ?? scoreTimeoutMs * 0.4 }

    public init(environment env: [String: String] = Env().values) throws(ConfigurationError) {
        let reader = Env(env)
        self.init(redisURL: try reader.string("REDIS_URL"), tritonURL: try reader.string("TRITON_URL"))
        httpHost = try reader.string("HTTP_HOST", default: httpHost)
        httpPort = try reader.int("HTTP_PORT", default: httpPort, range: 0...65535)
        tritonSecondaryURL = reader.optional("TRITON_SECONDARY_URL")
        modelName = try reader.string("MODEL_NAME", default: modelName)
        modelVersion = try reader.string("MODEL_VERSION", default: modelVersion)
        canaryVersion = try reader.string("CANARY_VERSION", default: canaryVersion)
        canaryEnabled = try reader.bool("CANARY_ENABLED", default: canaryEnabled)
        canaryFraction = try reader.double("CANARY_FRACTION", default: canaryFraction, range: 0...1)
        shadowEnabled = try reader.bool("SHADOW_ENABLED", default: shadowEnabled)
        scoreTimeoutMs = try reader.double("SCORE_TIMEOUT_MS", default: scoreTimeoutMs, range: 0.1...60_000)
        timeoutJitter = try reader.double("SCORE_TIMEOUT_JITTER", default: timeoutJitter, range: 0...0.5)
        hedgeAfterMs = try reader.ifSet("HEDGE_AFTER_MS") { (name) throws(ConfigurationError) in
            try reader.double(name, range: 0...60_000)
        }
        featureMaxAgeMs = try reader.double("FEATURE_MAX_AGE_MS", default: featureMaxAgeMs, range: 0...86_400_000)
        cacheTTLMs = try reader.double("CACHE_TTL_MS", default: cacheTTLMs, range: 0...86_400_000)
        decisionThreshold = try reader.double("DECISION_THRESHOLD", default: decisionThreshold, range: 0...1)
        breakerFailures = try reader.int("BREAKER_FAILURES", default: breakerFailures, range: 1...1_000_000)
        breakerOpenMs = try reader.double("BREAKER_OPEN_MS", default: breakerOpenMs, range: 1...3_600_000)
        canaryMaxErrorRate = try reader.double("CANARY_MAX_ERROR_RATE", default: canaryMaxErrorRate, range: 0...1)
        canaryMaxP99Ms = try reader.double("CANARY_MAX_P99_MS", default: canaryMaxP99Ms, range: 0...60_000)
        canaryMaxDisagreeRate = try reader.double(
            "CANARY_MAX_DISAGREE_RATE", default: canaryMaxDisagreeRate, range: 0...1)
        canaryWindow = try reader.int("CANARY_WINDOW", default: canaryWindow, range: 1...1_000_000)
        canaryMinSamples = try reader.int("CANARY_MIN_SAMPLES", default: canaryMinSamples, range: 1...1_000_000)
        rolloutPollMs = try reader.int("ROLLOUT_POLL_MS", default: rolloutPollMs, range: 10...600_000)
        if let keys = reader.optional("GATEWAY_API_KEYS") {
            apiKeys = try APIKeyTable.parse(keys, separator: ",", source: "GATEWAY_API_KEYS")
        }
        apiKeysFile = reader.optional("GATEWAY_API_KEYS_FILE")
        rateLimit = try reader.ifSet("GATEWAY_RATE_LIMIT") { (name) throws(ConfigurationError) in
            try reader.double(name, range: 0.001...10_000_000)
        }
        auditBufferMax = try reader.int("AUDIT_BUFFER_MAX", default: auditBufferMax, range: 1...100_000_000)
        auditBatchMax = try reader.int("AUDIT_BATCH_MAX", default: auditBatchMax, range: 1...100_000)
        streamMaxLen = try reader.ifSet("STREAM_MAXLEN") { (name) throws(ConfigurationError) in
            try reader.int(name, range: 1...Int.max)
        }
        streamShards = try reader.streamShards()
        if let text = reader.optional("AUDIT_DURABILITY") {
            guard let value = AuditDurability(rawValue: text.lowercased()) else {
                throw ConfigurationError(
                    variable: "AUDIT_DURABILITY", problem: "must be sync or async, got \"\(text)\"")
            }
            auditDurability = value
        }
        auditSyncWaitMs = try reader.double("AUDIT_SYNC_WAIT_MS", default: auditSyncWaitMs, range: 0.1...60_000)
        auditStream = try reader.string("AUDIT_STREAM", default: auditStream)
        rolloutStream = try reader.string("ROLLOUT_STREAM", default: rolloutStream)
        identityRefreshSeconds = try reader.double(
            "MODEL_IDENTITY_REFRESH_SEC", default: identityRefreshSeconds, range: 0.1...86_400)
        batchMaxRows = try reader.int("BATCH_MAX_ROWS", default: batchMaxRows, range: 1...4096)
        batchMaxInFlight = try reader.int("BATCH_MAX_IN_FLIGHT", default: batchMaxInFlight, range: 1...64)
        scoreFastPath = try reader.bool("SCORE_FAST_PATH", default: scoreFastPath)
        tritonKeepaliveMs = try reader.int("TRITON_KEEPALIVE_MS", default: tritonKeepaliveMs, range: 0...3_600_000)
        tritonKeepaliveTimeoutMs = try reader.int(
            "TRITON_KEEPALIVE_TIMEOUT_MS", default: tritonKeepaliveTimeoutMs, range: 1...600_000)
        pushMaxClients = try reader.int("GATEWAY_PUSH_MAX_CLIENTS", default: pushMaxClients, range: 0...100_000)
        pushQueueLimit = try reader.int("GATEWAY_PUSH_QUEUE", default: pushQueueLimit, range: 1...1_000_000)
        pushHeartbeatMs = try reader.int("GATEWAY_PUSH_HEARTBEAT_MS", default: pushHeartbeatMs, range: 10...3_600_000)
    }
}

/// When a decision is answered relative to its audit record reaching Redis.
public enum AuditDurability: String, Sendable {
    /// Answered only once the record's XADD is acknowledged.
    case sync
    /// Answered first; the record follows from the buffer.
    case async
}
