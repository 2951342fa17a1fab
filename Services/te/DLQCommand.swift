import ArgumentParser
import Foundation
import Logging
import TEKafka
import TEModels
import TERedis

/// `te dlq [list|show ID|redrive ID…]`: inspect te:dlq and send entries back to their stage's input after a fix.
struct DLQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "Inspect and re-drive dead letters (te:dlq).",
        discussion: """
            redrive sends an entry back where it came from: a stream stage's entry is added again to its input \
            stream with its original fields; an ingest entry is produced again to its Kafka topic \
            (KAFKA_BROKERS). The dead letter is then deleted.
            """)

    enum Action: String, ExpressibleByArgument { case list, show, redrive }

    @Argument(help: "list, show ID, or redrive ID…") var action: Action = .list
    @Argument(help: "Entry ids.") var ids: [String] = []
    @Option(help: "Dead-letter stream.") var stream = StreamKey.dlq
    @Option(name: .short, help: "list: how many (newest first).") var n = 20

    func validate() throws {
        if action != .list && ids.isEmpty { throw ValidationError("\(action.rawValue) needs at least one entry id") }
    }

    func run() async throws {
        let redis = try Inspect.redis()
        defer { redis.close() }
        switch action {
        case .list:
            let entries = try await redis.xrevrange(stream, count: n)
            let rows: [[String]] = entries.map { e in
                guard let d = try? StreamFieldDecoder.decode(DeadLetter.self, from: e.fields) else {
                    return [e.id, "?", "?", "?", Inspect.age(ofID: e.id), ""]
                }
                return [e.id, d.stage, String(d.reason.prefix(60)), d.source ?? "-", Inspect.age(ofID: e.id), String(d.payload.prefix(40))]
            }
            print(rows.isEmpty ? "\(stream) is empty" : Inspect.table(["ID", "STAGE", "REASON", "SOURCE", "AGE", "PAYLOAD"], rows))
        case .show:
            for id in ids {
                guard let e = try await redis.xrange(stream, start: id, end: id, count: 1).first else {
                    throw CLIError("no entry \(id) in \(stream)")
                }
                print(Inspect.pretty(e))
            }
        case .redrive:
            var producer: KafkaProducer?
            for id in ids {
                guard let e = try await redis.xrange(stream, start: id, end: id, count: 1).first else {
                    throw CLIError("no entry \(id) in \(stream)")
                }
                let letter = try StreamFieldDecoder.decode(DeadLetter.self, from: e.fields)
                guard let source = letter.source else { throw CLIError("\(id) has no source to re-drive to") }
                if source.hasPrefix("kafka:") {
                    // kafka:<topic>/<partition>@<offset>
                    let topic = String(source.dropFirst("kafka:".count).prefix(while: { $0 != "/" }))
                    if producer == nil { producer = try KafkaProducer(configuration: try KafkaConfiguration.fromEnvironment(), logger: Logger(label: "te")) }
                    let payload = Array(letter.payload.utf8)
                    try await producer!.send(KafkaOutgoingMessage(
                        topic: topic, key: Self.symbol(in: letter.payload).map { Array($0.utf8) }, value: payload,
                        timestampMs: letter.tsNs / 1_000_000, headers: [KafkaHeader(key: "ts_ns", string: String(letter.tsNs))]))
                    print("\(id) → kafka topic \(topic)")
                } else {
                    guard let object = try JSONSerialization.jsonObject(with: Data(letter.payload.utf8)) as? [String: Any] else {
                        throw CLIError("\(id): payload is not a JSON object of stream fields")
                    }
                    let fields = object.sorted { $0.key == "v" ? true : $1.key == "v" ? false : $0.key < $1.key }
                        .map { ($0.key, $0.value as? String ?? "\($0.value)") }
                    let newID = try await redis.xadd(source, fields: fields)
                    print("\(id) → \(source) \(newID)")
                }
                _ = try await redis.send(RedisCommand(["XDEL", stream, id]))
            }
        }
    }

    /// The `"s":"…"` or Kraken pair of a venue message, for the Kafka key.
    static func symbol(in payload: String) -> String? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) else { return nil }
        if let a = json as? [Any] { return a.last as? String }
        if let o = json as? [String: Any] {
            return ((o["data"] as? [String: Any])?["s"] as? String) ?? (o["symbol"] as? String)
        }
        return nil
    }
}
