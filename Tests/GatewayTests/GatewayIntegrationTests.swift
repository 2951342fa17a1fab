import Foundation
import GatewayHTTP
import Hummingbird
import HummingbirdTesting
import NIOCore
import TEModels
import TERedis
import TestSupport
import Testing
import TritonClient

@testable import GatewayEngine

/// Against real Redis and real Triton (`make dev-up`), plus private servers for stop/restart tests.
@Suite(.serialized, .timeLimit(.minutes(5))) struct GatewayIntegrationTests {
    let features = GatewayTestEnv.sampleFeatures

    func redis() throws -> RedisClient {
        RedisClient(configuration: try TestEnv.redisConfiguration(), name: "gateway-test")
    }

    func auditRecords(_ stream: String, expect count: Int? = nil) async throws -> [AuditRecord] {
        let redis = try redis()
        defer { redis.close() }
        if let count {
            _ = try await TestEnv.eventually(timeout: .seconds(10)) { try await redis.xlen(stream) >= count }
        }
        return try await redis.xrange(stream).map { try StreamFieldDecoder.decode(AuditRecord.self, from: $0.fields) }
    }

    /// The RolloutEvents of `stream`, once there is at least one.
    func rolloutEvents(_ stream: String) async throws -> [RolloutEvent] {
        let redis = try redis()
        defer { redis.close() }
        _ = try await TestEnv.eventually(timeout: .seconds(10)) { try await redis.xlen(stream) >= 1 }
        return try await redis.xrange(stream).map { try StreamFieldDecoder.decode(RolloutEvent.self, from: $0.fields) }
    }

    // MARK: each source of the chain

    @Test func modelAnswersWithIdentityAndIsAudited() async throws {
        let config = try GatewayTestEnv.config("model")
        let (response, record) = try await GatewayTestEnv.withGateway(config) { deps, client in
            let (r, _) = try await client.score(
                ScoreRequest(symbol: "BTCUSDT", features: features), requestID: "req-model-1")
            let records = try await auditRecords(config.auditStream, expect: 1)
            return (r, records.first)
        }
        #expect(response.source == .model)
        #expect(response.requestId == "req-model-1")
        #expect(response.model?.name == "trade_eligibility")
        #expect(response.model?.version == "1")
        #expect(response.model?.hash.count == 64)
        #expect(response.score.map { $0 > 0 && $0 < 1 } == true)
        #expect(response.decision == (response.score! >= 0.5 ? .trade : .noTrade))
        #expect(response.reason == nil)
        #expect(record?.requestId == "req-model-1")
        #expect(record?.decisionId == response.decisionId)
        #expect(response.decisionId.count == 36)
        #expect(record?.featureSnapshotId == nil)  // features came in the request
        #expect(record?.source == .model)
        #expect(record?.modelHash == response.model?.hash)
        #expect(record?.features == (try FeatureVector(features)))
        #expect(record?.score == response.score)
    }

    @Test func secondaryAnswersWhenPrimaryIsDown() async throws {
        let config = try GatewayTestEnv.config("secondary", triton: try closedPortURL()) {
            $0.tritonSecondaryURL = try? GatewayTestEnv.tritonURL()
        }
        let (response, _) = try await GatewayTestEnv.withGateway(config, waitForIdentity: true) { _, client in
            try await client.score(ScoreRequest(symbol: "ETHUSDT", features: features))
        }
        #expect(response.source == .model)
        #expect(response.reason?.contains("primary_unavailable") == true)
        #expect(response.model?.hash.count == 64)
    }

    @Test func hungPrimaryIsHedgedToSecondaryWithinTheDeadline() async throws {
        let silent = try SilentTCPListener()
        let config = try GatewayTestEnv.config("hedge", triton: silent.url) {
            $0.tritonSecondaryURL = try? GatewayTestEnv.tritonURL()
            $0.scoreTimeoutMs = 250
            $0.hedgeAfterMs = 30
        }
        let results = try await GatewayTestEnv.withGateway(config) { _, client in
            var out: [(ScoreResponse, Duration)] = []
            for _ in 0..<3 { out.append(try await client.score(ScoreRequest(symbol: "ETHUSDT", features: features))) }
            return out
        }
        for (response, _) in results {
            #expect(response.source == .model)
            #expect(
                response.reason?.contains("primary_slow") == true
                    || response.reason?.contains("primary_timeout") == true)
        }
        withExtendedLifetime(silent) {}
    }

    @Test func deadlineHoldsWhenEveryEndpointHangs() async throws {
        let a = try SilentTCPListener()
        let b = try SilentTCPListener()
        let config = try GatewayTestEnv.config("deadline", triton: a.url) {
            $0.tritonSecondaryURL = b.url
            $0.scoreTimeoutMs = 50
        }
        let results = try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            var out: [(ScoreResponse, Duration)] = []
            for _ in 0..<5 { out.append(try await client.score(ScoreRequest(symbol: "SOLUSDT", features: features))) }
            return out
        }
        for (response, _) in results {
            // No model, no cache: the rules answer on the request's (fresh) features.
            // Both listeners accept and never answer, so an answer at all is the deadline firing; the reason
            // says so. (No wall-clock bound: timings are for the benchmarks, not for tests on a shared machine.)
            #expect(response.source == .rules)
            #expect(response.reason?.contains("primary_timeout") == true, "reason: \(response.reason ?? "nil")")
        }
        withExtendedLifetime((a, b)) {}
    }

    @Test func rulesAnswerWithoutModelOrCache() async throws {
        let config = try GatewayTestEnv.config("rules", triton: try closedPortURL())
        let (response, _) = try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            try await client.score(ScoreRequest(symbol: "XBT/USD", features: features))
        }
        #expect(response.source == .rules)
        #expect(response.score == RulesBaseline.score(try FeatureVector(features)))
        #expect(response.model == nil)
        #expect(response.reason == "primary_unavailable,cache_miss")
    }

    @Test func abstainsOnMissingAndStaleFeatures() async throws {
        let config = try GatewayTestEnv.config("abstain", triton: try closedPortURL())
        let redis = try redis()
        defer { redis.close() }
        // te:online hash written 10 s ago (the pipeline's written_at_ns).
        let snapshot = FeatureSnapshot(
            symbol: "ADAUSDT", tsNs: 1_000, windowMs: 5000, nQuotes: 10, nTrades: 2, tradeVolume: 1, lastPrice: 0.5,
            warm: true, features: try FeatureVector(features))
        var fields = try StreamFieldEncoder.encode(snapshot)
        let tenSecondsAgo = Int64(Date().timeIntervalSince1970 * 1e9) - 10_000_000_000
        fields.append(("written_at_ns", String(tenSecondsAgo)))
        _ = try await redis.hset(config.onlineKeyPrefix + "ADAUSDT", fields: fields)

        let (missing, stale, staleButAllowed) = try await GatewayTestEnv.withGateway(config, waitForIdentity: false) {
            _, client in
            let missing = try await client.score(ScoreRequest(symbol: "NOPEUSDT"))
            let stale = try await client.score(ScoreRequest(symbol: "ADAUSDT", freshnessMs: 1000))
            let allowed = try await client.score(ScoreRequest(symbol: "ADAUSDT", freshnessMs: 60_000))
            return (missing.0, stale.0, allowed.0)
        }
        #expect(missing.source == .abstain)
        #expect(missing.decision == .abstain)
        #expect(missing.score == nil)
        #expect(missing.reason == "features_missing,cache_miss")
        #expect(stale.source == .abstain)
        #expect(stale.reason == "features_stale,cache_miss")
        #expect(stale.featureAgeMs.map { $0 >= 10_000 && $0 < 20_000 } == true)
        // Fresh enough for this request: the model is down, so the rules answer on them.
        #expect(staleButAllowed.source == .rules)
    }

    @Test func featuresFromTheStreamAreUsedAndAged() async throws {
        let config = try GatewayTestEnv.config("feed")
        let redis = try redis()
        defer { redis.close() }
        let (response, entryID) = try await GatewayTestEnv.withGateway(config) { deps, client in
            let snapshot = FeatureSnapshot(
                symbol: "DOTUSDT", tsNs: 5, windowMs: 5000, nQuotes: 3, nTrades: 0, tradeVolume: 0, lastPrice: 7,
                warm: true, features: try FeatureVector(features))
            // The feed reads from the tail: wait until its first XREAD is blocked, then write.
            try await Task.sleep(for: .milliseconds(300))
            let id = try await redis.xadd(config.featuresStream, fields: try StreamFieldEncoder.encode(snapshot))
            _ = await TestEnv.eventually { deps.engine.features.get("DOTUSDT") != nil }
            return (try await client.score(ScoreRequest(symbol: "DOTUSDT", freshnessMs: 5000)).0, id)
        }
        #expect(response.source == .model)
        #expect(response.featureAgeMs.map { $0 >= 0 && $0 < 5000 } == true)
        // The audit names the te:features entry the features came from, and its ts_ns.
        let record = try await auditRecords(config.auditStream, expect: 1).first
        #expect(record?.featureSnapshotId == entryID)
        #expect(record?.featureTsNs == 5)
    }

    @Test func withShardsTheFeedFollowsEveryShardOfTheFeatures() async throws {
        let config = try GatewayTestEnv.config("feed-shards") { $0.streamShards = 4 }
        let redis = try redis()
        defer { redis.close() }
        // Two symbols in two different shards of 4.
        let symbols = ["DOTUSDT", "ADAUSDT", "SOLUSDT", "XRPUSDT"]
        let a = symbols[0]
        let b = try #require(symbols.first { StreamKey.shard(of: $0, shards: 4) != StreamKey.shard(of: a, shards: 4) })
        let seen = try await GatewayTestEnv.withGateway(config) { deps, _ in
            try await Task.sleep(for: .milliseconds(300))
            for symbol in [a, b] {
                let snapshot = FeatureSnapshot(
                    symbol: symbol, tsNs: 5, windowMs: 5000, nQuotes: 3, nTrades: 0, tradeVolume: 0, lastPrice: 7,
                    warm: true, features: try FeatureVector(features))
                _ = try await redis.xadd(
                    StreamKey.sharded(config.featuresStream, shard: StreamKey.shard(of: symbol, shards: 4), of: 4),
                    fields: try StreamFieldEncoder.encode(snapshot))
            }
            return await TestEnv.eventually { deps.engine.features.get(a) != nil && deps.engine.features.get(b) != nil }
        }
        #expect(seen)
        _ = try? await redis.del(StreamKey.allShards(config.featuresStream, shards: 4))
    }

    // MARK: cache and breaker (private Triton, stopped and restarted)

    @Test func cacheThenBreakerOpensSkipsHalfOpensCloses() async throws {
        let triton = try await PrivateTriton()
        let config = try GatewayTestEnv.config("breaker", triton: triton.url) {
            $0.breakerFailures = 3
            $0.breakerOpenMs = 400
            $0.cacheTTLMs = 60_000
        }
        try await GatewayTestEnv.withGateway(config) { deps, client in
            let first = try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features)).0
            #expect(first.source == .model)
            await triton.stop()
            // Three failures: answered from the cache, then the breaker is open.
            for _ in 0..<3 {
                let (r, _) = try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features))
                #expect(r.source == .cache)
                #expect(r.score == first.score)
                #expect(r.model == first.model)
                #expect(r.reason?.hasPrefix("primary_") == true)
            }
            #expect(deps.engine.primary.breakerState.isOpen)
            let skipped = try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features)).0
            #expect(skipped.reason?.contains("primary_breaker_open") == true)
            // Uncached symbol while open: rules.
            let other = try await client.score(ScoreRequest(symbol: "ETHUSDT", features: features)).0
            #expect(other.source == .rules)
            let metrics = try await client.execute(uri: "/metrics", method: .get)
            #expect(String(buffer: metrics.body).contains("te_gateway_breaker_state{endpoint=\"primary\"} 2.0"))

            // After the open time a probe goes out; Triton still down → open again.
            try await Task.sleep(for: .milliseconds(450))
            let probe = try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features)).0
            #expect(probe.reason?.contains("primary_breaker_open") == false)
            #expect(deps.engine.primary.breakerState.isOpen)

            // Triton back: the next probe succeeds and closes the breaker.
            try await triton.start()
            try await Task.sleep(for: .milliseconds(450))
            var recovered: ScoreResponse?
            _ = try await TestEnv.eventually(timeout: .seconds(20), every: .milliseconds(450)) {
                let r = try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features)).0
                recovered = r
                return r.source == .model
            }
            #expect(recovered?.source == .model)
            #expect(deps.engine.primary.breakerState == .closed(consecutiveFailures: 0))
        }
        await triton.stop()
    }

    // MARK: shadow and canary

    @Test func shadowDoesNotChangeAnswers() async throws {
        let plain = try GatewayTestEnv.config("noshadow")
        let shadow = try GatewayTestEnv.config("shadow") { $0.shadowEnabled = true }
        let inputs: [[Double]] = (0..<10).map { i in features.map { $0 * (1 + Double(i) / 10) } }
        let without = try await GatewayTestEnv.withGateway(plain) { _, client in
            var out: [ScoreResponse] = []
            for f in inputs { out.append(try await client.score(ScoreRequest(symbol: "BTCUSDT", features: f)).0) }
            return out
        }
        let (with, records) = try await GatewayTestEnv.withGateway(shadow) { _, client in
            var out: [ScoreResponse] = []
            for f in inputs { out.append(try await client.score(ScoreRequest(symbol: "BTCUSDT", features: f)).0) }
            return (out, try await auditRecords(shadow.auditStream, expect: inputs.count))
        }
        #expect(with.map(\.score) == without.map(\.score))
        #expect(with.map(\.decision) == without.map(\.decision))
        #expect(with.allSatisfy { $0.source == .model && $0.model?.version == "1" })
        #expect(records.count == inputs.count)
        #expect(records.allSatisfy { $0.canary?.mode == "shadow" && $0.canary?.version == "2" })
        #expect(records.filter { $0.canary?.score != nil }.count >= inputs.count - 1)
    }

    @Test func canaryFractionIsRespectedStickyPerRequestID() async throws {
        let config = try GatewayTestEnv.config("canary") {
            $0.canaryEnabled = true
            $0.canaryFraction = 0.3
            $0.canaryMaxDisagreeRate = 1
            $0.canaryMaxP99Ms = 10_000
        }
        let ids = (0..<120).map { "canary-\($0)" }
        let expected = Set(ids.filter { CanaryController.unitHash($0) < 0.3 })
        let answers = try await GatewayTestEnv.withGateway(config) { deps, client in
            _ = await TestEnv.eventually { deps.engine.identities.known(version: "2") }
            var out: [String: ScoreResponse] = [:]
            for id in ids {
                out[id] = try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features), requestID: id).0
            }
            return out
        }
        let canaryAnswered = Set(answers.filter { $0.value.model?.version == "2" }.keys)
        #expect(canaryAnswered == expected)
        #expect(expected.count > 20 && expected.count < 52)
        #expect(answers.values.allSatisfy { $0.source == .model })
    }

    @Test func failingCanaryIsRolledBack() async throws {
        // Version 9 is not in the model repository: every canary call fails on the real server.
        let config = try GatewayTestEnv.config("rollback-error") {
            $0.canaryEnabled = true
            $0.canaryFraction = 1
            $0.canaryVersion = "9"
            $0.canaryMinSamples = 5
            $0.canaryWindow = 20
        }
        let (responses, rollback, metrics) = try await GatewayTestEnv.withGateway(config) { deps, client in
            var out: [ScoreResponse] = []
            for _ in 0..<8 { out.append(try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features)).0) }
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            return (out, deps.engine.canary.rollback, metrics)
        }
        // Every answer still came from the model: the canary's fallback leg is the primary version.
        #expect(responses.allSatisfy { $0.source == .model && $0.model?.version == "1" })
        #expect(rollback == .errorRate(1.0))
        #expect(metrics.contains("canary_rollbacks_total 1"))
        // One RolloutEvent on te:rollout; te:audit holds the 8 decisions and nothing else.
        let events = try await rolloutEvents(config.rolloutStream)
        #expect(events.count == 1)
        #expect(events.first?.kind == .rollback)
        #expect(events.first?.fromVersion == "9" && events.first?.toVersion == "1")
        #expect(events.first?.metric == "error_rate" && events.first?.value == 1.0)
        #expect(events.first?.limit == config.canaryMaxErrorRate)
        #expect(events.first?.replica.isEmpty == false)
        let records = try await auditRecords(config.auditStream, expect: 8)
        #expect(records.count == 8)
        #expect(!records.contains { $0.canary?.mode == "rollback" || $0.symbol == "*" })
    }

    @Test func disagreeingShadowCanaryIsRolledBack() async throws {
        // Find where versions 1 and 2 disagree on the real server, and put the threshold between them.
        let client = try TritonClient(url: try GatewayTestEnv.tritonURL())
        defer { client.close() }
        let row = features.map(Float.init)
        let v1 = try await client.infer(
            model: "trade_eligibility", version: "1", rows: row, rowCount: 1, deadline: .now + .seconds(5))[0]
        let v2 = try await client.infer(
            model: "trade_eligibility", version: "2", rows: row, rowCount: 1, deadline: .now + .seconds(5))[0]
        try #require(abs(v1 - v2) > 0.01)
        let config = try GatewayTestEnv.config("rollback-disagree") {
            $0.shadowEnabled = true
            $0.decisionThreshold = Double((v1 + v2) / 2)
            $0.canaryMaxDisagreeRate = 0.5
            $0.canaryMaxP99Ms = 10_000
            $0.canaryMinSamples = 5
            $0.canaryWindow = 10
        }
        let (rollback, decisions) = try await GatewayTestEnv.withGateway(config) { deps, client in
            var decisions: [Decision] = []
            for _ in 0..<8 {
                decisions.append(try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features)).0.decision)
            }
            _ = await TestEnv.eventually { deps.engine.canary.rollback != nil }
            return (deps.engine.canary.rollback, decisions)
        }
        #expect(rollback == .disagreeRate(1.0))
        #expect(Set(decisions).count == 1)
        let events = try await rolloutEvents(config.rolloutStream)
        #expect(events.map(\.metric) == ["disagree_rate"])
        #expect(events.first?.value == 1.0 && events.first?.limit == 0.5)
        #expect(try await auditRecords(config.auditStream, expect: 8).allSatisfy { $0.symbol == "BTCUSDT" })
    }

    // MARK: validation and auth over HTTP

    /// Both ways `POST /v1/score` is served: the event-loop fast path and Hummingbird's router.
    @Test(arguments: [true, false]) func everyValidationErrorIs400WithCodeAndField(fastPath: Bool) async throws {
        let config = try GatewayTestEnv.config("validation") { $0.scoreFastPath = fastPath }
        let cases: [(String, String, String?)] = [
            ("{", "malformed_json", nil),
            ("", "malformed_json", nil),
            (#"{"symbol":7}"#, "invalid_type", "symbol"),
            (#"{"symbol":"BTC","features":[1,2,3]}"#, "invalid_features", "features"),
            (#"{"symbol":"BTC","features":[1,2,3,4,5,6,7,1e400]}"#, "non_finite_number", "features[7]"),
            (#"{"symbol":"BTC","features":[1,2,3,"x",5,6,7,8]}"#, "invalid_type", "features[3]"),
            // Finite doubles the model's FP32 input cannot hold.
            (#"{"symbol":"BTC","features":[1,2,3,3.4e39,5,6,7,8]}"#, "invalid_value", "features[3]"),
            (#"{"symbol":"BTC","features":[-1e300,2,3,4,5,6,7,8]}"#, "invalid_value", "features[0]"),
            (#"{"symbol":"btc usd"}"#, "invalid_symbol", "symbol"),
            (#"{"symbol":"BTC","colour":"red"}"#, "unknown_field", "colour"),
            (#"{"features":[1,2,3,4,5,6,7,8]}"#, "missing_field", "symbol"),
            (#"{"symbol":"BTC","freshness_ms":-3}"#, "invalid_value", "freshness_ms"),
            (#"{"symbol":"BTC","pad":""# + String(repeating: "a", count: 70_000) + #""}"#, "body_too_large", nil)
        ]
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            for (body, code, field) in cases {
                let r = try await client.execute(
                    uri: "/v1/score", method: .post, headers: [.contentType: "application/json"],
                    body: ByteBuffer(string: body))
                #expect(r.status == .badRequest, "\(body.prefix(60))")
                let json = try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any]
                let error = json?["error"] as? [String: Any]
                #expect(error?["code"] as? String == code, "\(body.prefix(60))")
                #expect(error?["field"] as? String == field, "\(body.prefix(60))")
                #expect((error?["message"] as? String)?.isEmpty == false)
            }
            let q = try await client.execute(uri: "/v1/opportunities?limit=abc", method: .get)
            #expect(q.status == .badRequest)
            let t = try await client.execute(uri: "/debug/triton?n=0", method: .get)
            #expect(t.status == .badRequest)
        }
    }

    @Test(arguments: [true, false]) func authOnAndOff(fastPath: Bool) async throws {
        let open = try GatewayTestEnv.config("auth-off") { $0.scoreFastPath = fastPath }
        try await GatewayTestEnv.withGateway(open, waitForIdentity: false) { _, client in
            let r = try await client.execute(uri: "/v1/opportunities", method: .get)
            #expect(r.status == .ok)
        }
        let locked = try GatewayTestEnv.config("auth-on") {
            $0.apiKeys = try! APIKeyTable.parse("desk-a:k1-secret,k2-secret", separator: ",", source: "test")
            $0.scoreFastPath = fastPath
        }
        try await GatewayTestEnv.withGateway(locked, waitForIdentity: false) { _, client in
            for uri in ["/v1/opportunities", "/debug/features?symbol=BTCUSDT", "/debug/triton?n=1"] {
                #expect(try await client.execute(uri: uri, method: .get).status == .unauthorized)
                #expect(
                    try await client.execute(uri: uri, method: .get, headers: [.authorization: "Bearer wrong"]).status
                        == .unauthorized)
            }
            let denied = try await client.execute(
                uri: "/v1/score", method: .post, headers: [.authorization: "Basic k1-secret"],
                body: ByteBuffer(string: #"{"symbol":"BTC"}"#))
            #expect(denied.status == .unauthorized)
            #expect(denied.headers[.wwwAuthenticate] == "Bearer")
            #expect(String(buffer: denied.body).contains("\"code\":\"unauthorized\""))
            let missing = try await client.execute(
                uri: "/v1/score", method: .post, body: ByteBuffer(string: #"{"symbol":"BTC"}"#))
            #expect(missing.status == .unauthorized)
            let allowed = try await client.score(
                ScoreRequest(symbol: "BTCUSDT", features: features), authorization: "Bearer k2-secret")
            #expect(allowed.0.source == .model || allowed.0.source == .rules)
            for uri in ["/healthz", "/metrics", "/openapi.yaml"] {
                #expect(try await client.execute(uri: uri, method: .get).status == .ok)
            }
        }
    }

    // MARK: audit across a Redis restart

    @Test func everyDecisionIsAuditedAcrossARedisRestart() async throws {
        let server = try await PrivateRedisServer()
        let port = server.port
        let config = try GatewayTestEnv.config("audit-restart") {
            $0.redisURL = server.url
            $0.auditDurability = .async  // answered first: the records wait in the buffer while Redis is down
        }
        let before = 20
        let during = 30
        let ids = try await GatewayTestEnv.withGateway(config) { deps, client in
            var ids: [String] = []
            for i in 0..<before {
                ids.append(
                    try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features), requestID: "a-\(i)").0
                        .requestId)
            }
            let check = RedisClient(configuration: try RedisConfiguration(url: config.redisURL), name: "check")
            defer { check.close() }
            #expect(await TestEnv.eventually { (try? await check.xlen(config.auditStream)) == before })
            try await server.kill()
            // Redis down: decisions still answered, audit records wait in the buffer.
            for i in 0..<during {
                ids.append(
                    try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features), requestID: "b-\(i)").0
                        .requestId)
            }
            #expect(deps.engine.audit.depth > 0)
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .serviceUnavailable)
            // Redis back (empty: no persistence) on the same port: the buffered records arrive.
            let restarted = try await PrivateRedisServer(port: port)
            #expect(
                await TestEnv.eventually(timeout: .seconds(20)) {
                    (try? await check.xlen(config.auditStream)) == during
                })
            let records = try await check.xrange(config.auditStream).map {
                try StreamFieldDecoder.decode(AuditRecord.self, from: $0.fields)
            }
            #expect(Set(records.map(\.requestId)) == Set(ids.suffix(during)))
            #expect(deps.engine.audit.dropped == 0)
            try await restarted.kill()
            return ids
        }
        #expect(ids.count == before + during)
    }

    // MARK: other endpoints

    @Test func opportunitiesDebugHealthAndOpenAPI() async throws {
        let config = try GatewayTestEnv.config("endpoints")
        let redis = try redis()
        defer { redis.close() }
        for (i, symbol) in ["BTCUSDT", "ETHUSDT", "BTCUSDT"].enumerated() {
            let o = Opportunity(
                id: "\(symbol)-\(i)", symbol: symbol, direction: .buy, confidence: 0.7, strategies: ["s"],
                signalIds: ["x"],
                firstTsNs: Int64(i), lastTsNs: Int64(i), count: 1, emitReason: "first")
            _ = try await redis.xadd(config.opportunitiesStream, fields: try StreamFieldEncoder.encode(o))
        }
        try await GatewayTestEnv.withGateway(config) { deps, client in
            let r = try await client.execute(uri: "/v1/opportunities?symbol=BTCUSDT&limit=5", method: .get)
            #expect(r.status == .ok)
            let json = try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any]
            let items = json?["opportunities"] as? [[String: Any]]
            #expect(items?.map { $0["id"] as? String } == ["BTCUSDT-2", "BTCUSDT-0"])
            let one = try await client.execute(uri: "/v1/opportunities?limit=1", method: .get)
            #expect(String(buffer: one.body).contains("BTCUSDT-2"))

            deps.engine.features.put(
                StoredFeatures(
                    snapshot: FeatureSnapshot(
                        symbol: "LTCUSDT", tsNs: 1, windowMs: 5000, nQuotes: 1, nTrades: 0, tradeVolume: 0,
                        lastPrice: 80,
                        warm: false, features: try FeatureVector(features)),
                    writtenAtNs: Int64(Date().timeIntervalSince1970 * 1e9)))
            let f = try await client.execute(uri: "/debug/features?symbol=LTCUSDT", method: .get)
            #expect(f.status == .ok)
            #expect(String(buffer: f.body).contains("\"origin\":\"memory\""))
            #expect(try await client.execute(uri: "/debug/features?symbol=ZZZ9", method: .get).status == .notFound)

            let t = try await client.execute(uri: "/debug/triton?n=3", method: .get)
            #expect(t.status == .ok)
            let tj = try JSONSerialization.jsonObject(with: Data(buffer: t.body)) as? [String: Any]
            #expect((tj?["latencies_us"] as? [Any])?.count == 3)
            #expect(((tj?["model"] as? [String: Any])?["hash"] as? String)?.count == 64)

            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .ok)
            let spec = try await client.execute(uri: "/openapi.yaml", method: .get)
            let file = try String(
                contentsOf: GatewayTestEnv.repoRoot.appendingPathComponent("deploy/openapi.yaml"), encoding: .utf8)
            // The served document is the file (scripts/gen-openapi-swift.sh embeds it).
            #expect(String(buffer: spec.body) == String(file.dropLast(file.hasSuffix("\n") ? 1 : 0)))
        }
    }
}

extension CircuitBreaker.State {
    var isOpen: Bool {
        if case .open = self { return true }
        return false
    }
}
