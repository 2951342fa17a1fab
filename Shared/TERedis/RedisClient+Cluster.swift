extension RedisClient {
    /// True when this client follows a Redis Cluster (`redis+cluster://`).
    public var isCluster: Bool { cluster != nil }

    /// The slot map this client routes by; nil on a single node. `refresh` re-reads it first if it
    /// is known to be stale; without it, the map as redirections last left it.
    public func clusterSlotMap(refresh: Bool = true) async throws(RedisError) -> RedisClusterSlotMap? {
        guard let cluster else { return nil }
        if refresh { _ = try await cluster.masters() }
        return cluster.routing.map
    }

    /// Sends `command` to one node of the cluster as it is, following no redirection (node-local
    /// commands: CLUSTER …, INFO, SCAN cursors). On a single node, the same as `send`.
    public func send(_ command: RedisCommand, toNode node: RedisNodeAddress) async throws(RedisError) -> RedisReply {
        guard let cluster else { return try await send(command) }
        return try await cluster.send(command, to: node).throwingError()
    }
}
