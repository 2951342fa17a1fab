import Foundation
import TEModels
import TERedis

/// The real path of a recording through the running services, isolated for one test: `te replay` into a
/// topic of its own on the dev broker (`KAFKA_BROKERS`), a Kafka consumer group of its own for `ingest`,
/// and a redis-server of its own (the services write DESIGN.md's fixed stream names `te:ticks`,
/// `te:features`, …, so a private server is what keeps two runs, or two tests, apart). The service
/// binaries come from `TE_BIN_DIR`.
///
/// On a cluster (`cluster: true`, or by default when `REDIS_URL` names one: `make test`'s cluster pass) the
/// private server is a 3-master Redis Cluster with replicas (`PrivateRedisCluster`) and the services get
/// its `redis+cluster://` URL.
public final class LivePipeline: Sendable {
    public let redisServer: PrivateRedisServer?
    public let redisCluster: PrivateRedisCluster?
    public let redis: RedisClient
    /// The private server's URL (`redis://` or `redis+cluster://`).
    public let redisURL: String
    public let brokers: String
    public let topic: String
    public let group: String
    public let consumer: String

    /// True when the tests run against a Redis Cluster (`REDIS_URL=redis+cluster://…`, the cluster pass of
    /// `make test`): suites that run on both pick their settings by it (`STREAM_SHARDS` ≥ 2 on a cluster).
    public static var onCluster: Bool {
        (try? RedisConfiguration(url: TestEnv.redisURL()))?.cluster != nil
    }

    public init(_ name: String, cluster: Bool = LivePipeline.onCluster) async throws {
        guard let brokers = ProcessInfo.processInfo.environment["KAFKA_BROKERS"], !brokers.isEmpty else {
            throw MissingServerError(variable: "KAFKA_BROKERS")
        }
        self.brokers = brokers
        let unique = TestEnv.uniqueName(name).replacingOccurrences(of: ":", with: "-")
        topic = unique
        group = unique
        consumer = unique
        // This checkout's ACL users (deploy/redis/users.acl), not the file rendered when the dev servers started.
        let acl = try await StoreUsers.renderStrictACL()
        if cluster {
            let nodes = try await PrivateRedisCluster(aclFile: acl)
            (redisServer, redisCluster, redisURL) = (nil, nodes, nodes.url)
        } else {
            let server = try await PrivateRedisServer(aclFile: acl)
            (redisServer, redisCluster, redisURL) = (server, nil, server.url)
        }
        redis = RedisClient(configuration: try RedisConfiguration(url: redisURL), name: name)
    }

    /// What every service of the pipeline is started with, plus `extra`.
    public func environment(_ extra: [String: String] = [:]) throws -> [String: String] {
        var env = [
            "REDIS_URL": redisURL, "KAFKA_BROKERS": brokers, "KAFKA_TOPIC": topic, "KAFKA_GROUP": group,
            "CONSUMER_NAME": consumer, "METRICS_PORT": String(try TestEnv.freePort()), "STREAM_BLOCK_MS": "100",
            "LOG_LEVEL": "info", "KAFKA_CONF_session_timeout_ms": "6000"
        ]
        for (k, v) in extra { env[k] = v }
        return env
    }

    /// Starts a service binary on this pipeline.
    public func start(_ product: String, _ extra: [String: String] = [:]) throws -> ChildProcess {
        try ChildProcess.built(product, environment: environment(extra))
    }

    /// Starts `ingest` and returns once it holds the topic's partitions, so the replay that follows is
    /// consumed as it is produced. (The mock cluster keeps a bounded log per partition and trims the oldest
    /// messages beyond it: a whole recording replayed before anyone reads it can lose its head. Every
    /// message of one symbol shares a partition.) The subscription creates the topic.
    public func startIngest(_ metricsPort: Int? = nil, _ more: [String: String] = [:]) async throws -> ChildProcess {
        var extra = ["KAFKA_CONF_allow_auto_create_topics": "true"].merging(more) { $1 }
        if let metricsPort { extra["METRICS_PORT"] = String(metricsPort) }
        let ingest = try start("ingest", extra)
        let assigned = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(100)) {
            ingest.output().contains("kafka partitions assigned")
        }
        guard assigned else {
            throw ChildProcessError(
                description: "ingest got no partitions of \(topic):\n\(ingest.output().suffix(2000))")
        }
        return ingest
    }

    /// `te replay FILE --speed SPEED` (default max) into the pipeline's topic; returns when every message is
    /// delivered.
    public func replay(_ file: String, speed: String = "max") async throws {
        let replay = try ChildProcess.built(
            "te", arguments: ["replay", "--topic", topic, "--speed", speed, "--quiet", file], environment: environment()
        )
        let status = try await replay.waitForExit(timeout: .seconds(120))
        guard status == 0 else {
            throw ChildProcessError(description: "te replay failed (\(status)): \(replay.output())")
        }
    }

    /// True once `group` has read every entry of `stream` and acknowledged it (false while the stream or the
    /// group does not exist yet).
    public func drained(_ stream: String, group: String) async throws -> Bool {
        guard let last = try await redis.xrevrange(stream, count: 1).first?.id else { return false }
        guard let info = try await redis.xinfoGroups(stream).first(where: { $0.name == group }) else { return false }
        return info.pending == 0 && info.lastDeliveredID == last
    }

    /// Every message of `stream`, in order.
    public func messages<M: StreamMessage>(_ type: M.Type, in stream: String) async throws -> [M] {
        try await redis.pagedMessages(type, in: stream)
    }

    /// Stops the private redis-server or cluster (the client first).
    public func close() async {
        redis.close()
        try? await redisServer?.kill()
        await redisCluster?.shutdown()
    }
}

extension RedisClient {
    /// Every message of `stream`, in order, read in pages of 5,000.
    public func pagedMessages<M: StreamMessage>(_ type: M.Type, in stream: String) async throws -> [M] {
        var out: [M] = []
        var start = "-"
        while true {
            let page = try await xrange(stream, start: start, end: "+", count: 5_000)
            guard let last = page.last else { return out }
            for entry in page { out.append(try StreamFieldDecoder.decode(M.self, from: entry.fields)) }
            start = "(" + last.id
        }
    }
}
