import Foundation
import Logging
import MarketData
import Metrics
import Prometheus
import ServiceKit
import ServiceLifecycle
import TEKafka
import TEModels
import TERedis
import Tracing

/// Kafka `ticks` (group `ingest`) → normalize → one atomic Redis script per batch (te:ticks, spread keys,
/// te:dlq, and the partitions' last written offsets) → commit the batch's Kafka offsets. Redis runs one
/// batch's script while the next batch is polled and normalized; each tick carries its Kafka source as
/// field `src` (`"<partition>:<offset>"`).
///
/// Effectively-once into Redis. Kafka offsets are committed at most every `commitInterval` (200 ms) after
/// Redis took the batch, so a crash, a rebalance or a Redis outage re-delivers up to rate × 0.2 s + one batch
/// (≤ `INGEST_BATCH_SIZE`) of messages that are already in Redis. They are not written again: each batch goes
/// to Redis as one `FencedBatch` script that writes a message's ticks / dead letter only if its offset is
/// above the partition's last written offset in hash `te:ingest:offsets:{topic}` and stores the new offsets
/// in the same atomic script run. The service also keeps those offsets locally (read when partitions are
/// assigned) and skips redelivered messages before building commands; the script's own check makes the
/// cases the local copy cannot see safe too: an EVAL retried after a lost reply, a zombie instance still
/// writing a partition the group has moved, two groups reading one topic into the same stream. Kafka
/// commits now only bound how much is re-read. Skips are counted in `te_ingest_redelivered_skipped_total`.
///
/// Metrics count what this instance decided to write: in the rare script-side skips (lost reply, zombie,
/// racing group) `te_ingest_ticks_total` / `te_ingest_dlq_total` may count a message another writer wrote;
/// the streams themselves hold it once.
///
/// The normalizer's order books are checkpointed with the offsets (see `FencedBatch`): when a partition is
/// assigned, its stored offset and the books of its symbols are read in one step and the books restored, so
/// the first fresh message meets exactly the book an uninterrupted run would have had. Redelivered messages
/// (at or below the stored offset) are therefore not normalized again: the restored books already hold them.
///
/// A re-created topic starts its offsets again at 0, under the old stored offsets (the dev broker is an
/// in-memory mock cluster: every restart re-creates `ticks`, while Redis keeps its data). So before a
/// partition's stored offset is used, it must name the message that was written: it is below the high
/// watermark and the message at that offset has the stored fingerprint (timestamp + hash of key and
/// value, read once per partition and assignment). Otherwise it is deleted (compare-and-delete) with a
/// warning and the partition is written from where the group reads. A stored offset below the low
/// watermark (retention) is kept: the group cannot read anything at or below it any more.
struct IngestService: Service {
    let settings: IngestSettings
    let redis: RedisClient
    let logger: Logger
    let metrics: IngestMetrics
    /// The consumer, once created, for the readiness check.
    let kafka: KafkaReadiness

