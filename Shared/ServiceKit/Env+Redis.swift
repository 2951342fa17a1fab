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
