import Logging
import TECore
import TERedis

/// Reading a stream from its tail (`$`) with plain `XREAD BLOCK` on a connection of its own, so every
/// replica sees every entry: what the gateway's feature feed and push feeds share. Redis failures are logged and
/// retried after `retry`'s pause; `onWake` runs after every read, entries or not.
public enum StreamTail {
    /// 50 ms doubling to 2 s, jittered.
    public static let retry = RetryPolicy(initial: .milliseconds(50), maximum: .seconds(2))

    public static func follow(
        redis: RedisClient, stream: String, logger: Logger, onWake: () -> Void = {},
        _ handle: ([StreamEntry]) -> Void
    ) async {
        var cursor = "$"
        var backoff = RetryBackoff(retry)
        while !Task.isCancelled {
            do {
                for result in try await redis.xread(streams: [(stream, cursor)], count: 1000, block: .milliseconds(500))
                {
                    handle(result.entries)
                    if let last = result.entries.last { cursor = last.id }
                }
                backoff.succeeded()
            } catch {
                if Task.isCancelled { break }
                logger.warning(
                    "reading a stream failed; retrying", metadata: ["stream": "\(stream)", "error": "\(error)"])
                try? await Task.sleep(for: backoff.failed())
            }
            onWake()
        }
    }
}