    func run() async throws {
        let consumer = try KafkaConsumer(
            configuration: settings.kafka, groupID: settings.group, groupInstanceID: settings.groupInstanceID,
            topics: [settings.topic], logger: logger)
        kafka.set(consumer)
        logger.info(
            "ingest consuming",
            metadata: ["topic": "\(settings.topic)", "group": "\(settings.group)", "group_instance_id": "\(settings.groupInstanceID ?? "")"])
        var normalizer = MarketNormalizer(depthLevels: settings.depthLevels, snapshotTimeoutNs: settings.snapshotTimeoutNs)
        // Symbol → the partition whose messages built its book (where its checkpoint is stored).
        var bookPartitions: [String: Int32] = [:]
        var lastLagUpdate = ContinuousClock.now
        // Offsets whose messages are in Redis, committed at most every `commitInterval` (a synchronous commit
        // per small batch would cap throughput at the coordinator's round trip).
        var uncommitted: [String: KafkaOffset] = [:]
        var lastCommit = ContinuousClock.now
        let commitInterval = Duration.milliseconds(200)
        // Partition → offset of its last message known to be in Redis; a partition missing here is read from
        // Redis before its messages are written. Emptied on every assignment: a partition that was away may
        // have been written by another instance meanwhile.
        var lastWritten: [Int32: Int64] = [:]
        var assignmentSeen = -1
        defer { redis.close() }
        // The batch whose script Redis is running while the next one is read and normalized. Its offsets
        // join `uncommitted` only once Redis took it (commit after write); the next script is sent only
        // after it succeeded, so a partition's writes stay in order and a fence never passes a failed batch.
        var inFlight: InFlightBatch?
        /// Waits for the batch in flight; false when a graceful shutdown came first (nothing committed).
        func land(_ pending: InFlightBatch?) async -> Bool {
            guard let pending else { return true }
            inFlight = nil
            var outcome = FencedBatch.Outcome(applied: 0, skipped: 0, errors: [])
            if let write = pending.write {
                guard let written = await write.value else { return false }
                outcome = written
            }
            let writtenAt = Date().timeIntervalSince1970
            for message in pending.fresh { metrics.recordLatency(message, writtenAt: writtenAt) }
            let redelivered = pending.redelivered + outcome.skipped
            if redelivered > 0 {
                metrics.redeliveredSkipped.increment(by: Int64(redelivered))
                logger.debug("skipped redelivered messages already in redis", metadata: ["count": "\(redelivered)"])
            }
            metrics.quotes.increment(by: Int64(pending.quotes))
            metrics.trades.increment(by: Int64(pending.trades))
            for offset in pending.offsets { uncommitted["\(offset.topic)/\(offset.partition)"] = offset }
            return true
        }
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let batch: [KafkaConsumerMessage]
            do {
                batch = try await consumer.poll(maxMessages: settings.batchSize, timeout: .milliseconds(200))
            } catch {
                logger.critical("kafka consumer failed", metadata: ["error": "\(error)"])
                _ = await land(inFlight)
                await consumer.close()
                throw error
            }
            if batch.isEmpty, !(await land(inFlight)) { break }
            for reset in await consumer.takeOffsetResets() { await report(reset) }
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

            if consumer.assignmentGeneration != assignmentSeen {
                // The stored state of a partition is read only with no write of ours in flight.
                guard await land(inFlight) else { break }
                assignmentSeen = consumer.assignmentGeneration
                lastWritten.removeAll(keepingCapacity: true)
            }
            for message in batch where lastWritten[message.partition] == nil {
                guard await land(inFlight), let stored = await storedState(message.topic, message.partition, consumer) else { break }
                lastWritten[message.partition] = stored.offset
                restore(stored.books, of: message.partition, into: &normalizer, bookPartitions: &bookPartitions)
            }
            if Task.isShuttingDownGracefully { break }

            // Each partition's last fresh message: its fingerprint and the batch's books and spreads go with it.
            var lastFresh: [Int32: Int] = [:]
            for (i, message) in batch.enumerated() where message.offset > lastWritten[message.partition, default: -1] {
                lastFresh[message.partition] = i
            }
            var script = FencedBatch(offsetsKey: settings.offsetsKey, booksKey: settings.booksKey, capacity: batch.count * 256)
            var next = InFlightBatch(offsets: KafkaOffset.after(batch))
            var changedBooks: [String: Int32] = [:]
            // Only a symbol's last spread of the batch is written (a latest-value key), with its partition's last
            // fresh message: a symbol lives on one partition, and if that message is fenced as already written,
            // so are the earlier ones and a writer that got that far wrote a spread at least as new.
            var spreads: [String: (partition: Int32, bps: Double)] = [:]
            for (i, message) in batch.enumerated() {
                if message.offset <= lastWritten[message.partition, default: -1] {
                    next.redelivered += 1
                    continue
                }
                next.fresh.append(message)
                let receiveTsNs = Self.receiveTime(message)
                let normalized = normalizer.normalize(payload: message.value, receiveTsNs: receiveTsNs, key: message.key.map { String(decoding: $0, as: UTF8.self) })
                for symbol in normalizer.takeChangedBooks() { changedBooks[symbol] = message.partition }
                script.beginMessage(partition: message.partition, offset: message.offset)
                switch normalized {
                case .ticks(let ticks):
                    let source = Self.lineage(message)
                    for tick in ticks {
                        guard var fields = try? tick.streamFields() else { continue }
                        fields.field("src", source)
                        // The head of the pipeline: a sampled tick starts a trace and carries it in `tp` (last).
                        if let trace = StreamTrace.head("ingest tick") {
                            trace.span.attributes["te.symbol"] = tick.symbol
                            trace.span.attributes["messaging.kafka.partition"] = Int(message.partition)
                            trace.span.attributes["messaging.kafka.offset"] = Int(message.offset)
                            trace.span.end()
                            fields.field(StreamTrace.field, trace.tp)
                        }
                        script.xadd(settings.ticksStream, maxLen: settings.streamMaxLen, fields: fields)
                        if tick.kind == .quote, let bid = tick.bid, let ask = tick.ask {
                            next.quotes += 1
                            spreads[tick.symbol] = (message.partition, (ask - bid) / ((ask + bid) / 2) * 1e4)
                        } else {
                            next.trades += 1
                        }
                    }
                case .ignored:
                    break
                case .rejected(let rejection):
                    metrics.deadLettered(reason: rejection.code)
                    let letter = DeadLetter(
                        stage: "ingest", reason: "\(rejection.code): \(rejection.detail)",
                        payloadBytes: message.value, source: message.source,
                        tsNs: receiveTsNs)
                    if let fields = try? StreamFieldEncoder.encode(letter) {
                        script.xadd(settings.dlqStream, maxLen: 100_000, fields: fields)
                    }
                    logger.debug("dead-lettered", metadata: ["source": "\(message.source)", "reason": "\(rejection)"])
                }
                if lastFresh[message.partition] == i {
                    for (symbol, spread) in spreads where spread.partition == message.partition {
                        script.set(settings.spreadPrefix + symbol, "\(spread.bps)", expireSeconds: settings.spreadTTLSeconds)
                    }
                }
            }
            for event in normalizer.takeBookEvents() { report(event) }
            for i in lastFresh.values { script.fingerprint(of: batch[i]) }
            for (symbol, partition) in changedBooks {
                guard let i = lastFresh[partition], let checkpoint = normalizer.checkpoint(ofBook: symbol) else { continue }
                script.book(partition: partition, offset: batch[i].offset, symbol: symbol, checkpoint: checkpoint)
                bookPartitions[symbol] = partition
            }
            for (partition, i) in lastFresh { lastWritten[partition] = batch[i].offset }
            // Redis runs batch N while this loop polls and normalizes batch N+1; N+1 is sent once N is in.
            guard await land(inFlight) else { break }
            if script.messages > 0 {
                next.write = Task { [script] in await write(script) }
                inFlight = next
            } else if !(await land(next)) {
                break
            }
        }
        // Shutting down: the batch in flight is committed if Redis took it; one not sent is re-read (and
        // fenced) after restart.
        _ = await land(inFlight)
        if !uncommitted.isEmpty { await commit(consumer, Array(uncommitted.values)) }
        // A static member (group.instance.id) does not leave: its partitions wait for its restart until the
        // session times out, instead of moving twice.
        logger.info(
            settings.groupInstanceID == nil
                ? "ingest stopping: leaving the consumer group" : "ingest stopping: closing the consumer (static member: partitions kept for its restart)")
        await consumer.close()
    }

    /// A batch sent to Redis and what to record once Redis took it.
    struct InFlightBatch {
        /// The script's run: nil when a graceful shutdown came before Redis took it.
        var write: Task<FencedBatch.Outcome?, Never>?
        var offsets: [KafkaOffset]
        var fresh: [KafkaConsumerMessage] = []
        var redelivered = 0
        var quotes = 0
        var trades = 0
    }

    /// A tick's lineage, its field `src`: `"<partition>:<offset>"` of the Kafka message it came from.
    static func lineage(_ message: KafkaConsumerMessage) -> String { "\(message.partition):\(message.offset)" }

    /// The header `ts_ns` (exact receive time), else the Kafka timestamp, else now.
    static func receiveTime(_ message: KafkaConsumerMessage) -> Int64 {
        if let header = message.header("ts_ns"), let ns = Int64(String(decoding: header, as: UTF8.self)), ns > 0 {
            return ns
        }
        if let ms = message.timestampMs, ms > 0 { return ms * 1_000_000 }
        return Int64(Date().timeIntervalSince1970 * 1e9)
    }

    /// Runs the batch script until Redis accepts it, backing off while Redis is unreachable. Retrying is safe
    /// even when a lost reply hides that Redis ran it: the script skips what is already written. Nil when a
    /// graceful shutdown came first (the batch is then neither written nor committed: it is re-read after
    /// restart).
    private func write(_ batch: FencedBatch) async -> FencedBatch.Outcome? {
        var backoff = Duration.milliseconds(100)
        while true {
            do {
                let outcome = try FencedBatch.outcome(try await redis.send(batch.command))
                for error in outcome.errors {
                    // Retrying cannot fix a refused command; log it and go on rather than stall the topic.
                    logger.error("redis refused a command", metadata: ["error": "\(error)"])
                }
                return outcome
            } catch {
                metrics.redisRetries.increment()
                logger.warning("redis write failed; retrying (offsets not committed)", metadata: ["error": "\(error)", "backoff": "\(backoff)"])
                if Task.isShuttingDownGracefully { return nil }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    /// What Redis holds for a partition: its last written offset (-1 when none) and the checkpoints of the
    /// books its messages built (symbol → checkpoint text), read in one atomic step.
    struct StoredState {
        var offset: Int64
        var books: [(symbol: String, checkpoint: Substring)]
        static let none = StoredState(offset: -1, books: [])
    }

    /// The partition's stored state, or nil when shutting down first.
    /// A stored offset that does not name the message written there belongs to an earlier log of the topic
    /// (re-created: its offsets start again at 0) and is forgotten with its books, so the new log is written
    /// from its start with empty books: at or above the high watermark the message does not exist; inside the
    /// log, the message there must have the stored fingerprint (one short read of that message per partition
    /// and assignment). Books without a stored offset (the offsets hash was deleted) are forgotten too.
    private func storedState(_ topic: String, _ partition: Int32, _ consumer: KafkaConsumer) async -> StoredState? {
        var backoff = Duration.milliseconds(100)
        while !Task.isShuttingDownGracefully {
            do {
                let reply = try await redis.send(RedisCommand(
                    "EVAL", FencedBatch.restoreScript, "2", settings.offsetsKey, settings.booksKey, String(partition))).throwingError()
                guard let items = reply.array, items.count == 2, let text = items[0].string else {
                    throw RedisError(.unexpectedReply, "ingest restore script replied \(reply)")
                }
                let bookItems = items[1].array ?? []
                var books: [(symbol: String, checkpoint: Substring)] = []
                for j in stride(from: 0, to: bookItems.count - 1, by: 2) {
                    guard let symbol = bookItems[j].string, let value = bookItems[j + 1].string,
                        let checkpoint = FencedBatch.checkpoint(inBookValue: value, partition: partition)
                    else { continue }
                    books.append((symbol, checkpoint))
                }
                guard !text.isEmpty else {
                    if !books.isEmpty {
                        logger.warning(
                            "order books stored without an offset for their partition: forgetting them",
                            metadata: ["key": "\(settings.booksKey)", "partition": "\(partition)", "symbols": "\(books.map(\.symbol))"])
                        try await forget(partition, stale: "")
                    }
                    return StoredState.none
                }
                guard let stored = FencedBatch.parseStored(text) else {
                    logger.error("ignoring a stored offset that is not an integer", metadata: ["key": "\(settings.offsetsKey)", "partition": "\(partition)", "value": "\(text)"])
                    return StoredState.none
                }
                let (low, high) = try await consumer.watermarks(topic: topic, partition: partition)
                var stale: String?
                if stored.offset >= high {
                    stale = "stored ingest offset is beyond the partition's end (topic re-created?): forgetting it"
                } else if let expected = stored.fingerprint, stored.offset >= low {
                    let message = try await KafkaConsumer.message(
                        at: stored.offset, topic: topic, partition: partition, configuration: settings.kafka, logger: logger)
                    if message.map(FencedBatch.fingerprint) != String(expected) {
                        stale = "the message at the stored ingest offset is not the one written (topic re-created?): forgetting it"
                    }
                }
                guard let stale else { return StoredState(offset: stored.offset, books: books) }
                logger.warning(
                    "\(stale)",
                    metadata: ["key": "\(settings.offsetsKey)", "partition": "\(partition)", "stored": "\(text)", "low_watermark": "\(low)", "high_watermark": "\(high)"])
                try await forget(partition, stale: text)
                return StoredState.none
            } catch {
                logger.warning("reading the stored ingest offset failed; retrying", metadata: ["partition": "\(partition)", "error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
        return nil
    }

    private func forget(_ partition: Int32, stale: String) async throws {
        _ = try await redis.send(RedisCommand(
            "EVAL", FencedBatch.forgetScript, "2", settings.offsetsKey, settings.booksKey, String(partition), stale)).throwingError()
    }

    /// Makes the books of `partition`'s symbols those stored with its offset: restored from their
    /// checkpoints, and forgotten where Redis has none (a book this instance built before the partition
    /// went away and came back is no longer the partition's state).
    private func restore(
        _ books: [(symbol: String, checkpoint: Substring)], of partition: Int32, into normalizer: inout MarketNormalizer,
        bookPartitions: inout [String: Int32]
    ) {
        let stored = Set(books.map(\.symbol))
        for (symbol, owner) in bookPartitions where owner == partition && !stored.contains(symbol) {
            normalizer.removeBook(symbol)
            bookPartitions[symbol] = nil
        }
        for (symbol, checkpoint) in books {
            if normalizer.restoreBook(symbol, checkpoint: checkpoint) {
                bookPartitions[symbol] = partition
            } else {
                bookPartitions[symbol] = nil
                logger.error(
                    "stored order book is not a valid checkpoint: starting it afresh (no depth until the next snapshot)",
                    metadata: ["key": "\(settings.booksKey)", "symbol": "\(symbol)", "partition": "\(partition)"])
            }
        }
        if !books.isEmpty {
            logger.info("order books restored", metadata: ["partition": "\(partition)", "symbols": "\(books.map(\.symbol).sorted())"])
        }
    }

    /// An offset reset: counted, logged with the range that could not be read, and dead-lettered (so
    /// `te dlq` shows it beside the messages ingest could not use). Written outside the fenced batches: it
    /// is an event of the group, not of a message (a crash right here may lose or repeat the letter).
    private func report(_ reset: KafkaOffsetReset) async {
        metrics.offsetResets.increment()
        metrics.lostMessages.increment(by: reset.lostMessages)
        let range = "\(reset.requested)…\(max(reset.requested, reset.lowWatermark) - 1)"
        let what = reset.lostMessages > 0
            ? "kafka offset reset: messages deleted by retention before ingest read them"
            : "kafka offset reset: the committed offset is beyond the log's end (log truncated or topic re-created)"
        let fields: [(String, String)] = [
            ("topic", reset.topic), ("partition", "\(reset.partition)"), ("from_offset", "\(reset.requested)"),
            ("to_offset", "\(reset.lostMessages > 0 ? reset.lowWatermark - 1 : reset.requested)"),
            ("lost_messages", "\(reset.lostMessages)"), ("low_watermark", "\(reset.lowWatermark)"),
            ("high_watermark", "\(reset.highWatermark)"), ("resumed_at", "\(reset.resumedAt)"),
            ("librdkafka_reason", reset.reason),
        ]
        logger.error("\(what)", metadata: Logger.Metadata(uniqueKeysWithValues: fields.map { ($0.0, .string($0.1)) }))
        let letter = DeadLetter(
            stage: "ingest",
            reason: "offset_reset: \(reset.topic)/\(reset.partition) offsets \(range) not available (log \(reset.lowWatermark)…\(reset.highWatermark - 1)); \(reset.lostMessages) messages lost; resumed at \(reset.resumedAt)",
            payload: JSONText.object(fields), tsNs: Int64(Date().timeIntervalSince1970 * 1e9))
        var backoff = Duration.milliseconds(100)
        for _ in 1...5 {
            do {
                let fields = try StreamFieldEncoder.encode(letter)
                _ = try await redis.send(RedisCommand(
                    ["XADD", settings.dlqStream, "MAXLEN", "~", "100000", "*"] + fields.flatMap { [$0.0, $0.1] })).throwingError()
                return
            } catch {
                logger.warning("writing the offset-reset dead letter failed; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = backoff * 2
            }
        }
    }

    /// Metrics and a log line for a change in a book's sync.
    private func report(_ event: BookEvent) {
        let symbol = event.symbol
        switch event.kind {
        case .gap(let expectedAfter, let firstU, let lastU, let previousU):
            metrics.bookGap(symbol: symbol)
            logger.warning(
                "order book gap: dropped the book; quotes carry no depth until the next snapshot",
                metadata: [
                    "symbol": "\(symbol)", "expected_after_update_id": "\(expectedAfter)",
                    "diff_first_update_id": "\(firstU.map(String.init) ?? "-")", "diff_last_update_id": "\(lastU.map(String.init) ?? "-")",
                    "diff_previous_update_id": "\(previousU.map(String.init) ?? "-")",
                ])
        case .snapshotOverdue(let waitedNs):
            metrics.snapshotOverdue(symbol: symbol)
            logger.error(
                "order book still out of sync: no depth snapshot since the gap; quotes carry no depth",
                metadata: ["symbol": "\(symbol)", "waited_ms": "\(waitedNs / 1_000_000)"])
        case .resynced(let waitedNs):
            metrics.resynced(symbol: symbol)
            logger.info("order book back in sync after a gap", metadata: ["symbol": "\(symbol)", "waited_ms": "\(waitedNs / 1_000_000)"])
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
    /// Re-delivered messages (at or below the partition's stored last written offset) not written again.
    let redeliveredSkipped = Counter(label: "te_ingest_redelivered_skipped_total")
    /// Committed offsets found outside the log (retention, truncation); reading resumed at the log's start.
    let offsetResets = Counter(label: "te_ingest_offset_resets_total")
    /// Messages deleted from the log before ingest read them, found at those resets.
    let lostMessages = Counter(label: "te_ingest_lost_messages_total")
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

    /// A sequence gap dropped the symbol's book (`te_ingest_book_resyncs_total` counts these too, under
    /// its older name); `te_ingest_book_out_of_sync` is 1 until a snapshot brings it back.
    func bookGap(symbol: String) {
        Counter(label: "te_ingest_book_gaps_total", dimensions: [("symbol", symbol)]).increment()
        Counter(label: "te_ingest_book_resyncs_total", dimensions: [("symbol", symbol)]).increment()
        Gauge(label: "te_ingest_book_out_of_sync", dimensions: [("symbol", symbol)]).record(1)
    }

    func snapshotOverdue(symbol: String) {
        Counter(label: "te_ingest_book_snapshot_overdue_total", dimensions: [("symbol", symbol)]).increment()
    }

    func resynced(symbol: String) {
        Gauge(label: "te_ingest_book_out_of_sync", dimensions: [("symbol", symbol)]).record(0)
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
