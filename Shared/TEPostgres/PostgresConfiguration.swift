import CLibPQ

/// Where and how to connect. Built from a libpq connection URI
/// (`postgres://user:pass@host:port/db?sslmode=require&...`); every URI parameter is passed through
/// to libpq unchanged, so TLS (`sslmode`, `sslrootcert`, …) works as libpq documents it.
public struct PostgresConfiguration: Sendable, CustomStringConvertible {
    /// libpq keywords and values parsed from the URL, in libpq's order, non-empty values only.
    var parameters: [(String, String)]
    private let password: String?

    /// Overrides the URL's database. Default: the URL's.
    public var database: String?
    /// Reported in `pg_stat_activity`. Default: `te`, unless the URL sets `application_name`.
    public var applicationName: String
    /// Seconds libpq waits for a connection. Default: 5, unless the URL sets `connect_timeout`.
    public var connectTimeoutSeconds: Int

    /// Parses and validates `url` with libpq's own parser (no connection is made).
    public init(url: String) throws(PostgresError) {
        guard url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") else {
            throw PostgresError(.configuration, message: "POSTGRES_URL must start with postgres:// or postgresql://")
        }
        var errorMessage: UnsafeMutablePointer<CChar>? = nil
        guard let options = PQconninfoParse(url, &errorMessage) else {
            let reason = errorMessage.map { String(cString: $0) } ?? "unparseable"
            if let errorMessage { PQfreemem(errorMessage) }
            throw PostgresError(
                .configuration,
                message: "POSTGRES_URL is malformed: \(reason.trimmingTrailingNewlines())")
        }
        defer { PQconninfoFree(options) }
        var parameters: [(String, String)] = []
        var password: String?
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val, value.pointee != 0 {
                let k = String(cString: keyword)
                let v = String(cString: value)
                if k == "password" { password = v }
                parameters.append((k, v))
            }
            option += 1
        }
        self.parameters = parameters
        self.password = password
        self.database = nil
        self.applicationName = parameters.first { $0.0 == "application_name" }?.1 ?? "te"
        self.connectTimeoutSeconds = parameters.first { $0.0 == "connect_timeout" }.flatMap { Int($0.1) } ?? 5
    }

    /// The keywords/values handed to `PQconnectdbParams`, with this configuration's overrides and
    /// TCP keepalives on (so a dead server is noticed), unless the URL chose otherwise.
    var connectParameters: [(String, String)] {
        var out = parameters.filter { !["dbname", "application_name", "connect_timeout"].contains($0.0) }
        if let db = database ?? parameters.first(where: { $0.0 == "dbname" })?.1 { out.append(("dbname", db)) }
        out.append(("application_name", applicationName))
        out.append(("connect_timeout", String(connectTimeoutSeconds)))
        for (k, v) in [
            ("keepalives", "1"), ("keepalives_idle", "10"), ("keepalives_interval", "5"), ("keepalives_count", "3")
        ]
        where !out.contains(where: { $0.0 == k }) {
            out.append((k, v))
        }
        return out
    }

    /// Removes the password from a message (libpq never puts it there, but a server log line or a
    /// future libpq could; this is cheap insurance).
    func scrub(_ message: String) -> String {
        guard let password, !password.isEmpty, message.contains(password) else { return message }
        return message.replacingAll(password, with: "***")
    }

    /// The connection target without the password, for logs.
    public var description: String {
        let get = { (k: String) in self.parameters.first { $0.0 == k }?.1 }
        let host = get("host") ?? get("hostaddr") ?? "localhost"
        let db = database ?? get("dbname") ?? "?"
        return "postgres://\(get("user") ?? "")@\(host):\(get("port") ?? "5432")/\(db)"
    }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var s = Substring(self)
        while let last = s.last, last == "\n" || last == " " { s = s.dropLast() }
        return String(s)
    }

    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            out += rest[..<range.lowerBound]
            out += replacement
            rest = rest[range.upperBound...]
        }
        return out + rest
    }
}
