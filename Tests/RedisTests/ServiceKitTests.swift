import Foundation
import Logging
import Metrics
import ServiceKit
import ServiceLifecycle
import Synchronization
import TERedis
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@Suite("Env: typed configuration with one-line errors")
struct EnvTests {
    let env = Env([
        "PORT": "9101", "BAD_INT": "12x", "RATIO": "0.25", "FLAG": "Yes", "OFF": "0", "EMPTY": " ",
        "TIMEOUT_MS": "250", "REDIS_URL": "redis://h:1/2", "BAD_URL": "redis://h:port"
    ])

    @Test func readsTypedValuesAndDefaults() throws {
        #expect(try env.int("PORT") == 9101)
        #expect(try env.int("MISSING", default: 7) == 7)
        #expect(try env.double("RATIO") == 0.25)
        #expect(try env.bool("FLAG") == true)
        #expect(try env.bool("OFF") == false)
        #expect(try env.string("EMPTY", default: "d") == "d")
        #expect(try env.milliseconds("TIMEOUT_MS") == .milliseconds(250))
        let redis = try env.redis()
        #expect(redis.host == "h" && redis.port == 1 && redis.database == 2)
    }

    @Test func missingOrMalformedNamesTheVariableOnOneLine() {
        func message(_ body: () throws -> Void) -> String {
            do {
                try body()
                return ""
            } catch {
                return (error as? ConfigurationError)?.description ?? "not a ConfigurationError: \(error)"
            }
        }
        #expect(
            message { _ = try Env([:]).redis() } == "configuration error: REDIS_URL is required (redis://host:port/db)")
        #expect(
            message { _ = try env.int("BAD_INT") } == "configuration error: BAD_INT must be an integer, got \"12x\"")
        #expect(
            message { _ = try env.int("PORT", range: 1...1000) }
                == "configuration error: PORT must be in 1...1000, got 9101")
        #expect(message { _ = try env.bool("PORT") } == "configuration error: PORT must be true or false, got \"9101\"")
        #expect(message { _ = try env.double("MISSING") } == "configuration error: MISSING is required (a number)")
        let url = message { _ = try env.redis("BAD_URL") }
        #expect(url.hasPrefix("configuration error: BAD_URL is malformed: port 'port' is not a number"))
        #expect(!url.contains("\n"))
    }

    @Test func workerConfigurationFromEnvironment() throws {
        let c = try StreamWorkerConfiguration.fromEnvironment(
            Env(["CONSUMER_NAME": "fp-0", "CLAIM_MIN_IDLE_MS": "200", "MAX_DELIVERIES": "3", "STREAM_BATCH_SIZE": "50"])
        )
        #expect(c.consumerName == "fp-0")
        #expect(c.claimMinIdle == .milliseconds(200))
        #expect(c.maxDeliveries == 3)
        #expect(c.batchSize == 50)
        #expect(c.block == .seconds(1))
        let defaults = try StreamWorkerConfiguration.fromEnvironment(Env([:]))
        #expect(defaults.claimMinIdle == .seconds(30) && defaults.maxDeliveries == 5)
        #expect(defaults.consumerName == StreamWorkerConfiguration.hostName())
        #expect(throws: ConfigurationError(variable: "MAX_DELIVERIES", problem: "must be in 1...1000, got 0")) {
            try StreamWorkerConfiguration.fromEnvironment(Env(["MAX_DELIVERIES": "0"]))
        }
        // The retry policy needs a cap at least its first delay: a startup error, not a crash.
        #expect(
            throws: ConfigurationError(variable: "RETRY_BACKOFF_MAX_MS", problem: "must be at least RETRY_BACKOFF_MS")
        ) {
            try StreamWorkerConfiguration.fromEnvironment(
                Env(["RETRY_BACKOFF_MS": "500", "RETRY_BACKOFF_MAX_MS": "100"]))
        }
        let retry = try StreamWorkerConfiguration.fromEnvironment(
            Env(["RETRY_BACKOFF_MS": "20", "RETRY_BACKOFF_MAX_MS": "80"])
        ).retry
        #expect((1...4).map { retry.ceiling(attempt: $0) } == [20, 40, 80, 80].map { .milliseconds($0) })
    }

    @Test func anOptionalSettingIsReadOnlyWhenSet() throws {
        let env = Env(["HEDGE_AFTER_MS": "12", "EMPTY": " "])
        #expect(
            try env.ifSet("HEDGE_AFTER_MS") { (name) throws(ConfigurationError) in try env.int(name, range: 0...100) }
                == 12)
        #expect(try env.ifSet("EMPTY") { (name) throws(ConfigurationError) in try env.int(name) } == nil)
        #expect(throws: ConfigurationError(variable: "HEDGE_AFTER_MS", problem: "must be in 0...10, got 12")) {
            try env.ifSet("HEDGE_AFTER_MS") { (name) throws(ConfigurationError) in try env.int(name, range: 0...10) }
        }
    }
}

