import ArgumentParser
import Foundation
import Logging
import TECore
import TERedis

/// What the inspection commands share: the Redis connection, tables, colour only on a terminal.
enum Inspect {
    static func redis() throws -> RedisClient {
        guard let url = Env.optional("REDIS_URL") else {
            throw CLIError("REDIS_URL is not set (redis://host:port/db); `source .dev/env`")
        }
        var logger = Logger(label: "te")
        logger.logLevel = .error
        return RedisClient(configuration: try RedisConfiguration(url: url), name: "te", logger: logger)
    }

    static let colour = isatty(STDOUT_FILENO) == 1 && Env().values["NO_COLOR"] == nil

    static func bold(_ s: String) -> String { colour ? "\u{1B}[1m\(s)\u{1B}[0m" : s }
    static func dim(_ s: String) -> String { colour ? "\u{1B}[2m\(s)\u{1B}[0m" : s }
    static func warn(_ s: String) -> String { colour ? "\u{1B}[33m\(s)\u{1B}[0m" : s }

    /// Left-aligned columns sized to their widest cell (escape codes excluded).
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        func width(_ s: String) -> Int {
            var n = 0
            var inEscape = false
            for c in s.unicodeScalars {
                if c == "\u{1B}" {
                    inEscape = true
                } else if inEscape {
                    if c == "m" { inEscape = false }
                } else {
                    n += 1
                }
            }
            return n
        }
        var widths = header.map(width)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], width(cell)) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in c + String(repeating: " ", count: max(0, widths[i] - width(c))) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return ([bold(line(header))] + rows.map(line)).joined(separator: "\n")
    }

    /// Age of a stream entry from its id's millisecond part: "3.2s", "5m", "2h", "4d".
    static func age(ofID id: String?) -> String {
        guard let id, let ms = milliseconds(ofID: id) else { return "-" }
        return duration(Int64(Date().timeIntervalSince1970 * 1000) - ms)
    }

    static func duration(_ ms: Int64) -> String {
        let s = Double(ms) / 1000
        switch s {
        case ..<60: return String(format: "%.1fs", s)
        case ..<3600: return "\(Int(s / 60))m"
        case ..<86_400: return "\(Int(s / 3600))h"
        default: return "\(Int(s / 86_400))d"
        }
    }

    /// `f=v f=v …` with the value of nested JSON kept as is.
    static func line(_ entry: StreamEntry) -> String {
        "\(dim(entry.id)) " + entry.fields.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
    }

    static func pretty(_ entry: StreamEntry) -> String {
        var out = bold(entry.id) + "\n"
        for (k, v) in entry.fields { out += "  \(k): \(v)\n" }
        return out
    }
}

/// `-o table|wide|json` and `--utc`, shared by every listing command.
struct OutputOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable { case table, wide, json }

    @Option(name: .shortAndLong, help: "Output: table, wide (more columns) or json (one document for scripts).")
    var output: Format = .table
    @Flag(help: "Show times in UTC (default: local time).") var utc = false

    var json: Bool { output == .json }
    var wide: Bool { output == .wide }

    /// A wall-clock instant in milliseconds since the epoch as `2024-08-09 01:14:14.087` (local, or UTC with `Z`).
    func time(ms: Int64) -> String { Inspect.time(ms: ms, utc: utc) }

    /// Prints `object` as pretty, key-sorted JSON (the `-o json` document).
    func printJSON(_ object: Any) throws {
        let data = try JSONSerialization.data(
            withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    }
}

extension Inspect {
    /// The millisecond part of a stream entry id.
    static func milliseconds(ofID id: String) -> Int64? { StreamID(id).flatMap { Int64(exactly: $0.milliseconds) } }

    static func time(ms: Int64, utc: Bool) -> String {
        var seconds = time_t(ms / 1000)
        var parts = tm()
        if utc { gmtime_r(&seconds, &parts) } else { localtime_r(&seconds, &parts) }
        let text = String(
            format: "%04d-%02d-%02d %02d:%02d:%02d.%03d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(ms % 1000))
        return utc ? text + "Z" : text
    }

    /// `90s`, `5m`, `2h`, `1d` in seconds; nil for anything else.
    static func durationSeconds(_ text: String) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        guard let unit = text.last, let scale = units[unit], let amount = Double(text.dropLast()), amount >= 0 else {
            return nil
        }
        return amount * scale
    }

    /// `--since`/`--until` for stream ids: a duration back from now (`90s`, `5m`, `2h`, `1d`), an entry id
    /// (`1723161254087-0` or its milliseconds), or an ISO-8601 time (`2024-08-09T01:14:14Z`).
    /// Answers the milliseconds since the epoch, or an exact id.
    static func streamBound(_ text: String, option: String, now: Date = Date()) throws -> String {
        if let back = durationSeconds(text) { return String(Int64((now.timeIntervalSince1970 - back) * 1000)) }
        if text.allSatisfy({ $0.isNumber || $0 == "-" }), text.first?.isNumber == true { return text }
        let formatter = ISO8601DateFormatter()
        for options: ISO8601DateFormatter.Options in [
            [.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime]
        ] {
            formatter.formatOptions = options
            if let date = formatter.date(from: text) { return String(Int64(date.timeIntervalSince1970 * 1000)) }
        }
        throw ValidationError(
            "\(option) '\(text)': expected a duration (90s, 5m, 2h, 1d), an entry id or an ISO-8601 time")
    }

    /// Fails with one line when `key` is not a stream (missing, or another type).
    static func requireStream(_ key: String, in redis: RedisClient) async throws {
        let type = try await redis.send(RedisCommand(["TYPE", key])).string ?? "none"
        if type == "none" { throw CLIError("no stream \(key) (`te streams` lists them)") }
        if type != "stream" { throw CLIError("\(key) is a \(type), not a stream") }
    }

    /// One line for an error a command let through: what failed and where, without Foundation's dump or a source
    /// path. The URL of the server is part of the message so that "which one?" needs no second look.
    static func message(for error: any Error) -> String {
        if let error = error as? URLError {
            let url = error.failingURL.map { " \($0.absoluteString)" } ?? ""
            switch error.code {
            case .cannotConnectToHost: return "cannot reach\(url): connection refused"
            case .timedOut: return "no answer from\(url) in time"
            case .cannotFindHost, .dnsLookupFailed: return "cannot resolve the host of\(url)"
            case .networkConnectionLost: return "connection to\(url) lost"
            default: return "request to\(url) failed (URLError \(error.code.rawValue))"
            }
        }
        let nsError = error as NSError
        if nsError.domain == NSURLErrorDomain {
            let url = (nsError.userInfo[NSURLErrorFailingURLErrorKey] as? URL).map { " \($0.absoluteString)" } ?? ""
            return nsError.code == NSURLErrorCannotConnectToHost
                ? "cannot reach\(url): connection refused" : "request to\(url) failed (NSURLError \(nsError.code))"
        }
        return String(describing: error)
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
