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
        "outcome-tracker"
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

    /// This checkout's deploy/redis/users.acl rendered by scripts/redis-acl.sh as the strict file (real key
    /// names only, default user on), with the users' passwords from `.dev/env` (`REDIS_URL_<SERVICE>`), so a
    /// test on a private server checks the grants as they are in the tree, not as they were when the dev
    /// servers started. `testKeys`: every key pattern also allows `test:*` (per-test names). Returns the file's
    /// path.
    public static func renderStrictACL(testKeys: Bool = false) async throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let source = root.appendingPathComponent("deploy/redis/users.acl")
        let users = try String(contentsOf: source, encoding: .utf8).split(separator: "\n")
            .filter { $0.hasPrefix("user ") }.map { String($0.split(separator: " ")[1]) }
        var environment: [String: String] = [:]
        for user in users {
            let variable = redisVariable(user == "te-reader" ? "te" : user)
            guard let url = ProcessInfo.processInfo.environment[variable].flatMap(URLComponents.init(string:)),
                let password = url.password
            else { throw MissingServerError(variable: variable) }
            environment["REDIS_PASSWORD_" + user.uppercased().replacingOccurrences(of: "-", with: "_")] = password
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent(
            "users-strict-\(UUID().uuidString).acl"
        ).path
        let render = try ChildProcess(
            root.appendingPathComponent("scripts/redis-acl.sh").path,
            arguments: ["--default", "on"] + (testKeys ? ["--test-keys"] : []) + [source.path, "-", output],
            environment: environment)
        guard try await render.waitForExit() == 0 else {
            throw ChildProcessError(description: "redis-acl.sh failed: \(render.output())")
        }
        return output
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
