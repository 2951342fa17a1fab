import Foundation
import Logging
import ServiceKit
import ServiceLifecycle
import Synchronization
import TEModels
import TERedis
import TestSupport
import Testing

/// The input of the test stage.
struct Job: StreamMessage, Equatable {
    static let schemaVersion = 1
    var n: Int
    var tag: String
}

struct PoisonError: Error, CustomStringConvertible {
    let n: Int
    var description: String { "job \(n) is poison" }
}

/// What the test stage saw; shared between the test and the stage running in the worker.
final class StageLog: Sendable {
    let calls = Mutex<[[Int]]>([])
    let started = Mutex(0)

    var handled: [[Int]] { calls.withLock { $0 } }
    func callsContaining(_ n: Int) -> Int { handled.filter { $0.contains(n) }.count }
}

/// Copies each job's `n` to `output`; throws for tag "poison"; can be slowed down.
struct CopyStage: StreamStage {
    typealias Input = Job
    let stage: String
    let inputStream: String
    let output: String
    let log: StageLog
    var delay: Duration = .zero

    mutating func handle(_ batch: [StreamDelivery<Job>]) async throws -> StageOutput {
        log.started.withLock { $0 += 1 }
        log.calls.withLock { $0.append(batch.map(\.message.n)) }
        if delay > .zero { try? await Task.sleep(for: delay) }
        var out = StageOutput()
        for d in batch {
            if d.message.tag == "poison" { throw PoisonError(n: d.message.n) }
            if d.message.tag == "reject" {
                out.deadLetter(id: d.id, reason: "rejected by stage")
                continue
            }
            out.append(
                .xadd(output, maxLen: nil, fields: [("n", String(d.message.n)), ("deliveries", String(d.deliveries))]))
        }
        return out
    }
}

/// Holds its first batch until the worker has read the next one (the group's pending entries outnumber the
/// batch), then copies like `CopyStage`: it sees the read-ahead run while `handle` does.
struct ReadAheadProbeStage: StreamStage {
    typealias Input = Job
    let stage: String
    let inputStream: String
    let output: String
    let redis: RedisClient
    let probe = PendingProbe()

