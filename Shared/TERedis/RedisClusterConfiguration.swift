/// One cluster node's address, as CLUSTER SHARDS and MOVED/ASK redirections name it.
public struct RedisNodeAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port` (an IPv6 host in brackets or not); nil when malformed.
    public init?(_ text: some StringProtocol) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// What a `RedisClient` needs beyond one node's settings to follow a Redis Cluster.
public struct RedisClusterSettings: Sendable {
    /// Nodes asked for the slot map, in order, until one answers (any node of the cluster will do).
    public var seeds: [RedisNodeAddress]
    /// How long a command keeps retrying while the cluster cannot serve its slot (a failover:
    /// connection refused, CLUSTERDOWN, TRYAGAIN) before the retriable error reaches the caller.
    /// Default: 10 s, enough for a replica to take over after the default node timeouts.
    public var retryWindow: Duration
    /// MOVED/ASK redirections followed for one command before its error reply is returned. Default: 16.
    public var maxRedirects: Int
    /// How long a replicated write (`RedisClient.pipeline(_:replicated:)`) waits for its master's online
    /// replicas to acknowledge it before the write counts as failed. Default: 2 s.
    public var replicaWait: Duration

    public init(
        seeds: [RedisNodeAddress], retryWindow: Duration = .seconds(10), maxRedirects: Int = 16,
        replicaWait: Duration = .seconds(2)
    ) {
        self.seeds = seeds
        self.retryWindow = retryWindow
        self.maxRedirects = maxRedirects
        self.replicaWait = replicaWait
    }
}

extension RedisConfiguration {
    static let clusterScheme = "redis+cluster://"

    /// Parses `redis+cluster://[[username]:password@]host:port[,host:port…][/0]`. A cluster has only
    /// database 0, so any other database is refused.
    static func cluster(url: String) throws(RedisError) -> RedisConfiguration {
        let usage = "expected redis+cluster://[:password@]host:port[,host:port…]/0"
        var rest = Substring(url.dropFirst(clusterScheme.count))
        if let q = rest.firstIndex(of: "?") { rest = rest[..<q] }
        var userinfo: Substring?
        if let at = rest.lastIndex(of: "@") {
            userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            guard db.isEmpty || db == "0" else {
                throw RedisError(
                    .configuration, "database '\(db)' on a cluster: a Redis Cluster has only database 0 (\(usage))")
            }
        }
        var seeds: [RedisNodeAddress] = []
        for part in rest.split(separator: ",", omittingEmptySubsequences: false) {
            guard let node = RedisNodeAddress(part), !node.host.isEmpty else {
                throw RedisError(.configuration, "node '\(part)' is not host:port with a port in 1...65535 (\(usage))")
            }
            seeds.append(node)
        }
        // The userinfo rules are redis://'s; parse them there with the first seed as its host.
        let userPart = userinfo.map { "\($0)@" } ?? ""
        var configuration = try RedisConfiguration(url: "redis://\(userPart)\(seeds[0])/0")
        configuration.cluster = RedisClusterSettings(seeds: seeds)
        return configuration
    }

    /// This configuration for one node of the cluster (same credentials and timeouts).
    func node(_ address: RedisNodeAddress) -> RedisConfiguration {
        var node = self
        node.host = address.host
        node.port = address.port
        node.database = 0
        node.cluster = nil
        return node
    }
}
