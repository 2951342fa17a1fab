import Foundation
import TEModels
import TERedis

/// feature-pipeline draining a backlog of te:ticks into te:features.
enum ServiceThroughput {
    static func run(ticks: [Tick], redisURL: String, pipeline: String, input: String) async throws -> [String: Any] {
        let redis = RedisClient(configuration: try RedisConfiguration(url: redisURL), name: "feature-bench")
        defer { redis.close() }
        guard try await redis.xlen(StreamKey.ticks) == 0 else {
            throw BenchError(description: "te:ticks is not empty at \(redisURL): give an empty, private Redis")
        }
        let encoder = { (tick: Tick) throws -> RedisCommand in
            .xadd(StreamKey.ticks, maxLen: nil, fields: try StreamFieldEncoder.encode(tick))
        }
        for chunk in stride(from: 0, to: ticks.count, by: 5_000) {
            _ = try await redis.pipeline(try ticks[chunk..<min(chunk + 5_000, ticks.count)].map(encoder))
        }
        let quotes = ticks.count(where: { $0.kind == .quote })

        let process = Process()
        process.executableURL = URL(fileURLWithPath: pipeline)
        var env = ProcessInfo.processInfo.environment
        env["REDIS_URL"] = redisURL
        env["METRICS_PORT"] = "0"
        env["CONSUMER_NAME"] = "bench"
        env["LOG_LEVEL"] = "warning"
        process.environment = env
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        let started = ContinuousClock.now
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        while try await redis.xlen(StreamKey.features) < quotes {
            guard process.isRunning else { throw BenchError(description: "feature-pipeline exited early") }
            if ContinuousClock.now - started > .seconds(600) { throw BenchError(description: "timed out") }
            try await Task.sleep(for: .milliseconds(20))
        }
        let wall = ContinuousClock.now - started
        process.terminate()
        process.waitUntilExit()
        let first = try await redis.xrange(StreamKey.features, count: 1).first!.id
        let last = try await redis.xrevrange(StreamKey.features, count: 1).first!.id
        func ms(_ id: String) -> Double { Double(id.split(separator: "-")[0])! }
        let spanSeconds = max(ms(last) - ms(first), 1) / 1000
        let wallSeconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
        return [
            "benchmark": "feature-pipeline",
            "input": (input as NSString).lastPathComponent,
            "ticks": ticks.count,
            "quotes": quotes,
            "first_to_last_snapshot_seconds": spanSeconds,
            "quotes_per_second": Double(quotes - 1) / spanSeconds,
            "ticks_per_second": Double(ticks.count) / spanSeconds,
            "wall_seconds_including_start": wallSeconds,
            "batch_size": ProcessInfo.processInfo.environment["STREAM_BATCH_SIZE"] ?? "100 (default)"
        ]
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
}
