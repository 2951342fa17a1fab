import ArgumentParser
import Foundation
import Logging
import MarketData
import Synchronization
import TECore
import TEKafka

/// `te replay FILE…`: publishes recorded market data to Kafka as recorded (DESIGN.md "Kafka topic `ticks`"):
/// key = symbol, Kafka timestamp = recorded receive time (ms), header `ts_ns` = the exact recorded ns, and
/// header `produced_ns` = when replay handed it to Kafka (for ingest's latency metric).
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Publish recorded market data (Binance .gz, cryptofeed .zst, Tick JSON lines) to Kafka.",
        discussion: "Needs KAFKA_BROKERS; librdkafka properties pass through as KAFKA_CONF_<name_with_underscores>.")

    @Argument(help: "Recordings to publish, in order.") var files: [String]
    @Option(help: "Pacing: recorded time × 1/speed (e.g. 1, 10, 0.5), or max for as fast as the broker takes it.")
    var speed: String = "1"
    @Option(help: "Stop after this many messages.") var limit: Int?
    @Flag(help: "Start again at the end (timestamps shift by the recording's span so they keep increasing).")
    var loop = false
    @Option(help: "Kafka topic (default: KAFKA_TOPIC, else ticks).") var topic: String?
    @Flag(help: "No progress output.") var quiet = false

    func validate() throws {
        if speed != "max" {
            guard let s = Double(speed), s > 0, s.isFinite else {
                throw ValidationError("--speed must be a positive number or max")
            }
        }
        for file in files where !FileManager.default.isReadableFile(atPath: file) {
            throw ValidationError("cannot read \(file)")
        }
    }

    func run() async throws {
        let kafka = try KafkaConfiguration.fromEnvironment()
        let topic = self.topic ?? Env.optional("KAFKA_TOPIC") ?? "ticks"
        let producer = try KafkaProducer(configuration: kafka, logger: Logger(label: "te-replay"))
        // Before the pacing clock starts: otherwise the first second of messages waits for librdkafka's
        // topic scan and every one of them is late.
        // Not fatal: without the metadata the messages still go out, only later.
        do {
            try await producer.prepare(topic: topic)
        } catch {
            FileHandle.standardError.write(
                Data("te replay: no metadata for \(topic) yet (\(error)); producing anyway\n".utf8))
        }
        let factor: Double? = speed == "max" ? nil : 1 / Double(speed)!
        let progress = ReplayProgress(quiet: quiet, limit: limit)
        let outcome = DeliveryTally()
        var sent = 0
        var shift: Int64 = 0
        var firstTs: Int64?
        let startWall = ContinuousClock.now
        replaying: repeat {
            var lastTs: Int64 = 0
            for file in files {
                let reader = try ReaderBox(path: file)
                while true {
                    let batch = try await reader.nextBatch(1000)
                    if batch.isEmpty { break }
                    for message in batch {
                        if let limit, sent >= limit { break replaying }
                        let ts = message.tsNs + shift
                        lastTs = max(lastTs, message.tsNs)
                        if let factor {
                            let t0 = firstTs ?? ts
                            firstTs = t0
                            let due = startWall + .nanoseconds(Int64(Double(ts - t0) * factor))
                            if due - ContinuousClock.now > .milliseconds(1) { try await Task.sleep(until: due) }
                        }
                        let out = KafkaOutgoingMessage(
                            topic: topic, key: message.key.map { Array($0.utf8) }, value: message.payload,
                            timestampMs: ts / 1_000_000,
                            headers: [
                                KafkaHeader(key: "ts_ns", string: String(ts)),
                                KafkaHeader(
                                    key: "produced_ns", string: String(Int64(Date().timeIntervalSince1970 * 1e9)))
                            ])
                        try await producer.enqueue(out, retryEvery: .milliseconds(5)) { outcome.record($0) }
                        sent += 1
                        progress.tick(sent: sent, delivered: outcome.delivered)
                    }
                }
            }
            if firstTs == nil { break }
            shift += lastTs - (firstTs ?? lastTs) + 1_000_000
        } while loop
        try await producer.flush(timeout: .seconds(60))
        let elapsed = ContinuousClock.now - startWall
        progress.finish(sent: sent, delivered: outcome.delivered, failed: outcome.failed, elapsed: elapsed)
        if outcome.failed > 0 {
            throw ValidationError(
                "\(outcome.failed) messages were not delivered; first error: \(outcome.firstError ?? "?")")
        }
    }
}

