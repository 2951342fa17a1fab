import Foundation
import TECore

/// How a `StreamWorker` reads, retries and recovers. Every value can come from the environment
/// (`fromEnvironment`).
public struct StreamWorkerConfiguration: Sendable {
    /// Stable across restarts, so a restarted process re-reads its own pending entries first.
    /// `CONSUMER_NAME`; default: the host name.
    public var consumerName: String
    /// Entries per XREADGROUP. `STREAM_BATCH_SIZE`; default 100.
    public var batchSize: Int
    /// XREADGROUP BLOCK time; also bounds how long a graceful shutdown waits for the read.
    /// `STREAM_BLOCK_MS`; default 1000.
    public var block: Duration
    /// Entries pending this long on any consumer are claimed. `CLAIM_MIN_IDLE_MS`; default 30000.
    public var claimMinIdle: Duration
    /// How often pending entries are checked for claiming. `CLAIM_INTERVAL_MS`; default 5000.
    public var claimInterval: Duration
    /// Deliveries before an entry goes to the dead-letter stream. `MAX_DELIVERIES`; default 5.
    public var maxDeliveries: Int
    /// First delay after a failure; doubles per consecutive failure. `RETRY_BACKOFF_MS`; default 100.
    public var retryBackoff: Duration
    /// Upper bound of the retry delay. `RETRY_BACKOFF_MAX_MS`; default 5000.
    public var retryBackoffMax: Duration
    /// The retry delays: `retryBackoff` doubling to `retryBackoffMax`, jitter 0.5.
    public var retry: RetryPolicy { RetryPolicy(initial: retryBackoff, maximum: retryBackoffMax) }
    /// How often lag and pending gauges are refreshed from XINFO GROUPS. `LAG_REFRESH_MS`; default 5000.
    public var gaugeInterval: Duration
    /// Where a new consumer group starts: "0" (the whole stream) or "$" (new entries only).
    /// `STREAM_GROUP_START`; default "0".
    public var groupStartID: String
    /// The dead-letter stream. Default: `te:dlq`.
    public var deadLetterStream: String
    /// `MAXLEN ~` of the dead-letter stream. `DLQ_MAXLEN`; default 100000.
    public var deadLetterMaxLen: Int

    public init(
        consumerName: String = StreamWorkerConfiguration.hostName(), batchSize: Int = 100,
        block: Duration = .seconds(1), claimMinIdle: Duration = .seconds(30), claimInterval: Duration = .seconds(5),
        maxDeliveries: Int = 5, retryBackoff: Duration = .milliseconds(100), retryBackoffMax: Duration = .seconds(5),
        gaugeInterval: Duration = .seconds(5), groupStartID: String = "0", deadLetterStream: String = "te:dlq",
        deadLetterMaxLen: Int = 100_000
    ) {
        self.consumerName = consumerName
        self.batchSize = batchSize
        self.block = block
        self.claimMinIdle = claimMinIdle
        self.claimInterval = claimInterval
        self.maxDeliveries = maxDeliveries
        self.retryBackoff = retryBackoff
        self.retryBackoffMax = retryBackoffMax
        self.gaugeInterval = gaugeInterval
        self.groupStartID = groupStartID
        self.deadLetterStream = deadLetterStream
        self.deadLetterMaxLen = deadLetterMaxLen
    }

    public static func fromEnvironment(_ env: Env = Env()) throws(ConfigurationError) -> StreamWorkerConfiguration {
        let d = StreamWorkerConfiguration()
        let start = try env.string("STREAM_GROUP_START", default: d.groupStartID)
        guard start == "0" || start == "$" else {
            throw ConfigurationError(variable: "STREAM_GROUP_START", problem: "must be 0 or $, got \"\(start)\"")
        }
        let retryBackoff = try env.milliseconds("RETRY_BACKOFF_MS", default: d.retryBackoff)
        let retryBackoffMax = try env.milliseconds("RETRY_BACKOFF_MAX_MS", default: d.retryBackoffMax)
        guard retryBackoffMax >= retryBackoff else {
            throw ConfigurationError(variable: "RETRY_BACKOFF_MAX_MS", problem: "must be at least RETRY_BACKOFF_MS")
        }
        return StreamWorkerConfiguration(
            consumerName: try env.string("CONSUMER_NAME", default: d.consumerName),
            batchSize: try env.int("STREAM_BATCH_SIZE", default: d.batchSize, range: 1...10_000),
            block: try env.milliseconds("STREAM_BLOCK_MS", default: d.block),
            claimMinIdle: try env.milliseconds("CLAIM_MIN_IDLE_MS", default: d.claimMinIdle),
            claimInterval: try env.milliseconds("CLAIM_INTERVAL_MS", default: d.claimInterval),
            maxDeliveries: try env.int("MAX_DELIVERIES", default: d.maxDeliveries, range: 1...1000),
            retryBackoff: retryBackoff,
            retryBackoffMax: retryBackoffMax,
            gaugeInterval: try env.milliseconds("LAG_REFRESH_MS", default: d.gaugeInterval),
            groupStartID: start,
            deadLetterStream: d.deadLetterStream,
            deadLetterMaxLen: try env.int("DLQ_MAXLEN", default: d.deadLetterMaxLen, range: 1...Int.max))
    }

    public static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "consumer" }
        let name = String(cString: buffer)
        return name.isEmpty ? "consumer" : name
    }
}
