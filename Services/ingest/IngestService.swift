import Foundation
import Logging
import MarketData
import Metrics
import Prometheus
import ServiceLifecycle
import TEKafka
import TEModels
import TERedis

/// Kafka `ticks` (group `ingest`) → normalize → one pipelined Redis write per batch (te:ticks, spread keys,
/// te:dlq) → commit the batch's offsets. Offsets are committed only after Redis accepted the batch, so a
/// crash or a Redis outage re-reads, never skips (at-least-once: a re-read batch is written again).
///
/// The duplicate window. What is in Redis but not yet committed is written a second time after a crash
/// (or by the next owner of a partition after a rebalance). Offsets are committed at most every
/// `commitInterval` (200 ms), checked once per loop turn after the next poll, so at a crash the uncommitted
/// span is at most 200 ms of traffic plus one loop turn (poll + normalize + Redis write, ≤ `INGEST_BATCH_SIZE`
/// = 500 messages): about rate × 0.2 s + 500 messages — ~1,500 at 5k msgs/s, ~2,800 at the 11.5k msgs/s of
/// `--speed max`. A failed commit (retried 5×, then left to the next one) widens it until a commit
/// succeeds. A second, crash-free source: a Redis write whose reply is lost (connection reset after Redis
/// executed the pipeline) is retried by `write`, duplicating that one batch (≤ 500 messages).
/// Duplicates are whole re-written ticks with the same `ts_ns`/`seq`; feature-pipeline would count them
/// twice in its window (n_quotes, trade_volume), so they matter downstream.
///
/// Cheap fixes, not done: (1) committing every batch shrinks the window to one batch but costs a
/// synchronous coordinator round trip per batch on the consumer's queue (≈ the throughput cap this
/// interval exists to avoid) and still duplicates one batch. (2) Effectively-once into Redis: keep
/// `topic/partition → last written offset` in a Redis hash updated in the same MULTI/EXEC as the batch's
/// XADDs (a Lua script that skips offsets ≤ the stored one also makes the lost-reply retry safe), read it
/// when partitions are assigned and skip messages at or below it; Kafka commits then only bound the
/// re-read. Cost: one HSET per batch, MULTI/EXEC (or EVAL) instead of a plain pipeline — Redis runs the
/// batch atomically, ~1 ms for 500 XADDs — and one HGETALL per assignment. Stream ids cannot be the
/// idempotency key: te:ticks interleaves partitions, and XADD with an explicit id needs ids that only grow.
struct IngestService: Service {
    let settings: IngestSettings
    let redis: RedisClient
    let logger: Logger
    let metrics: IngestMetrics

