import CRdKafka
import Foundation
import Logging
import TECore

/// A message to produce. `timestampMs` is the Kafka message timestamp (CreateTime), ms since epoch.
public struct KafkaOutgoingMessage: Sendable {
    public var topic: String
    public var key: [UInt8]?
    public var value: [UInt8]
    public var timestampMs: Int64?
    public var headers: [KafkaHeader]

    public init(topic: String, key: [UInt8]?, value: [UInt8], timestampMs: Int64? = nil, headers: [KafkaHeader] = []) {
        self.topic = topic
        self.key = key
        self.value = value
        self.timestampMs = timestampMs
        self.headers = headers
    }
}

/// Where the broker stored a produced message.
public struct KafkaDelivery: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
}

/// Owns the per-message delivery callback between `produce` and librdkafka's delivery report.
private final class DeliveryReport: Sendable {
    let topic: String
    let completion: @Sendable (Result<KafkaDelivery, KafkaError>) -> Void
    init(topic: String, completion: @escaping @Sendable (Result<KafkaDelivery, KafkaError>) -> Void) {
        self.topic = topic
        self.completion = completion
    }
}

/// A librdkafka producer. Delivery reports are served by `rd_kafka_poll` on a dedicated thread (the call
/// blocks up to its timeout, so it must never run on the cooperative pool) and surface as completion
/// callbacks or as the result of `send`.
///
/// `@unchecked Sendable`: the only stored C state is the `rd_kafka_t` handle, and librdkafka documents
/// `rd_kafka_produceva`, `rd_kafka_poll`, `rd_kafka_flush` and `rd_kafka_outq_len` as thread-safe; the
/// handle is destroyed once, in `deinit`, after the poll thread has finished.
public final class KafkaProducer: @unchecked Sendable {
    private let handle: OpaquePointer
    private let logger: Logger
    private let context: ClientContext
    private let stopping = StopFlag()
    /// Runs the poll loop (its one job) until `stopping`; `pollThreadDone` says the loop returned.
    private let poller = BlockingExecutor(name: "kafka-producer-poll")
    private let pollThreadDone = DispatchSemaphore(value: 0)

    /// Defaults: `linger.ms=5` (small batches, low latency), `enable.idempotence=true` (no duplicates or
    /// reordering from internal retries), `message.timeout.ms=60000`.
    public init(configuration: KafkaConfiguration, logger: Logger) throws(KafkaError) {
        self.logger = logger
        let context = ClientContext(logger: logger)
        self.context = context
        let conf = try configuration.makeConf(
            context: context,
            defaults: [
                "linger.ms": "5",
                // The dev broker (mock cluster) keeps ~5 MB per partition; JSON compresses ~5x.
                "compression.codec": "lz4",
                "enable.idempotence": "true",
                "message.timeout.ms": "60000",
                "queue.buffering.max.messages": "200000"
            ])
        rd_kafka_conf_set_dr_msg_cb(conf) { _, message, _ in
            guard let message, let opaque = message.pointee._private else { return }
            let report = Unmanaged<DeliveryReport>.fromOpaque(opaque).takeRetainedValue()
            let m = message.pointee
            if m.err == RD_KAFKA_RESP_ERR_NO_ERROR {
                report.completion(
                    .success(KafkaDelivery(topic: report.topic, partition: m.partition, offset: m.offset)))
            } else {
                report.completion(.failure(KafkaError(m.err, context: "delivery to \(report.topic)")))
            }
        }
        handle = try makeClient(type: RD_KAFKA_PRODUCER, conf: conf)
        let lent = KafkaHandle(pointer: handle)
        poller.submit { [lent, stopping, pollThreadDone] in
            while !stopping.isSet {
                rd_kafka_poll(lent.pointer, 100)
            }
            pollThreadDone.signal()
        }
        poller.shutdown()
    }

    deinit {
        stopping.set()
        pollThreadDone.wait()
        // Serve the last delivery reports so no completion is left hanging.
        rd_kafka_flush(handle, 5000)
        rd_kafka_destroy(handle)
    }

