import AuditStorage
import Foundation
import TEModels
import TEPostgres
import TERedis
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One running `audit-writer` (the built binary, `$TE_BIN_DIR/audit-writer`) on a test's own
/// stream, dead-letter stream and database.
struct AuditWriterHarness {
    let stream: String
    let dlq: String
    let metricsPort: Int
    let consumer = "test-consumer-\(UInt32.random(in: 0...UInt32.max))"

    init() throws {
        stream = TestEnv.uniqueName("audit")
        dlq = TestEnv.uniqueName("dlq")
        metricsPort = try TestEnv.freePort()
    }

    /// A second replica: the same streams (and group), its own consumer name and metrics port.
    init(sharing other: AuditWriterHarness) throws {
        stream = other.stream
        dlq = other.dlq
        metricsPort = try TestEnv.freePort()
    }

    func start(postgresURL: String, extra: [String: String] = [:]) throws -> ChildProcess {
        var environment = [
            "REDIS_URL": try TestEnv.redisURL(), "POSTGRES_URL": postgresURL, "AUDIT_STREAM": stream,
            "DLQ_STREAM": dlq, "METRICS_PORT": String(metricsPort), "AUDIT_BATCH_SIZE": "50",
            "STREAM_BLOCK_MS": "100", "CONSUMER_NAME": consumer, "RETRY_BACKOFF_MAX_MS": "500", "LOG_LEVEL": "info"
        ]
        for (k, v) in extra { environment[k] = v }
        return try ChildProcess.built("audit-writer", environment: environment)
    }

    func publish(_ records: [AuditRecord], redis: RedisClient) async throws {
        var commands: [RedisCommand] = []
        for record in records {
            commands.append(.xadd(stream, maxLen: nil, fields: try StreamFieldEncoder.encode(record)))
        }
        for chunk in stride(from: 0, to: commands.count, by: 200) {
            _ = try await redis.pipeline(Array(commands[chunk..<min(chunk + 200, commands.count)]))
        }
    }

