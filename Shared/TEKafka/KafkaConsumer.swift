import CRdKafka
import Foundation
import Logging
import Synchronization
import TECore

/// A consumed message, copied out of librdkafka's buffers.
public struct KafkaConsumerMessage: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]
    /// Kafka message timestamp (ms since epoch), when the message has one.
    public var timestampMs: Int64?
    public var headers: [KafkaHeader]

    public func header(_ key: String) -> [UInt8]? { headers.last(where: { $0.key == key })?.value }

    /// `kafka:<topic>/<partition>@<offset>`, as dead letters name their source.
    public var source: String { "kafka:\(topic)/\(partition)@\(offset)" }
}

/// The next offset to read for one partition: commit `processed offset + 1`.
public struct KafkaOffset: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }

    /// The offsets that mark every message of `messages` as done (highest per partition, plus one).
    public static func after(_ messages: some Sequence<KafkaConsumerMessage>) -> [KafkaOffset] {
        var next: [String: KafkaOffset] = [:]
        for m in messages {
            let id = "\(m.topic)\u{0}\(m.partition)"
            if let known = next[id], known.offset > m.offset { continue }
            next[id] = KafkaOffset(topic: m.topic, partition: m.partition, offset: m.offset + 1)
        }
        return Array(next.values)
    }
}

/// A committed offset that the log no longer (or never) had: retention deleted messages nobody read, or
/// the log was truncated or re-created. Reading resumed at `resumedAt`, the log's start.
public struct KafkaOffsetReset: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    /// The offset the group was to read next.
    public var requested: Int64
    /// The log's first and next offsets when the reset happened.
    public var lowWatermark: Int64
    public var highWatermark: Int64
    public var resumedAt: Int64
    /// librdkafka's reason.
    public var reason: String

    /// Offsets `requested ..< lowWatermark`: deleted before they were read (0 when `requested` was past
    /// the log's end instead).
    public var lostMessages: Int64 { max(0, lowWatermark - requested) }

    public init(
        topic: String, partition: Int32, requested: Int64, lowWatermark: Int64, highWatermark: Int64, resumedAt: Int64,
        reason: String
    ) {
        self.topic = topic
        self.partition = partition
        self.requested = requested
        self.lowWatermark = lowWatermark
        self.highWatermark = highWatermark
        self.resumedAt = resumedAt
        self.reason = reason
    }
}

/// A consumer-group member with manual offset commits.
///
/// Every librdkafka call that can block (consumer poll, commit, close) runs on one `BlockingExecutor` owned
/// by this consumer — never on Swift's cooperative pool — and is bridged with a continuation. Rebalance
/// callbacks run inside consumer poll on that queue; they log and apply the assignment.
///
/// Offset resets are never silent: librdkafka's own report of one (its log line, see `OffsetResetLine`)
/// becomes a `KafkaOffsetReset` with the log's watermarks, for `takeOffsetResets`; a group that never
/// committed a partition starts at its beginning without one (nothing was lost).
///
/// `@unchecked Sendable`: the C handle is only used from `executor` (one job at a time), except in `deinit`, which runs
/// when nothing else can reach the consumer.
public final class KafkaConsumer: @unchecked Sendable {
    private let handle: OpaquePointer
    private let executor: BlockingExecutor
    private let logger: Logger
    private let rebalance: Unmanaged<ClientContext>
    private var closed = false  // guarded by `executor`