    /// Enqueues a message; `completion` runs on the poll thread with the delivery report.
    /// Throws `queueFull` (retriable) when librdkafka's queue is full: wait briefly and retry.
    public func produce(
        _ message: KafkaOutgoingMessage,
        completion: @escaping @Sendable (Result<KafkaDelivery, KafkaError>) -> Void
    ) throws(KafkaError) {
        let report = Unmanaged.passRetained(DeliveryReport(topic: message.topic, completion: completion))
        // Headers are copied into an rd_kafka_headers_t that librdkafka owns once produce succeeds.
        let headers: OpaquePointer? = message.headers.isEmpty ? nil : rd_kafka_headers_new(message.headers.count)
        for header in message.headers {
            header.value.withUnsafeBytes { bytes in
                _ = rd_kafka_header_add(headers, header.key, -1, bytes.baseAddress, bytes.count)
            }
        }
        let error: OpaquePointer? = message.topic.withCString { topic in
            withOptionalBytes(message.key) { keyPtr, keyLen in
                message.value.withUnsafeBytes { value in
                    var args: [rd_kafka_vu_t] = []
                    args.reserveCapacity(7)
                    var a = rd_kafka_vu_t()
                    a.vtype = RD_KAFKA_VTYPE_TOPIC
                    a.u.cstr = topic
                    args.append(a)
                    a = rd_kafka_vu_t()
                    a.vtype = RD_KAFKA_VTYPE_VALUE
                    a.u.mem.ptr = UnsafeMutableRawPointer(mutating: value.baseAddress)
                    a.u.mem.size = value.count
                    args.append(a)
                    if let keyPtr {
                        a = rd_kafka_vu_t()
                        a.vtype = RD_KAFKA_VTYPE_KEY
                        a.u.mem.ptr = UnsafeMutableRawPointer(mutating: keyPtr)
                        a.u.mem.size = keyLen
                        args.append(a)
                    }
                    a = rd_kafka_vu_t()
                    a.vtype = RD_KAFKA_VTYPE_MSGFLAGS
                    a.u.i = RD_KAFKA_MSG_F_COPY
                    args.append(a)
                    a = rd_kafka_vu_t()
                    a.vtype = RD_KAFKA_VTYPE_OPAQUE
                    a.u.ptr = report.toOpaque()
                    args.append(a)
                    if let ts = message.timestampMs {
                        a = rd_kafka_vu_t()
                        a.vtype = RD_KAFKA_VTYPE_TIMESTAMP
                        a.u.i64 = ts
                        args.append(a)
                    }
                    if let headers {
                        a = rd_kafka_vu_t()
                        a.vtype = RD_KAFKA_VTYPE_HEADERS
                        a.u.headers = headers
                        args.append(a)
                    }
                    return rd_kafka_produceva(handle, args, args.count)
                }
            }
        }
        if let error {
            report.release()
            if let headers { rd_kafka_headers_destroy(headers) }
            throw KafkaError(consuming: error, context: "produce to \(message.topic)")
        }
    }

    /// Enqueues `message` like `produce`, but waits `retryEvery` and retries while librdkafka's local queue is
    /// full, so the broker sets the pace of a fast producer (replay at `--speed max`, load generators).
    public func enqueue(
        _ message: KafkaOutgoingMessage, retryEvery: Duration = .milliseconds(1),
        completion: @escaping @Sendable (Result<KafkaDelivery, KafkaError>) -> Void
    ) async throws {
        while true {
            do {
                try produce(message, completion: completion)
                return
            } catch  where error.code == .queueFull {
                try await Task.sleep(for: retryEvery)
            }
        }
    }

    /// Produces and waits for the delivery report. Waits and retries while the local queue is full.
    @discardableResult
    public func send(_ message: KafkaOutgoingMessage) async throws(KafkaError) -> KafkaDelivery {
        while true {
            do {
                let result: Result<KafkaDelivery, KafkaError> = try await withCheckedThrowingContinuation {
                    (continuation: CheckedContinuation<Result<KafkaDelivery, KafkaError>, any Error>) in
                    do {
                        try produce(message) { continuation.resume(returning: $0) }
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
                return try result.get()
            } catch let error as KafkaError where error.code == .queueFull {
                try? await Task.sleep(for: .milliseconds(10))
            } catch let error as KafkaError {
                throw error
            } catch {
                throw KafkaError(code: .invalidArgument, message: "\(error)", isRetriable: false)
            }
        }
    }

    /// Fetches `topic`'s metadata and waits for it, so the first message goes straight to its partition.
    /// A new producer otherwise learns a topic's partitions only after its first message: librdkafka parks
    /// the messages of a topic it has no metadata for and moves them to their partitions on its 1 s topic
    /// scan, so the first second of a paced stream waits up to a second (the ~1 s p99 the first ingest
    /// latency bench measured). Call it before a pacing clock starts. Blocks in librdkafka, so it runs on a
    /// dedicated thread.
    public func prepare(topic: String, timeout: Duration = .seconds(10)) async throws(KafkaError) {
        let ms = Int32(
            clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let lent = KafkaHandle(pointer: handle)
        let err = await BlockingExecutor.runAlone(name: "kafka-metadata") {
            guard let rkt = rd_kafka_topic_new(lent.pointer, topic, nil) else { return rd_kafka_last_error() }
            var metadata: UnsafePointer<rd_kafka_metadata>?
            let err = rd_kafka_metadata(lent.pointer, 0, rkt, &metadata, ms)
            if let metadata { rd_kafka_metadata_destroy(metadata) }
            rd_kafka_topic_destroy(rkt)
            return err
        }
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "metadata of \(topic)") }
    }

    /// Messages not yet acknowledged by the broker.
    public var outstandingMessages: Int { Int(rd_kafka_outq_len(handle)) }

    /// Waits until every enqueued message has a delivery report. `rd_kafka_flush` blocks, so it runs on a
    /// dedicated thread.
    public func flush(timeout: Duration = .seconds(30)) async throws(KafkaError) {
        let ms = Int32(
            clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let lent = KafkaHandle(pointer: handle)
        let err = await BlockingExecutor.runAlone(name: "kafka-flush") { rd_kafka_flush(lent.pointer, ms) }
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(err, context: "flush (\(outstandingMessages) messages outstanding)")
        }
    }
}

private func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafeRawPointer?, Int) -> R) -> R {
    guard let bytes else { return body(nil, 0) }
    return bytes.withUnsafeBytes { body($0.baseAddress, $0.count) }
}
