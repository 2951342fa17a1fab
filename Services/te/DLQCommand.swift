import ArgumentParser
import Foundation
import Logging
import ServiceKit
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
            (KAFKA_BROKERS). The dead letter is then removed from te:dlq (the input stream now holds the \
            entry; if it fails again it comes back as a new dead letter). Re-driving an id that is no longer \
            in te:dlq sends nothing and exits non-zero, so a repeated re-drive never duplicates an entry. \
            A payload that was not valid UTF-8 is stored as base64 (`encoding: base64`); show prints its \
            decoded bytes escaped, `show --payload` writes exactly the original bytes to stdout, and redrive \
            sends exactly the original bytes.
            """)

    enum Action: String, ExpressibleByArgument { case list, show, redrive }

    @Argument(help: "list, show ID, or redrive ID…") var action: Action = .list
    @Argument(help: "Entry ids.") var ids: [String] = []
    @Option(help: "Dead-letter stream.") var stream = StreamKey.dlq
    @Option(name: .short, help: "list: how many (newest first).") var n = 20
    @Flag(help: "show: write only the payload's original bytes (base64 decoded) to stdout.") var payload = false
    @OptionGroup var format: OutputOptions

    func validate() throws {
        if action != .list && ids.isEmpty { throw ValidationError("\(action.rawValue) needs at least one entry id") }
    }

    func run() async throws {
        let redis = try Inspect.redis()
        defer { redis.close() }
        switch action {
        case .list:
            let entries = try await redis.xrevrange(stream, count: n)
            if format.json {
                try format.printJSON(
                    entries.map { e -> [String: Any] in
                        guard let d = try? StreamFieldDecoder.decode(DeadLetter.self, from: e.fields) else {
                            return ["id": e.id, "undecodable": true]
                        }
                        return [
                            "id": e.id, "stage": d.stage, "reason": d.reason, "source": d.source as Any? ?? NSNull(),
                            "ts_ns": d.tsNs, "encoding": d.encoding as Any? ?? NSNull(), "payload": d.payload
                        ]
                    })
                return
            }
            let rows: [[String]] = entries.map { e in
                guard let d = try? StreamFieldDecoder.decode(DeadLetter.self, from: e.fields) else {
                    return [e.id, "?", "?", "?", Inspect.age(ofID: e.id), ""]
                }
                let shown = d.encoding.map { "\($0):" + d.payload.prefix(32) } ?? String(d.payload.prefix(40))
                let reason = format.wide ? d.reason : String(d.reason.prefix(60))
                let at = format.wide ? [Inspect.milliseconds(ofID: e.id).map(format.time(ms:)) ?? "-"] : []
                return [e.id] + at + [d.stage, reason, d.source ?? "-", Inspect.age(ofID: e.id), shown]
            }
            let header = ["ID"] + (format.wide ? ["AT"] : []) + ["STAGE", "REASON", "SOURCE", "AGE", "PAYLOAD"]
            print(rows.isEmpty ? "\(stream) is empty" : Inspect.table(header, rows))
        case .show:
            for id in ids {
                guard let e = try await redis.xrange(stream, start: id, end: id, count: 1).first else {
                    throw CLIError("no entry \(id) in \(stream)")
                }
                if payload {
                    let letter = try StreamFieldDecoder.decode(DeadLetter.self, from: e.fields)
                    FileHandle.standardOutput.write(Data(try Self.bytes(of: letter, id: id)))
                    continue
                }
                print(Inspect.pretty(e), terminator: "")
                if let letter = try? StreamFieldDecoder.decode(DeadLetter.self, from: e.fields), letter.encoding != nil,
                    let bytes = letter.payloadBytes
                {
                    print("  payload (\(bytes.count) bytes, decoded): \(Self.escaped(bytes))")
                }
                print()
            }
        case .redrive:
            var producer: KafkaProducer?
            var missing: [String] = []
            for id in ids {
                guard let e = try await redis.xrange(stream, start: id, end: id, count: 1).first else {
                    missing.append(id)
                    print("\(id): not in \(stream) (already re-driven, trimmed, or never there): nothing sent")
                    continue
                }
                let letter = try StreamFieldDecoder.decode(DeadLetter.self, from: e.fields)
                guard let source = letter.source else { throw CLIError("\(id) has no source to re-drive to") }
                if source.hasPrefix("kafka:") {
                    if producer == nil {
                        producer = try KafkaProducer(
                            configuration: try KafkaConfiguration.fromEnvironment(), logger: Logger(label: "te"))
                    }
                    if try await !redriveToKafka(
                        id: id, entry: e, letter: letter, source: source, redis: redis, producer: producer!)
                    {
                        missing.append(id)
                    }
                } else {
                    let fields = try Self.streamFields(ofPayload: letter.payload, id: id)
                    // The dead-letter stream and the input live in different Redis Cluster slots: the payload
                    // goes in first, once per letter id (a marker in the input's slot, checked in the same
                    // script), then the letter is removed. A re-drive interrupted between the two, repeated or
                    // run twice at once never adds the payload twice; the next one removes the letter.
                    let reply = try await redis.send(
                        RedisCommand(
                            ["EVAL", Self.addOnceScript, "2", Self.redrivenKey(source), source, id]
                                + fields.flatMap { [$0.0, $0.1] }))
                    _ = try await redis.send(RedisCommand(["XDEL", stream, id])).throwingError()
                    if let newID = try reply.throwingError().string {
                        print("\(id) → \(source) \(newID)")
                    } else {
                        missing.append(id)
                        print(
                            "\(id): already re-driven (by an earlier or a concurrent re-drive): letter removed, nothing sent"
                        )
                    }
                }
            }
            if !missing.isEmpty { throw CLIError("not re-driven: \(missing.joined(separator: ", "))") }
        }
    }

    /// Adds the payload to the input unless this letter id was re-driven there before. KEYS: the marker hash
    /// (`redrivenKey`), input stream; ARGV: letter id, field, value, …; the markers are kept 7 days.
    static let addOnceScript = """
        if redis.call('HSETNX', KEYS[1], ARGV[1], '1') == 0 then return false end
        redis.call('EXPIRE', KEYS[1], 604800)
        return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
        """

    /// The letter ids re-driven into `input`, in `input`'s slot: `te:dlq:redriven:{tag}`.
    static func redrivenKey(_ input: String) -> String { "te:dlq:redriven:" + StreamKey.hashTag(of: input) }

    /// A Kafka letter: removed first (the XDEL that returns 1 owns the re-drive), then produced and
    /// awaited; if the broker refuses it, the letter is put back (under a new id) so nothing is lost.
    /// False when another re-drive removed the letter first.
    func redriveToKafka(
        id: String, entry: StreamEntry, letter: DeadLetter, source: String, redis: RedisClient, producer: KafkaProducer
    ) async throws -> Bool {
        // kafka:<topic>/<partition>@<offset>
        let topic = String(source.dropFirst("kafka:".count).prefix(while: { $0 != "/" }))
        let value = try Self.bytes(of: letter, id: id)
        guard try await redis.send(RedisCommand(["XDEL", stream, id])).int == 1 else {
            print("\(id): already re-driven by someone else: nothing sent")
            return false
        }
        do {
            try await producer.send(
                KafkaOutgoingMessage(
                    topic: topic, key: Self.symbol(in: value).map { Array($0.utf8) }, value: value,
                    timestampMs: letter.tsNs / 1_000_000,
                    headers: [KafkaHeader(key: "ts_ns", string: String(letter.tsNs))]))
        } catch {
            let restored = try await redis.xadd(stream, fields: Array(entry.fields))
            throw CLIError("\(id): producing to \(topic) failed (\(error)); the dead letter is back as \(restored)")
        }
        print("\(id) → kafka topic \(topic)")
        return true
    }

    /// The stream fields a stage dead-lettered (a JSON object of strings), in their original order.
    static func streamFields(ofPayload payload: String, id: String) throws -> [(String, String)] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any],
            !object.isEmpty
        else {
            throw CLIError("\(id): payload is not a JSON object of stream fields")
        }
        // JSONSerialization forgets the order; each key occurs once as `"key":` in the text (inside a
        // value its quotes would be escaped), so its position there restores the order (`v` first).
        func position(_ key: String) -> Int {
            var quoted = ""
            JSONText.appendString(key, to: &quoted)
            guard let r = payload.range(of: quoted + ":") else { return Int.max }
            return payload.distance(from: payload.startIndex, to: r.lowerBound)
        }
        return object.map { (key: $0.key, value: $0.value as? String ?? "\($0.value)", at: position($0.key)) }
            .sorted { $0.at < $1.at }
            .map { ($0.key, $0.value) }
    }

    /// The payload's original bytes.
    static func bytes(of letter: DeadLetter, id: String) throws -> [UInt8] {
        guard let bytes = letter.payloadBytes else {
            throw CLIError("\(id): payload encoding \(letter.encoding ?? "") is unknown or its data damaged")
        }
        return bytes
    }

    /// Printable ASCII as is, anything else as `\xNN`.
    static func escaped(_ bytes: [UInt8]) -> String {
        bytes.map {
            $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\\")
                ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16).leftPad(2)
        }
        .joined()
    }

    /// The `"s":"…"` or Kraken pair of a venue message, for the Kafka key.
    static func symbol(in payload: [UInt8]) -> String? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(payload)) else { return nil }
        if let a = json as? [Any] { return a.last as? String }
        if let o = json as? [String: Any] {
            return ((o["data"] as? [String: Any])?["s"] as? String) ?? (o["symbol"] as? String)
        }
        return nil
    }
}

extension String {
    fileprivate func leftPad(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
