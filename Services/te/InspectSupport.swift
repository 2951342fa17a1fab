import Foundation
import Logging
import TERedis

/// What the inspection commands share: the Redis connection, tables, colour only on a terminal.
enum Inspect {
    static func redis() throws -> RedisClient {
        guard let url = ProcessInfo.processInfo.environment["REDIS_URL"], !url.isEmpty else {
            throw CLIError("REDIS_URL is not set (redis://host:port/db); `source .dev/env`")
        }
        var logger = Logger(label: "te")
        logger.logLevel = .error
        return RedisClient(configuration: try RedisConfiguration(url: url), name: "te", logger: logger)
    }

    static let colour = isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil

    static func bold(_ s: String) -> String { colour ? "\u{1B}[1m\(s)\u{1B}[0m" : s }
    static func dim(_ s: String) -> String { colour ? "\u{1B}[2m\(s)\u{1B}[0m" : s }
    static func warn(_ s: String) -> String { colour ? "\u{1B}[33m\(s)\u{1B}[0m" : s }

    /// Left-aligned columns sized to their widest cell (escape codes excluded).
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        func width(_ s: String) -> Int {
            var n = 0
            var inEscape = false
            for c in s.unicodeScalars {
                if c == "\u{1B}" { inEscape = true } else if inEscape { if c == "m" { inEscape = false } } else { n += 1 }
            }
            return n
        }
        var widths = header.map(width)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], width(cell)) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in c + String(repeating: " ", count: max(0, widths[i] - width(c))) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return ([bold(line(header))] + rows.map(line)).joined(separator: "\n")
    }

    /// Age of a stream entry from its id's millisecond part: "3.2s", "5m", "2h", "4d".
    static func age(ofID id: String?) -> String {
        guard let id, let ms = Int64(id.split(separator: "-").first ?? "") else { return "-" }
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

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
