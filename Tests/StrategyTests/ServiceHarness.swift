import Foundation
import ServiceKit
import TEModels
import TERedis
import TestSupport

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Streams and keys of one test, unique so tests run in parallel against the shared Redis.
struct TestStreams {
    let features = TestEnv.uniqueName("features")
    let signals = TestEnv.uniqueName("signals")
    let opportunities = TestEnv.uniqueName("opportunities")
    let statePrefix = TestEnv.uniqueName("agg")
    let consumer = TestEnv.uniqueName("consumer")

    var keysToDelete: [String] { [features, signals, opportunities, "\(statePrefix):state"] }
}

/// A service binary started for a test, with its metrics port.
struct RunningService {
    let process: ChildProcess
    let metricsPort: Int

    /// `redisURL`: default the shared server's `REDIS_URL`.
    static func start(_ product: String, environment: [String: String], redisURL: String? = nil) throws
        -> RunningService
    {
        let port = try TestEnv.freePort()
        var env = environment
        env["METRICS_PORT"] = String(port)
        env["REDIS_URL"] = try redisURL ?? TestEnv.redisURL()
        env["STREAM_BLOCK_MS"] = env["STREAM_BLOCK_MS"] ?? "100"
        env["LOG_LEVEL"] = env["LOG_LEVEL"] ?? "info"
        return RunningService(process: try ChildProcess.built(product, environment: env), metricsPort: port)
    }

    /// The `/metrics` text, or nil while the server is not up.
    func metrics() async -> String? {
        guard let url = URL(string: "http://127.0.0.1:\(metricsPort)/metrics") else { return nil }
        do {
            let (data, _) = try await URLSession.shared.data(from: url)
            return String(decoding: data, as: UTF8.self)
        } catch {
            return nil
        }
    }

    /// The value of the sample of `name` whose labels include all of `labels` (`key="value"`).
    func metric(_ name: String, labels: [String] = []) async -> Double? {
        guard let text = await metrics() else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            guard labels.allSatisfy({ line.contains($0) }) else { continue }
            if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { return value }
        }
        return nil
    }

    func stop() async throws -> Int32 {
        process.terminate()
        return try await process.waitForExit(timeout: .seconds(20))
    }
}

extension RedisClient {
    func messages<M: StreamMessage>(_ type: M.Type, in stream: String) async throws -> [M] {
        try await xrange(stream).map { try StreamFieldDecoder.decode(M.self, from: $0.fields) }
    }

    /// True once the group has read every entry of `stream` and acknowledged it.
    func drained(_ stream: String, group: String) async throws -> Bool {
        guard let last = try await xrevrange(stream, count: 1).first?.id else { return true }
        guard let info = try await xinfoGroups(stream).first(where: { $0.name == group }) else { return false }
        return info.pending == 0 && info.lastDeliveredID == last
    }

    func add<M: StreamMessage>(_ messages: [M], to stream: String) async throws {
        var commands: [RedisCommand] = []
        for message in messages { commands.append(try .xadd(stream, maxLen: nil, message: message)) }
        for chunk in stride(from: 0, to: commands.count, by: 500) {
            let replies = try await pipeline(Array(commands[chunk..<min(chunk + 500, commands.count)]))
            for reply in replies { _ = try reply.throwingError() }
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Writes `text` to a temporary file and returns its path.
func temporaryFile(_ text: String, suffix: String = ".json") throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("strategies-\(UUID().uuidString)\(suffix)")
    try Data(text.utf8).write(to: url)
    return url.path
}

/// The repository root (for `deploy/strategies/default.json`).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
