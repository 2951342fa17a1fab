import Foundation
import Logging
import TEModels

/// One JSON object per line on stderr: `ts`, `level`, `service`, `msg`, then metadata (and
/// `label` when it differs from the service). Lines are written with one `write(2)` each, so
/// concurrent loggers never interleave within a line.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level
    public let label: String
    public let service: String

    public init(label: String, service: String, logLevel: Logger.Level = .info) {
        self.label = label
        self.service = service
        self.logLevel = logLevel
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        if let error = event.error { merged["error"] = "\(error)" }
        var line = Self.render(
            level: event.level, message: event.message.description, service: service,
            label: label == service ? nil : label, metadata: merged)
        line.append("\n")
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Foundation.write(2, bytes.baseAddress! + offset, bytes.count - offset)
                if n <= 0 {
                    if n < 0 && errno == EINTR { continue }
                    break
                }
                offset += n
            }
        }
    }

    /// The JSON line (without newline); fields in a fixed order, metadata keys sorted.
    public static func render(
        level: Logger.Level, message: String, service: String, label: String?, metadata: Logger.Metadata,
        now: Date = Date()
    ) -> String {
        var out = "{\"ts\":\""
        out += timestamp(now)
        out += "\",\"level\":\""
        out += level.rawValue
        out += "\",\"service\":"
        JSONText.appendString(service, to: &out)
        out += ",\"msg\":"
        JSONText.appendString(message, to: &out)
        if let label {
            out += ",\"label\":"
            JSONText.appendString(label, to: &out)
        }
        for key in metadata.keys.sorted() where !["ts", "level", "service", "msg", "label"].contains(key) {
            out += ","
            JSONText.appendString(key, to: &out)
            out += ":"
            append(metadata[key]!, to: &out)
        }
        out += "}"
        return out
    }

    private static func append(_ value: Logger.Metadata.Value, to out: inout String) {
        switch value {
        case .string(let s): JSONText.appendString(s, to: &out)
        case .stringConvertible(let c): JSONText.appendString(c.description, to: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                append(item, to: &out)
            }
            out += "]"
        case .dictionary(let dict):
            out += "{"
            for (i, key) in dict.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                JSONText.appendString(key, to: &out)
                out += ":"
                append(dict[key]!, to: &out)
            }
            out += "}"
        }
    }

    /// RFC 3339 UTC with milliseconds: `2024-08-09T00:34:14.087Z`.
    static func timestamp(_ date: Date) -> String {
        let totalMillis = Int64((date.timeIntervalSince1970 * 1000).rounded())
        var seconds = time_t(totalMillis / 1000)
        let millis = Int(totalMillis % 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ n: Int32, _ width: Int) -> String {
            let s = String(n)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }
}

/// JSON strings for logs and dead-letter payloads, escaped by the stream codec's `JSONTextWriter` (one escaper
/// for every JSON text we write).
public enum JSONText {
    public static func appendString(_ s: String, to out: inout String) {
        var writer = JSONTextWriter()
        writer.string(s)
        out += String(decoding: writer.bytes, as: UTF8.self)
    }

    /// The string's JSON escaping without quotes; returns `s` itself when nothing needs escaping.
    public static func escape(_ s: String) -> String {
        var needs = false
        for b in s.utf8 where b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") {
            needs = true
            break
        }
        guard needs else { return s }
        var writer = JSONTextWriter()
        writer.string(s)
        return String(decoding: writer.bytes.dropFirst().dropLast(), as: UTF8.self)
    }

    /// A finite number as JSON, `null` otherwise.
    public static func number(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "null" }
        return "\(value)"
    }

    public static func quoted(_ s: String) -> String {
        var out = ""
        appendString(s, to: &out)
        return out
    }

    /// `{"k":"v",…}` in the given order.
    public static func object(_ fields: [(String, String)]) -> String {
        var out = "{"
        for (i, (k, v)) in fields.enumerated() {
            if i > 0 { out += "," }
            appendString(k, to: &out)
            out += ":"
            appendString(v, to: &out)
        }
        out += "}"
        return out
    }
}
