import Logging

/// One schema change. `sql` is a fixed script (several statements allowed) that runs inside the
/// migration's own transaction, so a failing migration leaves the database as it was.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: StaticString

    public init(version: Int, name: String, sql: StaticString) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

public struct MigrationError: Error, CustomStringConvertible {
    public var version: Int
    public var name: String
    public var underlying: PostgresError
    public var description: String { "migration \(version) (\(name)) failed: \(underlying)" }
}

/// Applies migrations in version order, each once, recorded in
/// `schema_migrations(version, name, applied_at)`. Writers starting together serialise on a
/// PostgreSQL advisory lock, so each migration is applied by exactly one of them.
public enum Migrator {
    /// Key of the session advisory lock taken while migrating (arbitrary, fixed: "te-mig").
    static let advisoryLockKey = "7365001"

    /// Applies the missing migrations; returns the versions applied now (empty when up to date).
    @discardableResult
    public static func migrate(
        _ connection: PostgresConnection, migrations: [Migration], logger: Logger
    ) async throws -> [Int] {
        let versions = migrations.map(\.version)
        precondition(Set(versions).count == versions.count, "duplicate migration versions")
        try await connection.withTransaction { tx in
            // Serialise writers; a transaction-level lock is released by COMMIT/ROLLBACK even if
            // this process dies.
            try await tx.execute("SELECT pg_advisory_xact_lock($1)", [advisoryLockKey])
            try await tx.execute(
                script: """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """)
        }
        var applied: [Int] = []
        for migration in migrations.sorted(by: { $0.version < $1.version }) {
            do {
                let didApply = try await connection.withTransaction { tx in
                    try await tx.execute("SELECT pg_advisory_xact_lock($1)", [advisoryLockKey])
                    let existing = try await tx.query(
                        "SELECT name FROM schema_migrations WHERE version = $1", [String(migration.version)])
                    if !existing.rows.isEmpty { return false }
                    try await tx.execute(script: migration.sql)
                    try await tx.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        [String(migration.version), migration.name])
                    return true
                }
                if didApply {
                    applied.append(migration.version)
                    logger.info(
                        "migration applied", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
                }
            } catch let error as PostgresError {
                throw MigrationError(version: migration.version, name: migration.name, underlying: error)
            }
        }
        return applied
    }
}