    /// Defaults: `enable.auto.commit=false` (offsets are committed only by `commit`), a new group starts at
    /// the beginning and an offset outside the log is reported and resumed at the log's start (see above),
    /// `session.timeout.ms=10000`, `fetch.wait.max.ms=10`.
    ///
    /// - Parameter groupInstanceID: `group.instance.id` (static membership): a member that restarts with
    ///   the same id within `session.timeout.ms` gets its partitions back without a rebalance. Such a
    ///   member does not leave the group on `close`; its partitions wait for it until the session times out.
    public init(
        configuration: KafkaConfiguration, groupID: String, groupInstanceID: String? = nil, topics: [String],
        logger: Logger
    ) throws(KafkaError) {
        self.logger = logger
        executor = BlockingExecutor(name: "kafka-consumer")
        let context = ClientContext(logger: logger)
        var defaults = [
            "group.id": groupID,
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": "10000",
            "heartbeat.interval.ms": "1000",
            "enable.partition.eof": "false",
            // librdkafka's mock cluster (the dev broker) holds a Fetch for the whole wait even when data
            // arrives; a real broker answers as soon as data is there, so a short wait only costs idle fetches.
            "fetch.wait.max.ms": "10"
        ]
        if let groupInstanceID, !groupInstanceID.isEmpty { defaults["group.instance.id"] = groupInstanceID }
        let conf = try configuration.makeConf(context: context, defaults: defaults)
        rebalance = Unmanaged.passRetained(context)
        rd_kafka_conf_set_rebalance_cb(conf) { rk, err, partitions, opaque in
            guard let rk, let opaque else { return }
            let context = Unmanaged<ClientContext>.fromOpaque(opaque).takeUnretainedValue()
            let names = describe(partitions)
            let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
            switch err {
            case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                context.logger.info("kafka partitions assigned", metadata: ["partitions": "\(names)"])
                context.assignments.add(1, ordering: .sequentiallyConsistent)
                if cooperative {
                    if let e = rd_kafka_incremental_assign(rk, partitions) { rd_kafka_error_destroy(e) }
                } else {
                    rd_kafka_assign(rk, partitions)
                }
            case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
                context.logger.info("kafka partitions revoked", metadata: ["partitions": "\(names)"])
                if cooperative {
                    if let e = rd_kafka_incremental_unassign(rk, partitions) { rd_kafka_error_destroy(e) }
                } else {
                    rd_kafka_assign(rk, nil)
                }
            default:
                context.logger.error(
                    "kafka rebalance failed", metadata: ["error": "\(String(cString: rd_kafka_err2str(err)))"])
                rd_kafka_assign(rk, nil)
            }
        }
        do {
            handle = try makeClient(type: RD_KAFKA_CONSUMER, conf: conf)
        } catch {
            rebalance.release()
            throw error
        }
        rd_kafka_poll_set_consumer(handle)
        let list = rd_kafka_topic_partition_list_new(Int32(topics.count))
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for topic in topics { rd_kafka_topic_partition_list_add(list, topic, RD_KAFKA_PARTITION_UA) }
        let err = rd_kafka_subscribe(handle, list)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            rd_kafka_destroy(handle)
            rebalance.release()
            throw KafkaError(err, context: "subscribe to \(topics)")
        }
    }

    deinit {
        if !closed { rd_kafka_consumer_close(handle) }
        rd_kafka_destroy(handle)
        rebalance.release()
    }

    private func onQueue<T: Sendable>(_ body: @escaping @Sendable (OpaquePointer) throws(KafkaError) -> T)
        async throws(KafkaError) -> T
    {
        let lent = KafkaHandle(pointer: handle)
        let result = await executor.run { Result { () throws(KafkaError) -> T in try body(lent.pointer) } }
        // Only `deinit` shuts the executor down.
        return try result!.get()
    }

    /// Up to `maxMessages`: waits up to `timeout` for the first, then takes whatever is already fetched.
    /// Returns an empty batch on timeout. Throws only for fatal client errors; transient broker errors are
    /// logged and librdkafka retries them.
    public func poll(maxMessages: Int, timeout: Duration) async throws(KafkaError) -> [KafkaConsumerMessage] {
        let timeoutMs = Int32(
            clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let logger = self.logger
        return try await onQueue { [self] (rk) throws(KafkaError) in
            if closed { throw KafkaError(code: .destroyed, message: "consumer is closed", isRetriable: false) }
            var batch: [KafkaConsumerMessage] = []
            batch.reserveCapacity(min(maxMessages, 4096))
            // A consumer reads a topic or two: their names are made once per poll, not per message.
            var topicNames = TopicNames()
            var wait = timeoutMs
            while batch.count < maxMessages {
                guard let raw = rd_kafka_consumer_poll(rk, wait) else { break }
                defer { rd_kafka_message_destroy(raw) }
                wait = 0
                let m = raw.pointee
                if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                    if m.err == RD_KAFKA_RESP_ERR__FATAL {
                        var errstr = [CChar](repeating: 0, count: 512)
                        let code = rd_kafka_fatal_error(rk, &errstr, errstr.count)
                        throw KafkaError(
                            code: KafkaErrorCode(rawValue: code.rawValue),
                            message:
                                "consumer fatal error: \(String(decoding: errstr.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))",
                            isRetriable: false, isFatal: true)
                    }
                    if m.err != RD_KAFKA_RESP_ERR__PARTITION_EOF {
                        logger.warning(
                            "kafka consumer error", metadata: ["error": "\(KafkaError(m.err, context: "consume"))"])
                    }
                    continue
                }
                batch.append(copyMessage(raw, topic: topicNames.name(of: m.rkt)))
            }
            return batch
        }
    }

    /// The offset resets librdkafka made since the last call, oldest first, with the partition's
    /// watermarks now (asked of the broker; -1 when it does not answer).
    public func takeOffsetResets() async -> [KafkaOffsetReset] {
        let lines = rebalance.takeUnretainedValue().resets.withLock { list in
            defer { list.removeAll() }
            return list
        }
        var out: [KafkaOffsetReset] = []
        for line in lines {
            let marks = try? await watermarks(topic: line.topic, partition: line.partition)
            let low = marks?.low ?? -1
            out.append(
                KafkaOffsetReset(
                    topic: line.topic, partition: line.partition, requested: line.offset, lowWatermark: low,
                    highWatermark: marks?.high ?? -1, resumedAt: low, reason: line.reason))
        }
        return out
    }

    /// Whether a broker answers a metadata request within `timeout` (on a thread of its own: the call
    /// blocks). For readiness: a consumer with no broker reachable cannot make progress.
    public func brokersReachable(timeout: Duration = .milliseconds(80)) async throws(KafkaError) {
        let ms = Int32(
            clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let lent = KafkaHandle(pointer: handle)
        let err = await BlockingExecutor.runAlone(name: "kafka-metadata") {
            var metadata: UnsafePointer<rd_kafka_metadata>?
            let err = rd_kafka_metadata(lent.pointer, 0, nil, &metadata, ms)
            if let metadata { rd_kafka_metadata_destroy(metadata) }
            return err
        }
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(err, context: "no Kafka broker answered within \(timeout)")
        }
    }

    /// Commits the given next-offsets synchronously (the broker has them when this returns).
    public func commit(_ offsets: [KafkaOffset]) async throws(KafkaError) {
        guard !offsets.isEmpty else { return }
        try await onQueue { (rk) throws(KafkaError) in
            let list = rd_kafka_topic_partition_list_new(Int32(offsets.count))!
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for o in offsets {
                rd_kafka_topic_partition_list_add(list, o.topic, o.partition).pointee.offset = o.offset
            }
            let err = rd_kafka_commit(rk, list, 0)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                throw KafkaError(err, context: "commit \(offsets.map { "\($0.topic)/\($0.partition)@\($0.offset)" })")
            }
            for i in 0..<Int(list.pointee.cnt) where list.pointee.elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR {
                let e = list.pointee.elems[i]
                throw KafkaError(e.err, context: "commit \(String(cString: e.topic))/\(e.partition)")
            }
        }
    }

    /// The assigned partitions.
    public func assignment() async throws(KafkaError) -> [KafkaOffset] {
        try await onQueue { (rk) throws(KafkaError) in
            var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
            let err = rd_kafka_assignment(rk, &list)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let list else { throw KafkaError(err, context: "assignment") }
            defer { rd_kafka_topic_partition_list_destroy(list) }
            return (0..<Int(list.pointee.cnt)).map {
                let e = list.pointee.elems[$0]
                return KafkaOffset(topic: String(cString: e.topic), partition: e.partition, offset: e.offset)
            }
        }
    }

    /// How many assignments (rebalance callbacks granting partitions) this consumer has seen. Assignments
    /// happen inside `poll`, so a value read after a poll covers every message that poll returned.
    public var assignmentGeneration: Int {
        rebalance.takeUnretainedValue().assignments.load(ordering: .sequentiallyConsistent)
    }

    /// The partition's low and high watermarks (first offset still in the log; offset the next produced
    /// message gets), asked of the broker.
    public func watermarks(topic: String, partition: Int32, timeout: Duration = .seconds(5)) async throws(KafkaError)
        -> (low: Int64, high: Int64)
    {
        let timeoutMs = Int32(clamping: timeout.components.seconds * 1000)
        return try await onQueue { (rk) throws(KafkaError) in
            var low: Int64 = 0
            var high: Int64 = 0
            let err = rd_kafka_query_watermark_offsets(rk, topic, partition, &low, &high, timeoutMs)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                throw KafkaError(err, context: "watermarks of \(topic)/\(partition)")
            }
            return (low, high)
        }
    }

    /// The message at `offset` of one partition, read by a short-lived consumer of its own that joins no
    /// group and commits nothing (on a thread of its own: the poll blocks); nil when the log has no message
    /// there. A one-off per call (a client is created and destroyed): meant for rare checks, not for reading.
    public static func message(
        at offset: Int64, topic: String, partition: Int32, configuration: KafkaConfiguration,
        timeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "kafka")
    ) async throws(KafkaError) -> KafkaConsumerMessage? {
        let timeoutMs = timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000
        let result = await BlockingExecutor.runAlone(name: "kafka-read-one") {
            Result { () throws(KafkaError) -> KafkaConsumerMessage? in
                try readOne(offset, topic, partition, configuration, timeoutMs, logger)
            }
        }
        return try result.get()
    }

    /// Messages behind the end of the log over the assigned partitions: high watermark − position, from the
    /// client's cached fetch state (no broker round trip). Partitions without a known position count 0.
    public func lag() async throws(KafkaError) -> Int64 {
        try await onQueue { (rk) throws(KafkaError) in
            var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
            guard rd_kafka_assignment(rk, &list) == RD_KAFKA_RESP_ERR_NO_ERROR, let list else { return 0 }
            defer { rd_kafka_topic_partition_list_destroy(list) }
            rd_kafka_position(rk, list)
            var total: Int64 = 0
            for i in 0..<Int(list.pointee.cnt) {
                let e = list.pointee.elems[i]
                var low: Int64 = 0
                var high: Int64 = 0
                guard e.offset >= 0,
                    rd_kafka_get_watermark_offsets(rk, e.topic, e.partition, &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR,
                    high >= e.offset
                else { continue }
                total += high - e.offset
            }
            return total
        }
    }

    /// Leaves the group (revoking partitions through the rebalance callback). Idempotent.
    public func close() async {
        _ = try? await onQueue { [self] (rk) throws(KafkaError) in
            if !closed {
                closed = true
                rd_kafka_consumer_close(rk)
            }
        }
    }
}