    func run() async throws {
        let consumer = try KafkaConsumer(
            configuration: settings.kafka, groupID: settings.group, topics: [settings.topic], logger: logger)
        logger.info("ingest consuming", metadata: ["topic": "\(settings.topic)", "group": "\(settings.group)"])
        var normalizer = MarketNormalizer(depthLevels: settings.depthLevels)
        var resyncsSeen: [String: Int] = [:]
        var lastLagUpdate = ContinuousClock.now
        // Offsets whose messages are in Redis, committed at most every `commitInterval` (a synchronous commit
        // per small batch would cap throughput at the coordinator's round trip).
        var uncommitted: [String: KafkaOffset] = [:]
        var lastCommit = ContinuousClock.now
        let commitInterval = Duration.milliseconds(200)
        defer { redis.close() }
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let batch: [KafkaConsumerMessage]
            do {
                batch = try await consumer.poll(maxMessages: settings.batchSize, timeout: .milliseconds(200))
            } catch {
                logger.critical("kafka consumer failed", metadata: ["error": "\(error)"])
                await consumer.close()
                throw error
            }
            if ContinuousClock.now - lastLagUpdate > .seconds(1) {
                lastLagUpdate = .now
                if let lag = try? await consumer.lag() { metrics.kafkaLag.record(Double(lag)) }
            }
            if !uncommitted.isEmpty, batch.isEmpty || ContinuousClock.now - lastCommit >= commitInterval {
                await commit(consumer, Array(uncommitted.values))
                uncommitted.removeAll(keepingCapacity: true)
                lastCommit = .now
            }
            guard !batch.isEmpty else { continue }
            metrics.consumed.increment(by: Int64(batch.count))

            var commands: [RedisCommand] = []
            commands.reserveCapacity(batch.count * 2)
            var quoteCount = 0
            var tradeCount = 0
            for message in batch {
                let receiveTsNs = Self.receiveTime(message)
                switch normalizer.normalize(payload: message.value, receiveTsNs: receiveTsNs, key: message.key.map { String(decoding: $0, as: UTF8.self) }) {
                case .ticks(let ticks):
                    for tick in ticks {
                        guard let fields = try? StreamFieldEncoder.encode(tick) else { continue }
                        commands.append(.xadd(settings.ticksStream, maxLen: settings.streamMaxLen, fields: fields))
                        if tick.kind == .quote, let bid = tick.bid, let ask = tick.ask {
                            quoteCount += 1
                            let bps = (ask - bid) / ((ask + bid) / 2) * 1e4
                            commands.append(.set(settings.spreadPrefix + tick.symbol, "\(bps)", expireSeconds: settings.spreadTTLSeconds))
                        } else {
                            tradeCount += 1
                        }
                    }
                case .ignored:
                    break
                case .rejected(let rejection):
                    metrics.deadLettered(reason: rejection.code)
                    let letter = DeadLetter(
                        stage: "ingest", reason: "\(rejection.code): \(rejection.detail)",
                        payload: String(decoding: message.value, as: UTF8.self), source: message.source,
                        tsNs: receiveTsNs)
                    if let fields = try? StreamFieldEncoder.encode(letter) {
                        commands.append(.xadd(settings.dlqStream, maxLen: 100_000, fields: fields))
                    }
                    logger.debug("dead-lettered", metadata: ["source": "\(message.source)", "reason": "\(rejection)"])
                }
            }
            for (symbol, count) in normalizer.resyncs where count != resyncsSeen[symbol] {
                metrics.resynced(symbol: symbol, by: count - (resyncsSeen[symbol] ?? 0))
                logger.warning("order book gap: dropped the book until the next snapshot", metadata: ["symbol": "\(symbol)"])
                resyncsSeen[symbol] = count
            }

            guard await write(commands) else { break }  // shutting down before Redis took the batch: not committed
            let written = Date().timeIntervalSince1970
            for message in batch { metrics.recordLatency(message, writtenAt: written) }
            metrics.quotes.increment(by: Int64(quoteCount))
            metrics.trades.increment(by: Int64(tradeCount))
            for offset in KafkaOffset.after(batch) { uncommitted["\(offset.topic)/\(offset.partition)"] = offset }
        }
        if !uncommitted.isEmpty { await commit(consumer, Array(uncommitted.values)) }
        logger.info("ingest stopping: leaving the consumer group")
        await consumer.close()
    }

    /// The header `ts_ns` (exact receive time), else the Kafka timestamp, else now.
    static func receiveTime(_ message: KafkaConsumerMessage) -> Int64 {
        if let header = message.header("ts_ns"), let ns = Int64(String(decoding: header, as: UTF8.self)), ns > 0 {
            return ns
        }
        if let ms = message.timestampMs, ms > 0 { return ms * 1_000_000 }
        return Int64(Date().timeIntervalSince1970 * 1e9)
    }

    /// Writes until Redis accepts the batch, backing off while it is unreachable. False when a graceful
    /// shutdown came first (the batch is then neither written nor committed: it is re-read after restart).
    private func write(_ commands: [RedisCommand]) async -> Bool {
        guard !commands.isEmpty else { return true }
        var backoff = Duration.milliseconds(100)
        while true {
            do {
                let replies = try await redis.pipeline(commands)
                for (i, reply) in replies.enumerated() {
                    if case .error(let text) = reply {
                        // Retrying cannot fix a refused command; log it and go on rather than stall the topic.
                        logger.error("redis refused a command", metadata: ["command": "\(commands[i])", "error": "\(text)"])
                    }
                }
                return true
            } catch {
                metrics.redisRetries.increment()
                logger.warning("redis write failed; retrying (offsets not committed)", metadata: ["error": "\(error)", "backoff": "\(backoff)"])
                if Task.isShuttingDownGracefully { return false }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    /// Commits after the batch is in Redis. A failed commit is retried a few times, then left to the next
    /// batch's commit (commits are cumulative per partition); at worst the batch is re-read after a crash.
    private func commit(_ consumer: KafkaConsumer, _ offsets: [KafkaOffset]) async {
        var backoff = Duration.milliseconds(50)
        for attempt in 1...5 {
            do {
                try await consumer.commit(offsets)
                return
            } catch {
                metrics.commitFailures.increment()
                logger.warning("kafka commit failed", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                if !error.isRetriable { return }
                try? await Task.sleep(for: backoff)
                backoff = backoff * 2
            }
        }
    }
}

/// The ingest metric names of COMMON.md.
final class IngestMetrics: Sendable {
    let consumed = Counter(label: "te_ingest_messages_consumed_total")
    let quotes = Counter(label: "te_ingest_ticks_total", dimensions: [("kind", "quote")])
    let trades = Counter(label: "te_ingest_ticks_total", dimensions: [("kind", "trade")])
    let kafkaLag = Gauge(label: "te_ingest_kafka_lag_messages")
    let redisRetries = Counter(label: "te_ingest_redis_retries_total")
    let commitFailures = Counter(label: "te_ingest_commit_failures_total")
    let latency: DurationHistogram

    init(registry: PrometheusCollectorRegistry) {
        latency = registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(
                namespace: "te", subsystem: "ingest", metricName: "latency", unitName: "seconds",
                helpText: "Kafka timestamp (or the replay's produced_ns header) to Redis write"),
            buckets: [
                .microseconds(100), .microseconds(250), .microseconds(500), .microseconds(750), .milliseconds(1),
                .microseconds(1500), .milliseconds(2), .milliseconds(3), .milliseconds(5), .microseconds(7500),
                .milliseconds(10), .milliseconds(15), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
            ])
        // Registered at 0 so alerts on rate() have a series before the first dead letter.
        for reason in NormalizeRejection.codes { _ = Counter(label: "te_ingest_dlq_total", dimensions: [("reason", reason)]) }
    }

    func deadLettered(reason: String) {
        Counter(label: "te_ingest_dlq_total", dimensions: [("reason", reason)]).increment()
    }

    func resynced(symbol: String, by count: Int) {
        Counter(label: "te_ingest_book_resyncs_total", dimensions: [("symbol", symbol)]).increment(by: Int64(count))
    }

    /// From when the message entered Kafka: a replay stamps `produced_ns` (its Kafka timestamp is the
    /// recorded receive time, years ago); live producers' Kafka timestamp is the produce time.
    func recordLatency(_ message: KafkaConsumerMessage, writtenAt: TimeInterval) {
        let startNs: Int64
        if let header = message.header("produced_ns"), let ns = Int64(String(decoding: header, as: UTF8.self)) {
            startNs = ns
        } else if let ms = message.timestampMs {
            startNs = ms * 1_000_000
        } else {
            return
        }
        let elapsedNs = Int64(writtenAt * 1e9) - startNs
        // A recorded timestamp from another day says nothing about this pipeline's latency.
        guard elapsedNs >= 0, elapsedNs < 3_600 * 1_000_000_000 else { return }
        latency.record(.nanoseconds(elapsedNs))
    }
}
