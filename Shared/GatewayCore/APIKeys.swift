import Foundation
import Logging
import ServiceKit
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The bearer keys the gateway accepts and the client each names: `name:key`, or a bare `key` (client
/// `default`). A pure value: parsed from `GATEWAY_API_KEYS` (comma-separated) and `GATEWAY_API_KEYS_FILE`
/// (one a line, `#` comments and blank lines allowed), looked up in constant time. Errors name the
/// entry by position, never by its key.
public struct APIKeyTable: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var client: String
        var key: [UInt8]
    }

    public private(set) var entries: [Entry] = []

    public init() {}

    public var isEmpty: Bool { entries.isEmpty }
    /// Every client name, once each, in first-seen order.
    public var clients: [String] {
        var seen = Set<String>()
        return entries.map(\.client).filter { seen.insert($0).inserted }
    }

    /// Parses entries separated by `separator` (`,` for the variable, newline for the file).
    public static func parse(_ text: String, separator: Character, source: String) throws(ConfigurationError)
        -> APIKeyTable
    {
        var table = APIKeyTable()
        for (index, rawEntry) in text.split(separator: separator, omittingEmptySubsequences: false).enumerated() {
            let entry = rawEntry.trimmingCharacters(in: .whitespacesAndNewlines)
            if entry.isEmpty || entry.hasPrefix("#") { continue }
            let position = separator == "\n" ? "line \(index + 1)" : "entry \(index + 1)"
            let client: String
            let key: Substring
            if let colon = entry.firstIndex(of: ":") {
                client = entry[..<colon].trimmingCharacters(in: .whitespaces)
                key = Substring(entry[entry.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            } else {
                client = "default"
                key = Substring(entry)
            }
            guard isValidClientName(client) else {
                throw ConfigurationError(
                    variable: source, problem: "\(position): client name must be 1-64 of [A-Za-z0-9._-]")
            }
            guard !key.isEmpty, !key.contains(where: \.isWhitespace) else {
                throw ConfigurationError(
                    variable: source, problem: "\(position): the key is empty or contains whitespace")
            }
            try table.add(client: client, key: Array(key.utf8), position: position, source: source)
        }
        return table
    }

    /// Both tables' entries; a key present in both must name the same client.
    public func merging(_ other: APIKeyTable, source: String) throws(ConfigurationError) -> APIKeyTable {
        var merged = self
        for entry in other.entries where !merged.entries.contains(entry) {
            try merged.add(client: entry.client, key: entry.key, position: "client \(entry.client)", source: source)
        }
        return merged
    }

    private mutating func add(client: String, key: [UInt8], position: String, source: String) throws(ConfigurationError)
    {
        if let existing = entries.first(where: { $0.key == key }) {
            guard existing.client == client else {
                throw ConfigurationError(variable: source, problem: "\(position): the same key is given to two clients")
            }
            return
        }
        entries.append(Entry(client: client, key: key))
    }

    static func isValidClientName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D
                    || b == 0x5F
                    || b == 0x2E
            }
    }

    /// The client whose key an `Authorization: Bearer <key>` value carries, or nil. Every entry is compared
    /// over the whole presented key without an early exit, so the time depends only on the presented
    /// length and the number of entries, never on how much of a key matched or on a key's length.
    public func client(authorization: String?) -> String? {
        guard let authorization, authorization.hasPrefix("Bearer ") else { return nil }
        let presented = Array(authorization.utf8.dropFirst(7))
        let matched = match(presented)
        return matched >= 0 ? entries[matched].client : nil
    }

    private func match(_ presented: [UInt8]) -> Int {
        var matched = -1
        for (index, entry) in entries.enumerated() {
            let key = entry.key
            var diff = UInt(bitPattern: key.count ^ presented.count)
            if !key.isEmpty {
                for i in 0..<presented.count { diff |= UInt(key[i % key.count] ^ presented[i]) }
            }
            // Branch-free select of the first matching index.
            let isMatch = diff == 0 && matched < 0
            matched = isMatch ? index : matched
        }
        return matched
    }
}

/// A client the gateway knows (by its key) or the anonymous caller when auth is off: its name for the
/// audit record and logs, its request counters, and its rate-limit bucket. One object per client name
/// for the life of the process (a reload keeps it), so counters and buckets survive key rotation and no
/// lookup or lock is shared between clients on the request path.
public final class APIClient: Sendable {
    /// The name in logs and the `client` metric label.
    public let name: String
    /// The name in the audit record: nil for the anonymous caller (auth off).
    public let auditName: String?
    let counters: GatewayMetrics.ClientCounters
    /// `GATEWAY_RATE_LIMIT`'s bucket; nil when unset (then nothing is checked).
    let limiter: ClientRateLimiter?

