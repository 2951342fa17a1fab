import Foundation
import GatewayEngine
import Logging
import ServiceKit
import ServiceLifecycle
import Synchronization
import UnixSignals

/// A client the gateway knows (by its key) or the anonymous caller when auth is off: its name for the
/// audit record and logs, its request counters, and its rate-limit bucket. One object per client name
/// for the life of the process (a reload keeps it), so counters and buckets survive key rotation and no
/// lookup or lock is shared between clients on the request path.
public final class APIClient: Sendable {
    /// The name in logs and the `client` metric label.
    public let name: String
    /// What the decision engine needs of it: the name in the audit record (nil for the anonymous caller, auth
    /// off) and its counters.
    public let score: ScoreClient
    var counters: GatewayMetrics.ClientCounters { score.counters }
    /// `GATEWAY_RATE_LIMIT`'s bucket; nil when unset (then nothing is checked).
    let limiter: ClientRateLimiter?

    init(name: String, authenticated: Bool, metrics: GatewayMetrics, rateLimit: Double?) {
        self.name = name
        score = ScoreClient(auditName: authenticated ? name : nil, counters: metrics.clientCounters(name))
        limiter = rateLimit.map { ClientRateLimiter(ratePerSecond: $0) }
    }

    /// The metric label of requests made with auth off.
    public static var anonymousName: String { ScoreClient.anonymousName }
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
