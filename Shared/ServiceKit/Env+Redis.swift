@_exported import TECore
import TERedis

// `Env` and `ConfigurationError` live in TECore (the Kafka configuration reads through them too); every
// module that imports ServiceKit sees them as before.

extension Env {
    /// `REDIS_URL` (or `name`) parsed into a `RedisConfiguration`.
    public func redis(_ name: String = "REDIS_URL") throws(ConfigurationError) -> RedisConfiguration {
        let url = try string(name, hint: "redis://host:port/db")
        do {
            return try RedisConfiguration(url: url)
        } catch {
            // The parse error names the part that is wrong, never the password.
            throw ConfigurationError(variable: name, problem: "is malformed: \(error.message)")
        }
    }

    public static func redis(_ name: String = "REDIS_URL") throws(ConfigurationError) -> RedisConfiguration {
        try Env().redis(name)
    }
}

extension Env {
    /// `STREAM_SHARDS` for a stage whose one atomic step acknowledges its input and writes its output (or
    /// state). On a Redis Cluster (`REDIS_URL=redis+cluster://…`) that step must stay in one slot, which
    /// only the tagged shard names (`te:ticks:{k}`, `te:features:{k}`, …) give: S = 1, the unsharded names in
    /// different slots, stops the stage at start with one line naming the variable.
    public func stageShards() throws(ConfigurationError) -> Int {
        let shards = try streamShards()
        if shards == 1, (try? redis())?.cluster != nil {
            throw ConfigurationError(
                variable: "STREAM_SHARDS",
                problem:
                    "is 1 on a Redis Cluster (REDIS_URL=redis+cluster://…): the unsharded streams lie in different slots, so a stage's output and acknowledgement would cross slots; set STREAM_SHARDS to 2 or more (every stage the same)"
            )
        }
        return shards
    }
}