    /// The value of an unlabelled metric from `/metrics`, nil when unreachable or absent.
    func metric(_ name: String) async -> Double? {
        for line in await metricsText().split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1))
        }
        return nil
    }

    /// The whole `/metrics` text, empty when unreachable.
    func metricsText() async -> String {
        guard let url = URL(string: "http://127.0.0.1:\(metricsPort)/metrics"),
            let (data, _) = try? await URLSession.shared.data(from: url)
        else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    /// GET /readyz: status and body.
    func readyz() async throws -> (status: Int, body: String) {
        let url = try #require(URL(string: "http://127.0.0.1:\(metricsPort)/readyz"))
        let (data, response) = try await URLSession.shared.data(from: url)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    func cleanUp(redis: RedisClient) async {
        _ = try? await redis.del([stream, dlq])
        redis.close()
    }
}

extension PostgresConfiguration {
    /// POSTGRES_URL with another database.
    static func url(_ base: String, database: String) throws -> String {
        guard var components = URLComponents(string: base) else { throw TestSetupError("unparseable POSTGRES_URL") }
        components.path = "/" + database
        guard let url = components.string else { throw TestSetupError("cannot rebuild POSTGRES_URL") }
        return url
    }
}

func rowCount(_ db: PostgresConnection) async throws -> Int {
    Int(try await db.query("SELECT count(*) AS n FROM decisions").rows.first?["n"] ?? "") ?? -1
}

/// `writer`'s chain as stored, checked row by row the way `te audit verify --chain` does: seq 1, 2, … without
/// a gap, each prev_hash the row before's row_hash, each row_hash recomputed from the row's canonical line.
/// Returns the number of rows, or the first row that does not fit.
func checkedChain(_ db: PostgresConnection, writer: String) async throws -> Result<Int, ChainBreak> {
    let rows = try await db.query(
        "SELECT chain_seq, prev_hash, row_hash, " + AuditChain.canonicalColumns.joined(separator: ", ")
            + " FROM decisions WHERE chain_writer = $1 ORDER BY chain_seq", [writer]
    ).rows
    var previous = AuditChain.genesis
    for (i, row) in rows.enumerated() {
        let line = AuditChain.canonicalLine(columns: Array(row.values.dropFirst(3)))
        guard row["chain_seq"] == String(i + 1), row["prev_hash"] == previous,
            row["row_hash"] == AuditChain.rowHash(prevHash: previous, canonicalLine: line)
        else { return .failure(ChainBreak(writer: writer, position: i + 1, row: row.values)) }
        previous = row["row_hash"] ?? ""
    }
    return .success(rows.count)
}

struct ChainBreak: Error, Equatable {
    var writer: String
    var position: Int
    var row: [String?]
}

/// Counts rows, treating a missing table (writer not migrated yet) or an unreachable server as -1.
func rowCountIfReady(_ db: PostgresConnection) async -> Int {
    (try? await rowCount(db)) ?? -1
}

/// A PostgreSQL cluster of the test's own (so it can be stopped and started): initdb into a
/// temporary directory as the `postgres` OS user when running as root, trust authentication on
/// 127.0.0.1, a free port. Never touches the shared cluster.
final class PrivatePostgresCluster: Sendable {
    let port: Int
    let directory: String
    let binDirectory: String

    init() async throws {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = versions.sorted(by: { (Int($0) ?? 0) < (Int($1) ?? 0) }).last else {
            throw TestSetupError("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
        }
        binDirectory = "/usr/lib/postgresql/\(version)/bin"
        port = try TestEnv.freePort()
        directory = NSTemporaryDirectory() + "te-pg-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if getuid() == 0 { try await Self.run(["/bin/chown", "postgres:postgres", directory]) }
        try await asPostgres("initdb", ["-D", directory + "/data", "-U", "te", "-A", "trust", "--no-sync"])
        try await start()
        try await asPostgres("createdb", ["-h", "127.0.0.1", "-p", String(port), "-U", "te", "te"])
        // The audit writer runs as its own role (StoreUsers); trust auth, so any password is accepted.
        try await asPostgres(
            "psql",
            ["-h", "127.0.0.1", "-p", String(port), "-U", "te", "-d", "te", "-c", "CREATE ROLE te_audit_writer LOGIN"])
    }

    var url: String { "postgres://te@127.0.0.1:\(port)/te" }

    func start() async throws {
        try await asPostgres(
            "pg_ctl",
            [
                "-D", directory + "/data", "-l", directory + "/log", "-w", "-o",
                "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off", "start"
            ])
    }

    func stop() async throws {
        try await asPostgres("pg_ctl", ["-D", directory + "/data", "-m", "fast", "-w", "stop"])
    }

    func destroy() async {
        try? await stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func asPostgres(_ tool: String, _ arguments: [String]) async throws {
        let command = (getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []) + [binDirectory + "/" + tool]
        // Close every descriptor above stderr first, so the server `pg_ctl start` leaves running
        // holds none of the test process's descriptors (sockets of other child processes).
        let closeAndExec = #"for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done; exec "$@""#
        try await Self.run(["/bin/bash", "-c", closeAndExec, "bash"] + command + arguments)
    }

    /// posix_spawn + waitpid (polled): Foundation's Process missed the exit of `runuser … pg_ctl
    /// start` here (its child stayed a zombie), so this helper does without it.
    private static func run(_ argv: [String]) async throws {
        let logPath = NSTemporaryDirectory() + "te-pg-cmd-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: logPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArgs, environ)
        guard spawned == 0 else { throw TestSetupError("cannot start \(argv[0]): errno \(spawned)") }
        var status: Int32 = 0
        let deadline = ContinuousClock.now + .seconds(120)
        while waitpid(pid, &status, WNOHANG) == 0 {
            if ContinuousClock.now > deadline {
                kill(pid, SIGKILL)
                throw TestSetupError("\(argv.joined(separator: " ")) did not finish in 120 s")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let exited = (status & 0x7f) == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw TestSetupError("\(argv.joined(separator: " ")) failed (status \(status)): \(output)")
        }
    }
}
