import Foundation
import TECore

/// Where and how a `RedisClient` connects. Secrets never appear in `description`.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// Logical database selected after connecting. Default: 0.
    public var database: Int
    public var username: String?
    public var password: String?
    /// Default: 2 s.
    public var connectTimeout: Duration
    /// Socket timeout for one reply; a blocking read (`BLOCK n`) waits n plus this. Default: 5 s.
    public var commandTimeout: Duration
    /// The wait before each reconnect while attempts fail. Default: 50 ms doubling to 2 s, jitter 0.5.
    public var reconnect: RetryPolicy
    /// Set for a `redis+cluster://` URL: the client follows the cluster's slot map; `host`/`port` are the first seed.
    public var cluster: RedisClusterSettings?

    public init(
        host: String = "127.0.0.1", port: Int = 6379, database: Int = 0, username: String? = nil,
        password: String? = nil
    ) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
        self.connectTimeout = .seconds(2)
        self.commandTimeout = .seconds(5)
        self.reconnect = RetryPolicy(initial: .milliseconds(50), maximum: .seconds(2))
        self.cluster = nil
    }

    /// Parses `redis://[[username]:password@]host[:port][/db]`, or a cluster's
    /// `redis+cluster://host:port[,host:port…]/0` (see `cluster(url:)`).
    public init(url: String) throws(RedisError) {
        if url.hasPrefix(Self.clusterScheme) {
            self = try Self.cluster(url: url)
            return
        }
        let usage = "expected redis://[:password@]host:port[/db] or redis+cluster://host:port[,host:port…]/0"
        guard url.hasPrefix("redis://") else {
            throw RedisError(.configuration, "URL must start with redis:// or redis+cluster:// (\(usage))")
        }
        var rest = Substring(url.dropFirst("redis://".count))
        if let q = rest.firstIndex(of: "?") { rest = rest[..<q] }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                let user = String(userinfo[..<colon])
                username = user.isEmpty ? nil : user.removingPercentEncoding ?? user
                let pass = String(userinfo[userinfo.index(after: colon)...])
                password = pass.removingPercentEncoding ?? pass
            } else if !userinfo.isEmpty {
                // `redis://secret@host`: a lone userinfo is the password, as redis-cli reads it.
                password = String(userinfo).removingPercentEncoding ?? String(userinfo)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else {
                    throw RedisError(.configuration, "database '\(db)' is not a number (\(usage))")
                }
                database = n
            }
        }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw RedisError(.configuration, "unterminated IPv6 host (\(usage))")
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw RedisError(.configuration, "missing host (\(usage))") }
        var port = 6379
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else {
                throw RedisError(.configuration, "port '\(portText)' is not a number in 1...65535 (\(usage))")
            }
            port = p
        }
        self.init(host: String(host), port: port, database: database, username: username, password: password)
    }

    public var description: String {
        let auth = password == nil ? "" : "\(username ?? ""):***@"
        if let cluster {
            return "redis+cluster://\(auth)\(cluster.seeds.map(\.description).joined(separator: ","))/0"
        }
        return "redis://\(auth)\(host):\(port)/\(database)"
    }
}