@Suite("JSON log lines")
struct JSONLogTests {
    @Test func rendersOneJSONObjectWithEscapes() throws {
        let line = JSONLogHandler.render(
            level: .warning, message: "bad \"tick\"\nnext", service: "ingest", label: "ingest.kafka",
            metadata: ["symbol": "BTCUSDT", "n": .stringConvertible(3), "levels": .array(["a", "b"])],
            now: Date(timeIntervalSince1970: 1_723_161_254.087))
        #expect(!line.contains("\n"))
        #expect(
            line.hasPrefix(
                "{\"ts\":\"2024-08-08T23:54:14.087Z\",\"level\":\"warning\",\"service\":\"ingest\",\"msg\":\"bad \\\"tick\\\"\\nnext\""
            ))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["msg"] as? String == "bad \"tick\"\nnext")
        #expect(object["label"] as? String == "ingest.kafka")
        #expect(object["symbol"] as? String == "BTCUSDT")
        #expect(object["n"] as? String == "3")
        #expect(object["levels"] as? [String] == ["a", "b"])
    }

    /// Every control character, quote, backslash and non-ASCII scalar round-trips through a JSON parser, with
    /// the same escapes the stream codec writes (`\b`, `\f`, `\u00xx`), since both use one escaper.
    @Test func escapesEveryControlCharacterAsTheCodecDoes() throws {
        let text = String((0..<0x20).map { Character(UnicodeScalar(UInt8($0))) }) + "\"\\/é€😀"
        let quoted = JSONText.quoted(text)
        #expect(quoted.contains("\\b") && quoted.contains("\\f") && quoted.contains("\\u0001"))
        let parsed = try JSONSerialization.jsonObject(with: Data("[\(quoted)]".utf8)) as? [String]
        #expect(parsed == [text])
        #expect(JSONText.escape("plain") == "plain")
        #expect("\"" + JSONText.escape(text) + "\"" == quoted)
    }
}

@Suite("Health server", .timeLimit(.minutes(1)))
struct HealthServerTests {
    func get(_ port: Int, _ path: String) async throws -> (Int, String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        return ((response as! HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
    }

    @Test func servesMetricsHealthAndReadiness() async throws {
        let registry = ServiceBootstrap.metrics()
        Counter(label: "te_test_health_total", dimensions: [("stage", "t")]).increment(by: 3)
        let readiness = ReadinessChecks(timeout: .milliseconds(500))
        let redisUp = Mutex(true)
        let box = PortBox()
        readiness.add("always") {}
        readiness.add("redis") {
            if !redisUp.withLock({ $0 }) { throw RedisError(.connection, "connection refused") }
        }
        let server = HealthServer(
            host: "127.0.0.1", port: 0, registry: registry, readiness: readiness, logger: Logger(label: "health"),
            onListening: { box.set($0) })
        let group = ServiceGroup(configuration: .init(services: [server], logger: Logger(label: "health")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            #expect(await TestEnv.eventually { box.port != 0 })
            let port = box.port
            let (healthStatus, _) = try await get(port, "/healthz")
            #expect(healthStatus == 200)
            let (metricsStatus, metrics) = try await get(port, "/metrics")
            #expect(metricsStatus == 200)
            #expect(metrics.contains("te_test_health_total{stage=\"t\"} 3"))
            let (ready, readyBody) = try await get(port, "/readyz")
            #expect(ready == 200)
            #expect(readyBody == "{\"status\":\"ready\",\"checks\":{\"always\":\"ok\",\"redis\":\"ok\"}}")
            redisUp.withLock { $0 = false }
            let (notReady, body) = try await get(port, "/readyz")
            #expect(notReady == 503)
            #expect(
                body == "{\"status\":\"not_ready\",\"down\":{\"redis\":\"redis connection error: connection refused\"}}"
            )
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// A check that does not return and ignores cancellation (a blocking driver call) cannot hold /readyz:
    /// each call answers after `answerWithin`, joins the probe already running instead of piling up new
    /// ones, and reports how long it has been running; the healthy check is reported ok meanwhile. The probe
    /// is a child task of the checks' `run()`, which returns once it has.
    @Test func hungCheckNeitherHoldsReadinessNorPilesUp() async {
        let readiness = ReadinessChecks(timeout: .seconds(60), answerWithin: .milliseconds(50))
        let started = Mutex(0)
        let hung = Mutex<CheckedContinuation<Void, Never>?>(nil)
        readiness.add("ok") {}
        readiness.add("hung") {
            started.withLock { $0 += 1 }
            await withCheckedContinuation { c in hung.withLock { $0 = c } }
        }
        await Self.running(readiness) {
            for _ in 0..<3 {
                let failures = await readiness.failures()
                #expect(failures.map(\.name) == ["hung"])
                #expect(failures.first?.reason.hasPrefix("no answer within") == true)
            }
            #expect(started.withLock { $0 } == 1)
            while hung.withLock({ $0 == nil }) { await Task.yield() }
            hung.withLock { $0!.resume() }
        }
        #expect(started.withLock { $0 } == 1)
    }

    @Test func slowCheckTimesOut() async {
        let readiness = ReadinessChecks(timeout: .milliseconds(100))
        readiness.add("slow") { try await Task.sleep(for: .seconds(5)) }
        await Self.running(readiness) {
            let failures = await readiness.failures()
            #expect(failures.map(\.name) == ["slow"])
            #expect(failures.first?.reason.hasPrefix("no answer within") == true)
        }
    }

    /// With nothing running the checks' probes, every check is reported unanswered, never passed.
    @Test func checksNotRunAreNotReady() async {
        let readiness = ReadinessChecks(timeout: .milliseconds(100), answerWithin: .milliseconds(20))
        readiness.add("ok") {}
        let failures = await readiness.failures()
        #expect(failures.map(\.name) == ["ok"])
        #expect(failures.first?.reason.hasPrefix("no answer within") == true)
    }

    /// Runs `body` while `readiness` runs its probes, then stops them (cancelling the sleeping one).
    static func running(_ readiness: ReadinessChecks, _ body: () async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await readiness.run() }
            await body()
            group.cancelAll()
        }
    }
}

final class PortBox: Sendable {
    private let value = Mutex(0)
    var port: Int { value.withLock { $0 } }
    func set(_ port: Int) { value.withLock { $0 = port } }
}
