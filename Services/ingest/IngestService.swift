import Foundation
import Logging
import MarketData
import Metrics
import ServiceKit
import ServiceLifecycle
import TEKafka
import TEModels
import TERedis
import Tracing

/// Kafka `ticks` (group `ingest`) → normalize → per batch one atomic Redis script per fence group (each
/// tick shard `te:ticks:{k}` with its fence and books, and `te:dlq` with its fence; see `FencedBatch`) →
/// commit the batch's Kafka offsets. Redis runs one batch's scripts while the next batch is polled and
/// normalized; each tick carries its Kafka source as field `src` (`"<partition>:<offset>"`). The order of
/// those steps (assignment, restore, write, commit, backoff, shutdown) is `IngestCycle`'s; this type
/// performs its actions.
///
/// Effectively-once into Redis. Kafka offsets are committed at most every 200 ms after Redis took the
/// batch, so a crash, a rebalance or a Redis outage re-delivers up to rate × 0.2 s + one batch
/// (≤ `INGEST_BATCH_SIZE`) of messages that are already in Redis. They are not written again: a message's
/// ticks / dead letter are written to a group only if its offset is above the partition's fence there, and
/// the script stores the new fence in the same atomic run. Every script touches one Redis Cluster slot (a
/// group's stream, fence and books share a hash tag). The service keeps the fences locally too (read when
/// partitions are assigned) and skips a redelivered message before normalizing when every group holds it;
/// the scripts' own checks make the cases the local copy cannot see safe: an EVAL retried after a lost
/// reply, a zombie instance still writing a partition the group has moved, two groups reading one topic
/// into the same streams. Kafka commits only bound how much is re-read. Skips are counted in
/// `te_ingest_redelivered_skipped_total`.
///
/// Metrics count what this instance decided to write: in the rare script-side skips (lost reply, zombie,
/// racing group) `te_ingest_ticks_total` / `te_ingest_dlq_total` may count a message another writer wrote;
/// the streams themselves hold it once.
///
/// The normalizer's order books are checkpointed with the fences of their symbols' shards: when a
/// partition is assigned, every group's fence and the books of its symbols are read and the books
/// restored, so the first fresh message meets exactly the book an uninterrupted run would have had. An
/// instance killed between one batch's scripts leaves the groups' fences apart: the messages between the
/// lowest and a group's fence are normalized again for the groups still behind, and a book changed by
/// such a message in a group already past it is put back to its stored checkpoint (which holds that
/// message) rather than changed twice.
///
/// A symbol's spread (`te:spread_bps:SYM`, a latest-value key in another slot) is written after its batch
/// landed, never an older tick's over a newer (`FencedBatch.spread`).
///
/// A re-created topic starts its offsets again at 0, under the old stored offsets (the dev broker is an
/// in-memory mock cluster: every restart re-creates `ticks`, while Redis keeps its data). So before a
/// partition's stored fence is used, it must name the message that was written: it is below the high
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
            metadata: [
                "topic": "\(settings.topic)", "group": "\(settings.group)",
                "group_instance_id": "\(settings.groupInstanceID ?? "")",
                "shards": "\(settings.shards)"
            ])
        defer { redis.close() }
        // The batch in flight is written by a child of this group while the next one is polled and built, so
        // no write outlives the service (IngestCycle awaits it before closing or failing).
        try await withThrowingTaskGroup(of: [FencedBatch.Outcome]?.self) { writes in
            try await consume(consumer, writes: &writes)
        }
    }

    /// Performs `IngestCycle`'s actions; `writes` holds the write in flight (at most one).
    private func consume(
        _ consumer: KafkaConsumer, writes: inout ThrowingTaskGroup<[FencedBatch.Outcome]?, any Error>
    ) async throws {
        let groups = settings.groups
        var books = IngestBooks(
            normalizer: MarketNormalizer(
                depthLevels: settings.depthLevels, snapshotTimeoutNs: settings.snapshotTimeoutNs))
        var cycle = IngestCycle(topic: settings.topic, groups: groups.count)
        var batch: [KafkaConsumerMessage] = []
        var built: BuiltBatch?
        var flight: BuiltBatch?
        var pollError: (any Error)?
        var lastLagUpdate = ContinuousClock.now
        var action = cycle.event(.started)
        while true {
            if !cycle.stopping, Task.isShuttingDownGracefully || Task.isCancelled {
                switch action {
                case .poll, .sleep, .restore: action = cycle.event(.shutdown)
                default: break
                }
            }
            switch action {
            case .poll:
                do {
                    batch = try await consumer.poll(maxMessages: settings.batchSize, timeout: .milliseconds(200))
                } catch {
                    logger.critical("kafka consumer failed", metadata: ["error": "\(error)"])
                    pollError = error
                    action = cycle.event(.pollFailed)
                    continue
                }
                for reset in await consumer.takeOffsetResets() { await report(reset) }
                if ContinuousClock.now - lastLagUpdate > .seconds(1) {
                    lastLagUpdate = .now
                    if let lag = try? await consumer.lag() { metrics.kafkaLag.record(Double(lag)) }
                }
                metrics.consumed.increment(by: Int64(batch.count))
                action = cycle.event(
                    .polled(
                        batch.map { IngestCycle.Position(partition: $0.partition, offset: $0.offset) },
                        generation: consumer.assignmentGeneration, now: .now))
            case .restore(let partition):
                do {
                    let stored = try await storedState(settings.topic, partition, consumer)
                    restore(stored.books, of: partition, into: &books)
                    action = cycle.event(.restored(partition: partition, fences: stored.fences))
                } catch {
                    logger.warning(
                        "reading the stored ingest fences failed; retrying",
                        metadata: ["partition": "\(partition)", "error": "\(error)"])
                    action = cycle.event(.restoreFailed)
                }
            case .build(let fences):
                let next = build(batch, fences: fences, books: &books)
                if next.commands.isEmpty { record(next, outcomes: []) }
                built = next
                action = cycle.event(.built(writes: !next.commands.isEmpty))
            case .send:
                guard let next = built else { preconditionFailure("ingest: send without a built batch") }
                built = nil
                flight = next
                writes.addTask { await write(next) }
                action = cycle.event(.sent)
            case .resend:
                guard let pending = flight else { preconditionFailure("ingest: resend without a write in flight") }
                writes.addTask { await write(pending) }
                action = cycle.event(.sent)
            case .awaitWrite:
                guard let pending = flight else { preconditionFailure("ingest: await without a write in flight") }
                guard let result = try await writes.next() else {
                    preconditionFailure("ingest: no write task for the write in flight")
                }
                if let outcomes = result {
                    record(pending, outcomes: outcomes)
                    flight = nil
                    action = cycle.event(.landed)
                } else {
                    action = cycle.event(.writeFailed)
                }
            case .commit(let offsets):
                do {
                    try await consumer.commit(offsets)
                    action = cycle.event(.committed)
                } catch {
                    metrics.commitFailures.increment()
                    logger.warning("kafka commit failed", metadata: ["error": "\(error)"])
                    action = cycle.event(.commitFailed(retriable: error.isRetriable))
                }
            case .sleep(let delay):
                try? await Task.sleep(for: delay)
                action = cycle.event(.slept)
            case .close:
                // A static member (group.instance.id) does not leave: its partitions wait for its restart until
                // the session times out, instead of moving twice.
                logger.info(
                    settings.groupInstanceID == nil
                        ? "ingest stopping: leaving the consumer group"
                        : "ingest stopping: closing the consumer (static member: partitions kept for its restart)")
                await consumer.close()
                return
            case .fail:
                await consumer.close()
                throw pollError ?? KafkaError(code: .destroyed, message: "kafka consumer failed", isRetriable: false)
            }
        }
    }

    /// One batch's writes: a fenced script per group that has something to write, then the spreads.
    struct BuiltBatch: Sendable {
        var commands: [RedisCommand] = []
        var scripts = 0
        var fresh: [KafkaConsumerMessage] = []
        var redelivered = 0
        var quotes = 0
        var trades = 0
    }

    /// The normalizer with what `restore` needs to keep its books those of the stored fences.
    struct IngestBooks {
        var normalizer: MarketNormalizer
        /// Symbol → the partition whose messages built its book (where its checkpoint is stored).
        var partitions: [String: Int32] = [:]
        /// Symbol → the checkpoint restored at the partition's last assignment.
        var restored: [String: (partition: Int32, checkpoint: Substring)] = [:]

        /// A message at or below its shard's fence changed `symbol`'s book: that change is already in the
        /// stored checkpoint, so the book goes back to it (or away, when none was stored).
        mutating func undo(_ symbol: String, partition: Int32) {
            if let stored = restored[symbol], stored.partition == partition,
                normalizer.restoreBook(symbol, checkpoint: stored.checkpoint)
            {
                return
            }
            normalizer.removeBook(symbol)
            partitions[symbol] = nil
        }
    }

    /// Normalizes the messages of `batch` that some group does not hold yet and builds each group's script.
    private func build(_ batch: [KafkaConsumerMessage], fences: IngestCycle.Fences, books: inout IngestBooks)
        -> BuiltBatch
    {
        let groups = settings.groups
        let dlq = groups.count - 1
        // Reserved so a batch's script buffer is not copied as it grows: a quote with 10-level depth takes
        // ~530 bytes of script arguments; dead letters are rare.
        var scripts = groups.indices.map { k in
            FencedBatch(
                offsetsKey: groups[k].fenceKey, booksKey: groups[k].booksKey,
                capacity: k == dlq ? 4096 : batch.count * 640 / max(1, groups.count - 1))
        }
        var out = BuiltBatch()
        // A symbol's last fresh spread of the batch (a latest-value key) and the messages by position.
        var spreads: [String: (bps: Double, tsNs: Int64)] = [:]
        var changedBooks: [String: Int32] = [:]
        var index: [IngestCycle.Position: Int] = [:]
        var lastFresh: [Int32: Int64] = [:]
        let none = Array(repeating: Int64(-1), count: groups.count)
        for (i, message) in batch.enumerated() {
            let position = IngestCycle.Position(partition: message.partition, offset: message.offset)
            if IngestCycle.written(position, fences: fences) {
                out.redelivered += 1
                continue
            }
            index[position] = i
            lastFresh[message.partition] = message.offset
            let fence = fences[message.partition] ?? none
            var wrote = false
            var fenced = false
            let receiveTsNs = Self.receiveTime(message)
            let normalized = books.normalizer.normalize(
                payload: message.value, receiveTsNs: receiveTsNs,
                key: message.key.map { String(decoding: $0, as: UTF8.self) })
            switch normalized {
            case .ticks(let ticks):
                let source = Self.lineage(message)
                for tick in ticks {
                    let k = settings.shard(of: tick.symbol)
                    guard message.offset > fence[k] else {
                        fenced = true
                        continue
                    }
                    guard var fields = try? tick.streamFields(capacity: Self.fieldsCapacity(of: tick)) else { continue }
                    fields.field("src", source)
                    // The head of the pipeline: a sampled tick starts a trace and carries it in `tp` (last).
                    if let trace = StreamTrace.head("ingest tick") {
                        trace.span.attributes["te.symbol"] = tick.symbol
                        trace.span.attributes["messaging.kafka.partition"] = Int(message.partition)
                        trace.span.attributes["messaging.kafka.offset"] = Int(message.offset)
                        trace.span.end()
                        fields.field(StreamTrace.field, trace.tp)
                    }
                    scripts[k].beginMessage(partition: message.partition, offset: message.offset)
                    scripts[k].xadd(groups[k].stream, maxLen: settings.streamMaxLen, fields: fields)
                    wrote = true
                    if tick.kind == .quote, let bid = tick.bid, let ask = tick.ask {
                        out.quotes += 1
                        spreads[tick.symbol] = ((ask - bid) / ((ask + bid) / 2) * 1e4, tick.tsNs)
                    } else {
                        out.trades += 1
                    }
                }
            case .ignored:
                break
            case .rejected(let rejection):
                guard message.offset > fence[dlq] else {
                    fenced = true
                    break
                }
                metrics.deadLettered(reason: rejection.code)
                let letter = DeadLetter(
                    stage: "ingest", reason: "\(rejection.code): \(rejection.detail)",
                    payloadBytes: message.value, source: message.source,
                    tsNs: receiveTsNs)
                if let fields = try? StreamFieldEncoder.encode(letter) {
                    scripts[dlq].beginMessage(partition: message.partition, offset: message.offset)
                    scripts[dlq].xadd(groups[dlq].stream, maxLen: 100_000, fields: fields)
                    wrote = true
                }
                logger.debug("dead-lettered", metadata: ["source": "\(message.source)", "reason": "\(rejection)"])
            }
            for symbol in books.normalizer.takeChangedBooks() {
                let k = settings.shard(of: symbol)
                if message.offset <= fence[k] {
                    books.undo(symbol, partition: message.partition)
                    continue
                }
                // The message marks the shard's fence even without a tick there: its book change is stored.
                scripts[k].beginMessage(partition: message.partition, offset: message.offset)
                changedBooks[symbol] = message.partition
                wrote = true
            }
            if wrote {
                out.fresh.append(message)
            } else if fenced {
                out.redelivered += 1
            }
        }
        for event in books.normalizer.takeBookEvents() { report(event) }
        // Every group's fence moves to each partition's last message of the batch (with or without output
        // there), so the lowest fence, which `IngestCycle.written` checks, skips a redelivered message
        // before it is normalized again.
        for (partition, offset) in lastFresh {
            let fence = fences[partition] ?? none
            for k in scripts.indices where offset > fence[k] && scripts[k].last[partition] != offset {
                scripts[k].beginMessage(partition: partition, offset: offset)
            }
        }
        for k in scripts.indices {
            for (partition, offset) in scripts[k].last {
                if let i = index[IngestCycle.Position(partition: partition, offset: offset)] {
                    scripts[k].fingerprint(of: batch[i])
                }
            }
        }
        for (symbol, partition) in changedBooks {
            let k = settings.shard(of: symbol)
            guard let offset = scripts[k].last[partition], let checkpoint = books.normalizer.checkpoint(ofBook: symbol)
            else { continue }
            scripts[k].book(partition: partition, offset: offset, symbol: symbol, checkpoint: checkpoint)
            books.partitions[symbol] = partition
        }
        for script in scripts where script.messages > 0 {
            out.commands.append(script.command)
            out.scripts += 1
        }
        if out.scripts > 0 {
            for (symbol, spread) in spreads {
                out.commands.append(
                    FencedBatch.spread(
                        key: settings.spreadPrefix + symbol, bps: spread.bps, tsNs: spread.tsNs,
                        expireSeconds: settings.spreadTTLSeconds))
            }
        }
        return out
    }

    /// Metrics of a batch Redis took.
    private func record(_ batch: BuiltBatch, outcomes: [FencedBatch.Outcome]) {
        let writtenAt = Date().timeIntervalSince1970
        for message in batch.fresh { metrics.recordLatency(message, writtenAt: writtenAt) }
        let redelivered = batch.redelivered + outcomes.reduce(0) { $0 + $1.skipped }
        if redelivered > 0 {
            metrics.redeliveredSkipped.increment(by: Int64(redelivered))
            logger.debug("skipped redelivered messages already in redis", metadata: ["count": "\(redelivered)"])
        }
        metrics.quotes.increment(by: Int64(batch.quotes))
        metrics.trades.increment(by: Int64(batch.trades))
    }

    /// Bytes reserved for a tick's fields (with `src` and a trace's `tp`), so its depth levels do not make
    /// the writer copy itself as it grows: ~24 bytes per level beside ~210 for the rest.
    static func fieldsCapacity(of tick: Tick) -> Int { 224 + 24 * ((tick.bids?.count ?? 0) + (tick.asks?.count ?? 0)) }

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

    /// One attempt at the batch's pipeline (the fenced scripts, then the spreads); nil when it failed
    /// (`IngestCycle` backs off and re-sends: safe even when a lost reply hides that Redis ran it, since the
    /// scripts skip what is already written and a spread never goes back in time).
    private func write(_ batch: BuiltBatch) async -> [FencedBatch.Outcome]? {
        do {
            // Replicated: the Kafka offsets are committed once this returns, so on a cluster the batch must be on
            // its masters' replicas first, or a failover right after could take back ticks nobody re-reads.
            let replies = try await redis.pipeline(batch.commands, replicated: true)
            var outcomes: [FencedBatch.Outcome] = []
            for reply in replies.prefix(batch.scripts) {
                let outcome = try FencedBatch.outcome(reply)
                for error in outcome.errors {
                    // Retrying cannot fix a refused command; log it and go on rather than stall the topic.
                    logger.error("redis refused a command", metadata: ["error": "\(error)"])
                }
                outcomes.append(outcome)
            }
            for reply in replies.dropFirst(batch.scripts) {
                if case .error(let message) = reply {
                    logger.error("redis refused a spread update", metadata: ["error": "\(message)"])
                }
            }
            return outcomes
        } catch {
            metrics.redisRetries.increment()
            logger.warning("redis write failed; retrying (offsets not committed)", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// What Redis holds for a partition: its fence in each group (-1 when none) and the checkpoints of the
    /// books its messages built (symbol → checkpoint text), each group's read in one atomic step.
    struct StoredState {
        var fences: [Int64]
        var books: [(symbol: String, checkpoint: Substring)]
    }

    /// The partition's stored state in every group.
    /// A stored offset that does not name the message written there belongs to an earlier log of the topic
    /// (re-created: its offsets start again at 0) and is forgotten with its group's books, so the new log
    /// is written from its start with empty books: at or above the high watermark the message does not
    /// exist; inside the log, the message there must have the stored fingerprint (one short read of that
    /// message per partition, offset and assignment). Books without a stored offset (the fence was
    /// deleted) are forgotten too.
    private func storedState(_ topic: String, _ partition: Int32, _ consumer: KafkaConsumer) async throws -> StoredState
    {
        let groups = settings.groups
        let replies = try await redis.pipeline(
            groups.map {
                RedisCommand("EVAL", FencedBatch.restoreScript, "2", $0.fenceKey, $0.booksKey, String(partition))
            })
        var state = StoredState(fences: [], books: [])
        var watermarks: (low: Int64, high: Int64)?
        var fingerprints: [Int64: String?] = [:]
        for (group, reply) in zip(groups, replies) {
            try reply.throwingError()
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
                        metadata: [
                            "key": "\(group.booksKey)", "partition": "\(partition)", "symbols": "\(books.map(\.symbol))"
                        ])
                    try await forget(partition, in: group, stale: "")
                }
                state.fences.append(-1)
                continue
            }
            guard let stored = FencedBatch.parseStored(text) else {
                logger.error(
                    "ignoring a stored offset that is not an integer",
                    metadata: ["key": "\(group.fenceKey)", "partition": "\(partition)", "value": "\(text)"])
                state.fences.append(-1)
                continue
            }
            let (low, high): (Int64, Int64)
            if let known = watermarks {
                (low, high) = known
            } else {
                (low, high) = try await consumer.watermarks(topic: topic, partition: partition)
                watermarks = (low, high)
            }
            var stale: String?
            if stored.offset >= high {
                stale = "stored ingest offset is beyond the partition's end (topic re-created?): forgetting it"
            } else if let expected = stored.fingerprint, stored.offset >= low {
                let found: String?
                if let known = fingerprints[stored.offset] {
                    found = known
                } else {
                    let message = try await KafkaConsumer.message(
                        at: stored.offset, topic: topic, partition: partition, configuration: settings.kafka,
                        logger: logger)
                    found = message.map(FencedBatch.fingerprint)
                    fingerprints[stored.offset] = found
                }
                if found != String(expected) {
                    stale =
                        "the message at the stored ingest offset is not the one written (topic re-created?): forgetting it"
                }
            }
            guard let stale else {
                state.fences.append(stored.offset)
                state.books += books
                continue
            }
            logger.warning(
                "\(stale)",
                metadata: [
                    "key": "\(group.fenceKey)", "partition": "\(partition)", "stored": "\(text)",
                    "low_watermark": "\(low)", "high_watermark": "\(high)"
                ])
            try await forget(partition, in: group, stale: text)
            state.fences.append(-1)
        }
        return state
    }

    private func forget(_ partition: Int32, in group: IngestSettings.FenceGroup, stale: String) async throws {
        _ = try await redis.send(
            RedisCommand(
                "EVAL", FencedBatch.forgetScript, "2", group.fenceKey, group.booksKey, String(partition), stale)
        ).throwingError()
    }

    /// Makes the books of `partition`'s symbols those stored with its fences: restored from their
    /// checkpoints, and forgotten where Redis has none (a book this instance built before the partition
    /// went away and came back is no longer the partition's state).
    private func restore(
        _ stored: [(symbol: String, checkpoint: Substring)], of partition: Int32, into books: inout IngestBooks
    ) {
        let symbols = Set(stored.map(\.symbol))
        for (symbol, owner) in books.partitions where owner == partition && !symbols.contains(symbol) {
            books.normalizer.removeBook(symbol)
            books.partitions[symbol] = nil
        }
        for (symbol, restored) in books.restored where restored.partition == partition { books.restored[symbol] = nil }
        for (symbol, checkpoint) in stored {
            if books.normalizer.restoreBook(symbol, checkpoint: checkpoint) {
                books.partitions[symbol] = partition
                books.restored[symbol] = (partition, checkpoint)
            } else {
                books.partitions[symbol] = nil
                logger.error(
                    "stored order book is not a valid checkpoint: starting it afresh (no depth until the next snapshot)",
                    metadata: ["key": "\(settings.booksKey)", "symbol": "\(symbol)", "partition": "\(partition)"])
            }
        }
        if !stored.isEmpty {
            logger.info(
                "order books restored",
                metadata: ["partition": "\(partition)", "symbols": "\(stored.map(\.symbol).sorted())"])
        }
    }

    /// An offset reset: counted, logged with the range that could not be read, and dead-lettered (so
    /// `te dlq` shows it beside the messages ingest could not use). Written outside the fenced batches: it
    /// is an event of the group, not of a message (a crash right here may lose or repeat the letter).
    private func report(_ reset: KafkaOffsetReset) async {
        metrics.offsetResets.increment()
        metrics.lostMessages.increment(by: reset.lostMessages)
        let range = "\(reset.requested)…\(max(reset.requested, reset.lowWatermark) - 1)"
        let what =
            reset.lostMessages > 0
            ? "kafka offset reset: messages deleted by retention before ingest read them"
            : "kafka offset reset: the committed offset is beyond the log's end (log truncated or topic re-created)"
        let fields: [(String, String)] = [
            ("topic", reset.topic), ("partition", "\(reset.partition)"), ("from_offset", "\(reset.requested)"),
            ("to_offset", "\(reset.lostMessages > 0 ? reset.lowWatermark - 1 : reset.requested)"),
            ("lost_messages", "\(reset.lostMessages)"), ("low_watermark", "\(reset.lowWatermark)"),
            ("high_watermark", "\(reset.highWatermark)"), ("resumed_at", "\(reset.resumedAt)"),
            ("librdkafka_reason", reset.reason)
        ]
        logger.error("\(what)", metadata: Logger.Metadata(uniqueKeysWithValues: fields.map { ($0.0, .string($0.1)) }))
        let letter = DeadLetter(
            stage: "ingest",
            reason:
                "offset_reset: \(reset.topic)/\(reset.partition) offsets \(range) not available (log \(reset.lowWatermark)…\(reset.highWatermark - 1)); \(reset.lostMessages) messages lost; resumed at \(reset.resumedAt)",
            payload: JSONText.object(fields), tsNs: Int64(Date().timeIntervalSince1970 * 1e9))
        var backoff = Duration.milliseconds(100)
        for _ in 1...5 {
            do {
                let fields = try StreamFieldEncoder.encode(letter)
                _ = try await redis.send(
                    RedisCommand(
                        ["XADD", settings.dlqStream, "MAXLEN", "~", "100000", "*"] + fields.flatMap { [$0.0, $0.1] })
                ).throwingError()
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
                    "diff_first_update_id": "\(firstU.map(String.init) ?? "-")",
                    "diff_last_update_id": "\(lastU.map(String.init) ?? "-")",
                    "diff_previous_update_id": "\(previousU.map(String.init) ?? "-")"
                ])
        case .snapshotOverdue(let waitedNs):
            metrics.snapshotOverdue(symbol: symbol)
            logger.error(
                "order book still out of sync: no depth snapshot since the gap; quotes carry no depth",
                metadata: ["symbol": "\(symbol)", "waited_ms": "\(waitedNs / 1_000_000)"])
        case .resynced(let waitedNs):
            metrics.resynced(symbol: symbol)
            logger.info(
                "order book back in sync after a gap",
                metadata: ["symbol": "\(symbol)", "waited_ms": "\(waitedNs / 1_000_000)"])
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
    /// Buckets from `MetricHelp.durationBuckets`.
    let latency = Metrics.Timer(label: "te_ingest_latency_seconds")

    init() {
        // Registered at 0 so alerts on rate() have a series before the first dead letter.
        for reason in NormalizeRejection.codes {
            _ = Counter(label: "te_ingest_dlq_total", dimensions: [("reason", reason)])
        }
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
        latency.recordNanoseconds(elapsedNs)
    }
}