private func readOne(
    _ offset: Int64, _ topic: String, _ partition: Int32, _ configuration: KafkaConfiguration, _ timeoutMs: Int64,
    _ logger: Logger
) throws(KafkaError) -> KafkaConsumerMessage? {
    let context = ClientContext(logger: logger)
    let conf = try configuration.makeConf(
        context: context,
        defaults: [
            "group.id": "te-read-one", "enable.auto.commit": "false", "enable.auto.offset.store": "false",
            // An offset outside the log must surface as an error, not be moved to one end of it.
            "auto.offset.reset": "error", "enable.partition.eof": "true", "fetch.wait.max.ms": "10"
        ])
    let rk = try makeClient(type: RD_KAFKA_CONSUMER, conf: conf)
    defer {
        rd_kafka_consumer_close(rk)
        rd_kafka_destroy(rk)
        withExtendedLifetime(context) {}
    }
    rd_kafka_poll_set_consumer(rk)
    let list = rd_kafka_topic_partition_list_new(1)!
    defer { rd_kafka_topic_partition_list_destroy(list) }
    rd_kafka_topic_partition_list_add(list, topic, partition).pointee.offset = offset
    let err = rd_kafka_assign(rk, list)
    if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "assign \(topic)/\(partition)@\(offset)") }
    let deadline = ContinuousClock.now + .milliseconds(timeoutMs)
    while ContinuousClock.now < deadline {
        guard let raw = rd_kafka_consumer_poll(rk, 100) else { continue }
        defer { rd_kafka_message_destroy(raw) }
        switch raw.pointee.err {
        case RD_KAFKA_RESP_ERR_NO_ERROR:
            let message = copyMessage(raw)
            if message.offset == offset { return message }
            if message.offset > offset { return nil }  // compacted away
        case RD_KAFKA_RESP_ERR__PARTITION_EOF, RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET,
            RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE:
            return nil
        default:
            continue  // transient: librdkafka retries
        }
    }
    throw KafkaError(code: .timedOut, message: "no answer reading \(topic)/\(partition)@\(offset)", isRetriable: true)
}