    init(name: String, authenticated: Bool, metrics: GatewayMetrics, rateLimit: Double?) {
        self.name = name
        auditName = authenticated ? name : nil
        counters = metrics.clientCounters(name)
        limiter = rateLimit.map { ClientRateLimiter(ratePerSecond: $0) }
    }

    /// The metric label of requests made with auth off.
    public static let anonymousName = "anonymous"
}

/// Who may call `/v1/*` and `/debug/*`: the current key table (swapped on reload) and one `APIClient` per
/// client name. With no keys at all every request is the anonymous client.
public final class APIKeyStore: Sendable {
    public enum Verdict: Sendable {
        case client(APIClient)
        case refused
    }

    private struct Current: Sendable {
        var table: APIKeyTable
        var clients: [String: APIClient]
    }

    private let current: Mutex<Current>
    private let metrics: GatewayMetrics
    private let rateLimit: Double?
    let anonymous: APIClient
    /// Whether keys are configured at all (fixed at start: a file emptied later refuses everyone rather
    /// than opening the API).
    public let authEnabled: Bool

    init(table: APIKeyTable, authEnabled: Bool, metrics: GatewayMetrics, rateLimit: Double?) {
        self.metrics = metrics
        self.rateLimit = rateLimit
        self.authEnabled = authEnabled
        anonymous = APIClient(
            name: APIClient.anonymousName, authenticated: false, metrics: metrics, rateLimit: rateLimit)
        current = Mutex(Current(table: APIKeyTable(), clients: [:]))
        replace(table)
    }

    /// The client an `Authorization` header value identifies.
    public func verdict(authorization: String?) -> Verdict {
        guard authEnabled else { return .client(anonymous) }
        let (table, clients) = current.withLock { ($0.table, $0.clients) }
        guard let name = table.client(authorization: authorization), let client = clients[name] else { return .refused }
        return .client(client)
    }

    /// Installs a new table; clients already known keep their counters and buckets.
    func replace(_ table: APIKeyTable) {
        current.withLock { state in
            var clients: [String: APIClient] = [:]
            for name in table.clients {
                clients[name] =
                    state.clients[name]
                    ?? APIClient(name: name, authenticated: true, metrics: metrics, rateLimit: rateLimit)
            }
            state = Current(table: table, clients: clients)
        }
    }

    public var table: APIKeyTable { current.withLock { $0.table } }
}

/// Re-reads `GATEWAY_API_KEYS_FILE` when it changes (its inode, size or mtime, checked every 250 ms, so
/// an atomic rename and an in-place edit both count) and on SIGHUP; the new table, merged with
/// `GATEWAY_API_KEYS`, replaces the old one. A file that does not parse (or is missing) keeps the previous
/// table and is logged, without its contents.
struct APIKeyFileWatcher: Service {
    let path: String
    let fixed: APIKeyTable
    let store: APIKeyStore
    let logger: Logger
    var interval: Duration = .milliseconds(250)

    struct Stamp: Equatable {
        var inode: UInt64
        var size: Int64
        var mtimeNs: Int64
    }

    static func stamp(_ path: String) -> Stamp? {
        var s = stat()
        guard stat(path, &s) == 0 else { return nil }
        return Stamp(
            inode: UInt64(s.st_ino), size: Int64(s.st_size),
            mtimeNs: Int64(s.st_mtim.tv_sec) * 1_000_000_000 + Int64(s.st_mtim.tv_nsec))
    }

    /// The table the file and the fixed keys make now.
    static func load(path: String, fixed: APIKeyTable) throws -> APIKeyTable {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try fixed.merging(
            try APIKeyTable.parse(text, separator: "\n", source: "GATEWAY_API_KEYS_FILE"),
            source: "GATEWAY_API_KEYS_FILE")
    }

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        logger.info("watching the API keys file", metadata: ["path": "\(path)"])
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var last = Self.stamp(path)
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    let now = Self.stamp(path)
                    if now != last {
                        last = now
                        reload(reason: "file changed")
                    }
                }
            }
            group.addTask {
                for await _ in hangups.cancelOnGracefulShutdown() { reload(reason: "SIGHUP") }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    func reload(reason: String) {
        do {
            let table = try Self.load(path: path, fixed: fixed)
            store.replace(table)
            logger.info(
                "API keys reloaded",
                metadata: ["reason": "\(reason)", "clients": "\(table.clients.joined(separator: ","))"])
        } catch {
            // The error names a line, never a key; a missing file is reported by errno.
            logger.error(
                "API keys file not reloaded; keeping the previous keys",
                metadata: ["reason": "\(reason)", "error": "\(error)"])
        }
    }
}
