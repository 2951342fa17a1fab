import CRdKafka
import Foundation
import Logging
import Synchronization

/// What librdkafka's callbacks of one client need: its logger (librdkafka's own log lines go through it,
/// never raw to stderr) and, for a consumer, the assignment count. Set as the client's opaque; the owner
/// keeps it alive until after `rd_kafka_destroy` (librdkafka logs until then).
final class ClientContext: Sendable {
    let logger: Logger
    /// Bumped on every assignment, so a caller can tell that per-partition state it derived may be stale.
    let assignments = Atomic<Int>(0)
    /// Offset resets librdkafka reported in its log, not yet taken by the consumer.
    let resets = Mutex<[OffsetResetLine]>([])
    init(logger: Logger) { self.logger = logger }
}

/// librdkafka's one report of an offset reset caused by an error (retention deleted the offset, or it is
/// past the log's end): the WARNING line of facility `OFFSET` written by `rd_kafka_offset_reset`,
/// `"<topic> [<partition>]: offset reset (at offset <offset>, broker <id>) to <where>: <reason>: <error>"`.
/// librdkafka has no event for it when `auto.offset.reset` is `earliest`/`latest` (with `error` it stops
/// the partition instead, and an eager-protocol consumer can only restart it by re-assigning everything).
struct OffsetResetLine: Sendable, Equatable {
    var topic: String
    var partition: Int32
    var offset: Int64
    var reason: String

    static func parse(facility: String, _ line: String) -> OffsetResetLine? {
        guard facility == "OFFSET", let marker = line.range(of: "]: offset reset (at offset "),
            let open = line[..<marker.lowerBound].lastIndex(of: "[")
        else { return nil }
        var head = line[..<open]
        // librdkafka prefixes its lines with the thread: "[thrd:main]: ".
        if head.hasPrefix("[thrd:"), let end = head.range(of: "]: ") { head = head[end.upperBound...] }
        let topic = head.trimmingCharacters(in: .whitespaces)
        guard let partition = Int32(line[line.index(after: open)..<marker.lowerBound]) else { return nil }
        let rest = line[marker.upperBound...]
        guard let offset = Int64(rest.prefix { $0 == "-" || $0.isNumber }) else { return nil }
        let reason = rest.range(of: ": ").map { String(rest[$0.upperBound...]) } ?? String(rest)
        return OffsetResetLine(topic: String(topic), partition: partition, offset: offset, reason: reason)
    }
}

/// librdkafka log lines → swift-log.
public enum KafkaLog {
    /// librdkafka's syslog levels (0 emerg … 7 debug) as Logger levels: 0–2 critical, 3 error, 4 warning,
    /// 5 notice, 6 info, 7 (and anything above) debug.
    public static func level(syslog: Int32) -> Logger.Level {
        switch syslog {
        case ...2: .critical
        case 3: .error
        case 4: .warning
        case 5: .notice
        case 6: .info
        default: .debug
        }
    }

    /// Installs the log callback on `conf` and makes `context` its opaque. librdkafka calls it from its own
    /// threads; Logger is Sendable and the handler writes each line with one write(2).
    static func install(on conf: OpaquePointer, context: ClientContext) {
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(context).toOpaque())
        rd_kafka_conf_set_log_cb(conf) { rk, syslogLevel, facility, line in
            guard let rk, let opaque = rd_kafka_opaque(rk) else { return }
            let context = Unmanaged<ClientContext>.fromOpaque(opaque).takeUnretainedValue()
            let client = String(cString: rd_kafka_name(rk))
            let text = line.map { String(cString: $0) } ?? ""
            if let reset = OffsetResetLine.parse(facility: facility.map { String(cString: $0) } ?? "", text) {
                context.resets.withLock { $0.append(reset) }
            }
            context.logger.log(
                level: KafkaLog.level(syslog: syslogLevel), "\(text)",
                metadata: [
                    "source": "librdkafka", "facility": "\(facility.map { String(cString: $0) } ?? "")",
                    "client": "\(client)"
                ])
        }
    }
}
