import Foundation

/// The store users the services run as in tests, as in production (deploy/redis/users.acl, PostgreSQL
/// migration 4): `ChildProcess.built` starts every service binary with its own Redis user and the
/// audit writer with its own PostgreSQL role, so a service stepping outside its grant fails its test.
/// Credentials come from `.dev/env` (`REDIS_URL_<SERVICE>`, `POSTGRES_URL_AUDIT_WRITER`); a missing one
/// fails the test.
public enum StoreUsers {
    /// The products that run as a Redis user of their own (`te`, the operator CLI, is run as the admin).
    public static let redisServices: Set<String> = [
        "ingest", "feature-pipeline", "strategy-engine", "opportunity-aggregator", "gateway", "audit-writer",
        "outcome-tracker",
    ]

    /// `REDIS_URL_<SERVICE>`'s variable name.
    public static func redisVariable(_ service: String) -> String {
        "REDIS_URL_" + service.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// `base` (any server: the shared one or a private one) with `service`'s user and password.
    public static func redisURL(for service: String, on base: String) throws -> String {
        try withCredentials(of: redisVariable(service), on: base)
    }

    /// `base` (e.g. a test's own database) as the audit writer's role.
    public static func auditWriterPostgresURL(on base: String) throws -> String {
        try withCredentials(of: "POSTGRES_URL_AUDIT_WRITER", on: base)
    }

    /// `POSTGRES_URL_READER`: the read-only role (`te audit`, `te model`).
    public static func readerPostgresURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["POSTGRES_URL_READER"], !url.isEmpty else {
            throw MissingServerError(variable: "POSTGRES_URL_READER")
        }
        return url
    }

    /// `base` (e.g. a test's own database) as the read-only role.
    public static func readerPostgresURL(on base: String) throws -> String {
        try withCredentials(of: "POSTGRES_URL_READER", on: base)
    }

    /// The environment a built product runs with: its own Redis user on the server `REDIS_URL` names;
    /// the audit writer also as `te_audit_writer`, with the owner's URL for its migrations.
    static func environment(for product: String, _ environment: [String: String]) throws -> [String: String] {
        var env = environment
        if redisServices.contains(product), let base = env["REDIS_URL"], !base.isEmpty {
            env["REDIS_URL"] = try redisURL(for: product, on: base)
        }
        if product == "audit-writer", let owner = env["POSTGRES_URL"], !owner.isEmpty {
            env["POSTGRES_MIGRATE_URL"] = env["POSTGRES_MIGRATE_URL"] ?? owner
            env["POSTGRES_URL"] = try auditWriterPostgresURL(on: owner)
        }
        return env
    }

    /// `base` with the user and password of `variable`'s URL. Plain text surgery on the authority, because
    /// a Redis Cluster URL (`redis+cluster://h:p,h:p/0`) names several hosts, which URLComponents refuses.
    private static func withCredentials(of variable: String, on base: String) throws -> String {
        guard let source = ProcessInfo.processInfo.environment[variable], !source.isEmpty,
            let from = URLComponents(string: source), let user = from.percentEncodedUser
        else { throw MissingServerError(variable: variable) }
        guard let schemeEnd = base.range(of: "://") else {
            throw ChildProcessError(description: "not a URL: \(base.prefix(12))…")
        }
        var authority = base[schemeEnd.upperBound...].prefix { $0 != "/" }
        let rest = base[authority.endIndex...]
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        let password = from.percentEncodedPassword.map { ":" + $0 } ?? ""
        return String(base[..<schemeEnd.upperBound]) + user + password + "@" + authority + rest
    }
}