/// The last topic handle seen and its name.
private struct TopicNames {
    private var handle: OpaquePointer?
    private var cached = ""

    mutating func name(of topic: OpaquePointer?) -> String {
        if topic != handle || handle == nil {
            handle = topic
            cached = topic.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        }
        return cached
    }
}

private func copyMessage(_ raw: UnsafeMutablePointer<rd_kafka_message_t>) -> KafkaConsumerMessage {
    copyMessage(raw, topic: String(cString: rd_kafka_topic_name(raw.pointee.rkt)))
}

private func copyMessage(_ raw: UnsafeMutablePointer<rd_kafka_message_t>, topic: String) -> KafkaConsumerMessage {
    let m = raw.pointee
    let value = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) } ?? []
    let key = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
    var tsType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
    let ts = rd_kafka_message_timestamp(raw, &tsType)
    var headers: [KafkaHeader] = []
    var hdrs: OpaquePointer?
    if rd_kafka_message_headers(raw, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs {
        var index = 0
        while true {
            var name: UnsafePointer<CChar>?
            var val: UnsafeRawPointer?
            var size = 0
            guard rd_kafka_header_get_all(hdrs, index, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR else { break }
            let bytes = val.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
            headers.append(KafkaHeader(key: name.map { String(cString: $0) } ?? "", value: bytes))
            index += 1
        }
    }
    return KafkaConsumerMessage(
        topic: topic, partition: m.partition, offset: m.offset,
        key: key, value: value, timestampMs: tsType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : ts, headers: headers)
}

private func describe(_ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) -> String {
    guard let list else { return "" }
    return (0..<Int(list.pointee.cnt)).map {
        "\(String(cString: list.pointee.elems[$0].topic))/\(list.pointee.elems[$0].partition)"
    }.joined(separator: ",")
}