/// Counts delivery reports (they arrive on the producer's poll thread).
final class DeliveryTally: Sendable {
    private let state = Mutex<(delivered: Int, failed: Int, firstError: String?)>((0, 0, nil))
    func record(_ result: Result<KafkaDelivery, KafkaError>) {
        state.withLock {
            switch result {
            case .success: $0.delivered += 1
            case .failure(let error):
                $0.failed += 1
                if $0.firstError == nil { $0.firstError = "\(error)" }
            }
        }
    }
    var delivered: Int { state.withLock { $0.delivered } }
    var failed: Int { state.withLock { $0.failed } }
    var firstError: String? { state.withLock { $0.firstError } }
}

/// Reads a recording on a `BlockingExecutor`: `RecordingReader.next()` blocks on a decompressor's pipe.
///
/// `@unchecked Sendable`: the reader is only touched inside jobs on `executor`, one batch at a time.
final class ReaderBox: @unchecked Sendable {
    private let reader: RecordingReader
    private let executor = BlockingExecutor(name: "te-replay-reader")
    init(path: String) throws { reader = try RecordingReader(path: path) }

    func nextBatch(_ n: Int) async throws -> [RecordedMessage] {
        let batch = await executor.run {
            Result { () throws -> [RecordedMessage] in
                var out: [RecordedMessage] = []
                out.reserveCapacity(n)
                while out.count < n, let m = try self.reader.next() { out.append(m) }
                return out
            }
        }
        // The executor shuts down only when this box goes away.
        return try batch!.get()
    }
}

/// A progress bar with msgs/s on a terminal (stderr), plain lines every 5 s otherwise.
final class ReplayProgress {
    let quiet: Bool
    let limit: Int?
    let tty = isatty(STDERR_FILENO) == 1
    let start = ContinuousClock.now
    var lastPrint = ContinuousClock.now
    var lastSent = 0

    init(quiet: Bool, limit: Int?) {
        self.quiet = quiet
        self.limit = limit
    }

    func tick(sent: Int, delivered: Int) {
        guard !quiet else { return }
        let now = ContinuousClock.now
        let interval: Duration = tty ? .milliseconds(200) : .seconds(5)
        guard now - lastPrint >= interval else { return }
        let rate = Double(sent - lastSent) / (now - lastPrint).seconds
        lastPrint = now
        lastSent = sent
        if tty {
            var bar = ""
            if let limit, limit > 0 {
                let filled = min(30, sent * 30 / limit)
                bar = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled) + "] "
            }
            let total = limit.map { "/\($0)" } ?? ""
            write("\r\u{1B}[2K\(bar)\(sent)\(total) sent, \(delivered) acked, \(Int(rate)) msg/s")
        } else {
            write("replay: \(sent) sent, \(delivered) acked, \(Int(rate)) msg/s\n")
        }
    }

    func finish(sent: Int, delivered: Int, failed: Int, elapsed: Duration) {
        guard !quiet else { return }
        if tty { write("\r\u{1B}[2K") }
        let rate = elapsed.seconds > 0 ? Double(sent) / elapsed.seconds : 0
        write(
            "replay: \(sent) messages in \(String(format: "%.2f", elapsed.seconds)) s (\(Int(rate)) msg/s), \(delivered) delivered, \(failed) failed\n"
        )
    }

    private func write(_ text: String) { FileHandle.standardError.write(Data(text.utf8)) }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