    mutating func handle(_ batch: [StreamDelivery<Job>]) async throws -> StageOutput {
        if probe.pendingSeen.withLock({ $0 == nil }) {
            var pending = 0
            for _ in 0..<500 {
                pending = try await redis.xpending(inputStream, group: stage).count
                if pending > batch.count { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            probe.pendingSeen.withLock { $0 = pending }
        }
        var out = StageOutput()
        for d in batch { out.append(.xadd(output, maxLen: nil, fields: [("n", String(d.message.n))])) }
        return out
    }
}

final class PendingProbe: Sendable {
    /// The pending count the first `handle` saw when it stopped waiting.
    let pendingSeen = Mutex<Int?>(nil)
}

@Suite("StreamWorker against a real redis-server", .timeLimit(.minutes(2)))
struct StreamWorkerTests {
    let redis: RedisClient
    let input = TestEnv.uniqueName("in")
    let output = TestEnv.uniqueName("out")
    let dlq = TestEnv.uniqueName("dlq")
    let group = "copy"
    let log = StageLog()
    var logger = Logger(label: "worker-test")

    init() throws {
        redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "worker-test")
        logger.logLevel = .warning
        ServiceBootstrap.metrics()
    }

    func configuration(consumer: String = "alive", maxDeliveries: Int = 3) -> StreamWorkerConfiguration {
        StreamWorkerConfiguration(
            consumerName: consumer, batchSize: 10, block: .milliseconds(100), claimMinIdle: .milliseconds(200),
            claimInterval: .milliseconds(100), maxDeliveries: maxDeliveries, retryBackoff: .milliseconds(10),
            retryBackoffMax: .milliseconds(50), gaugeInterval: .milliseconds(100), groupStartID: "0",
            deadLetterStream: dlq)
    }

    func worker(_ configuration: StreamWorkerConfiguration, delay: Duration = .zero) throws -> StreamWorker<CopyStage> {
        StreamWorker(
            stage: CopyStage(stage: group, inputStream: input, output: output, log: log, delay: delay),
            redis: try TestEnv.redisConfiguration(), configuration: configuration, logger: logger)
    }

    func add(_ n: Int, tag: String = "ok") async throws -> String {
        try await redis.xadd(input, fields: StreamFieldEncoder.encode(Job(n: n, tag: tag)))
    }

    func outputs() async throws -> [Int] {
        try await redis.xrange(output).compactMap { $0.field("n").flatMap(Int.init) }
    }

    /// Runs `services` in a ServiceGroup while `body` runs, then shuts it down gracefully and
    /// waits for it to return.
    func withRunning(_ services: [any Service], _ body: () async throws -> Void) async throws {
        let group = ServiceGroup(configuration: .init(services: services, logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            do {
                try await body()
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    func cleanup() async {
        _ = try? await redis.del([input, output, dlq])
        redis.close()
    }

    @Test func processesWritesAndAcknowledgesEverything() async throws {
        for i in 0..<25 { _ = try await add(i) }
        try await withRunning([try worker(configuration())]) {
            let done = await TestEnv.eventually { (try? await outputs().count) == 25 }
            #expect(done)
        }
        #expect(try await outputs() == Array(0..<25))
        #expect(try await redis.xpending(input, group: group).count == 0)
        #expect(try await redis.xlen(dlq) == 0)
        #expect(log.handled.allSatisfy { $0.count <= 10 })
        await cleanup()
    }

    @Test func theNextBatchIsReadWhileTheStageHandlesOne() async throws {
        for i in 0..<25 { _ = try await add(i) }
        let stage = ReadAheadProbeStage(stage: group, inputStream: input, output: output, redis: redis)
        let worker = StreamWorker(
            stage: stage, redis: try TestEnv.redisConfiguration(), configuration: configuration(), logger: logger)
        try await withRunning([worker]) {
            let done = await TestEnv.eventually { (try? await outputs().count) == 25 }
            #expect(done)
        }
        // While the first batch of 10 was in hand, the next 10 were delivered to the worker already.
        #expect(stage.probe.pendingSeen.withLock { $0 } == 20)
        #expect(try await outputs() == Array(0..<25))
        #expect(try await redis.xpending(input, group: group).count == 0)
        await cleanup()
    }

    @Test func entriesOfADeadConsumerAreClaimedAndNothingIsLost() async throws {
        try await redis.xgroupCreate(stream: input, group: group, startID: "0")
        for i in 0..<30 { _ = try await add(i) }
        // A consumer reads a batch and dies before acknowledging it.
        let taken = try await redis.xreadgroup(group: group, consumer: "dead", streams: [(input, ">")], count: 12)
        #expect(taken.first?.entries.count == 12)
        try await withRunning([try worker(configuration(consumer: "alive"))]) {
            let done = await TestEnv.eventually { (try? await outputs().count) == 30 }
            #expect(done)
        }
        #expect(Set(try await outputs()) == Set(0..<30))
        #expect(try await outputs().count == 30)
        let pending = try await redis.xpending(input, group: group)
        #expect(pending.count == 0)
        // The claimed entries were delivered a second time, the others once.
        let claimedDeliveries = try await redis.xrange(output).filter { Int($0.field("n")!)! < 12 }.map {
            $0.field("deliveries")
        }
        #expect(claimedDeliveries.allSatisfy { $0 == "2" })
        await cleanup()
    }

    @Test func restartedConsumerReReadsItsOwnPendingEntriesFirst() async throws {
        try await redis.xgroupCreate(stream: input, group: group, startID: "0")
        for i in 0..<5 { _ = try await add(i) }
        _ = try await redis.xreadgroup(group: group, consumer: "same-host", streams: [(input, ">")], count: 5)
        var c = configuration(consumer: "same-host")
        c.claimMinIdle = .seconds(60)  // no claiming: its own pending list is what brings them back
        try await withRunning([try worker(c)]) {
            let done = await TestEnv.eventually { (try? await outputs().count) == 5 }
            #expect(done)
        }
        #expect(try await outputs() == Array(0..<5))
        #expect(try await redis.xpending(input, group: group).count == 0)
        await cleanup()
    }

    @Test func poisonEntryEndsInDeadLetterStreamAfterMaxDeliveries() async throws {
        _ = try await add(1)
        let poisonID = try await add(2, tag: "poison")
        _ = try await add(3)
        try await withRunning([try worker(configuration(maxDeliveries: 3))]) {
            let done = await TestEnv.eventually { (try? await redis.xlen(dlq)) == 1 }
            #expect(done)
            _ = await TestEnv.eventually { (try? await redis.xpending(input, group: group).count) == 0 }
        }
        // The good entries were not held back by the poison one.
        #expect(try await outputs() == [1, 3])
        let letters = try await redis.xrange(dlq)
        let letter = try StreamFieldDecoder.decode(DeadLetter.self, from: letters[0].fields)
        #expect(letter.stage == group)
        #expect(letter.reason == "max deliveries exceeded: job 2 is poison")
        #expect(letter.source == input)
        #expect(letter.sourceId == poisonID)
        #expect(letter.deliveries == 3)
        let payload = try JSONSerialization.jsonObject(with: Data(letter.payload.utf8)) as? [String: String]
        #expect(payload == ["v": "1", "n": "2", "tag": "poison"])
        // Tried alone exactly 3 times (once more inside the first, mixed batch).
        #expect(log.handled.filter { $0 == [2] }.count == 3)
        let metrics = ServiceBootstrap.registry.emitToString()
        // The series exists from the start (at 0); the dead letter must have counted.
        let dlqCount = metrics.split(separator: "\n")
            .first { $0.hasPrefix("te_stream_dlq_total{stage=\"copy\",reason=\"max_deliveries\"} ") }
            .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
        #expect((dlqCount ?? 0) >= 1)
        #expect(metrics.contains("te_stream_entries_failed_total{stage=\"copy\"}"))
        #expect(metrics.contains("te_stream_entries_processed_total{stage=\"copy\"}"))
        #expect(metrics.contains("te_stream_batch_duration_seconds_bucket{stage=\"copy\""))
        #expect(metrics.contains("te_stream_pending_entries{stream=\"\(input)\",group=\"copy\"}"))
        #expect(try await redis.xpending(input, group: group).count == 0)
        await cleanup()
    }

    @Test func undecodableEntryGoesStraightToDeadLetterStream() async throws {
        let badID = try await redis.xadd(input, fields: [("v", "1"), ("n", "not-a-number"), ("tag", "ok")])
        let missingID = try await redis.xadd(input, fields: [("v", "1"), ("tag", "ok")])
        _ = try await add(7)
        _ = try await add(8, tag: "reject")
        try await withRunning([try worker(configuration())]) {
            let done = await TestEnv.eventually { (try? await redis.xlen(dlq)) == 3 }
            #expect(done)
            _ = await TestEnv.eventually { (try? await redis.xpending(input, group: group).count) == 0 }
        }
        #expect(try await outputs() == [7])
        let letters = try await redis.xrange(dlq).map {
            try StreamFieldDecoder.decode(DeadLetter.self, from: $0.fields)
        }
        let byID = Dictionary(uniqueKeysWithValues: letters.map { ($0.sourceId!, $0) })
        #expect(byID[badID]?.reason == "undecodable: field 'n': expected an integer, got \"not-a-number\"")
        #expect(byID[missingID]?.reason == "undecodable: field 'n': missing")
        #expect(letters.contains { $0.reason == "rejected by stage" })
        // Never handed to the stage.
        #expect(log.handled.flatMap { $0 }.sorted() == [7, 8])
        #expect(try await redis.xpending(input, group: group).count == 0)
        await cleanup()
    }

    @Test func gracefulShutdownFinishesAndAcknowledgesTheBatchInFlight() async throws {
        for i in 0..<5 { _ = try await add(i) }
        let worker = try worker(configuration(), delay: .milliseconds(700))
        let serviceGroup = ServiceGroup(configuration: .init(services: [worker], logger: logger))
        let returned = StageLog()
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                try await serviceGroup.run()
                returned.started.withLock { $0 = 1 }
            }
            let inFlight = await TestEnv.eventually(every: .milliseconds(5)) { log.started.withLock { $0 } == 1 }
            #expect(inFlight)
            // Shutdown while the stage is still working on the batch.
            await serviceGroup.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(returned.started.withLock { $0 } == 1)
        #expect(try await outputs() == Array(0..<5))
        #expect(try await redis.xpending(input, group: group).count == 0)
        // It stopped reading: entries added now stay unread.
        _ = try await add(99)
        #expect(log.handled.count == 1)
        await cleanup()
    }
}
