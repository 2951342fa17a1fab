import TEModels
import TERedis

/// A stage's business logic over one input stream. `StreamWorker` does everything else: the
/// consumer group (named `stage`), reading, decoding, writing the outputs and acknowledging them
/// atomically, retries, claiming entries of dead consumers, dead letters, metrics and shutdown.
///
/// Delivery is at-least-once: after a crash or a failed write, `handle` sees entries again.
public protocol StreamStage: Sendable {
    associatedtype Input: StreamMessage
    /// The consumer group name and the `stage` of dead letters and metrics.
    var stage: String { get }
    var inputStream: String { get }
    /// Called before the first batch (again if the consumer group had to be re-created), e.g. to
    /// rebuild state from Redis. Default: nothing.
    mutating func prepare(redis: RedisClient) async throws
    /// The outputs of a batch, written with the batch's acknowledgements in one MULTI/EXEC.
    /// Throwing leaves the entries pending: they are retried (one by one, to find a poison entry)
    /// and dead-lettered after `maxDeliveries`; a throwing `handle` should leave the stage's state
    /// as it was, since the same entries come again. Use `StageOutput.deadLetter` for input that can
    /// never succeed.
    mutating func handle(_ batch: [StreamDelivery<Input>]) async throws -> StageOutput
    /// Called after the output of the last `handle` and its acknowledgements were written. Default:
    /// nothing. A stage that holds state until its output is durable (see `StageOutput.keepPending`)
    /// releases it here; when the write fails this is not called and `handle` sees the entries again.
    mutating func committed() async
    /// True when the stage has output of its own while its input is quiet (`idle`). Default: false.
    var callsIdle: Bool { get }
    /// Called (when `callsIdle`) after a read of new entries came back empty: output without input, e.g.
    /// windows closed because the input went quiet. Written like a batch's output (no acknowledgements),
    /// then `committed` is called; throwing backs off. Default: nothing.
    mutating func idle() async throws -> StageOutput
}

extension StreamStage {
    public mutating func prepare(redis: RedisClient) async throws {}
    public mutating func committed() async {}
    public var callsIdle: Bool { false }
    public mutating func idle() async throws -> StageOutput { .none }
}

/// One decoded entry handed to a stage.
public struct StreamDelivery<Input: Sendable>: Sendable {
    public let id: String
    public let message: Input
    /// 1 on first delivery.
    public let deliveries: Int
    /// The entry's trace context (`tp`, a W3C `traceparent`) when it was sampled; see `StreamTrace`.
    public let traceParent: String?

    public init(id: String, message: Input, deliveries: Int, traceParent: String? = nil) {
        self.id = id
        self.message = message
        self.deliveries = deliveries
        self.traceParent = traceParent
    }
}

/// What a batch produces.
public struct StageOutput: Sendable {
    /// Written, in order, in the same MULTI/EXEC as the batch's XACK.
    public var commands: [RedisCommand]
    /// Written just BEFORE the atomic step, each on its own: keys outside the shard's slot (per-symbol
    /// latest values such as `te:online:SYMBOL`, see `ShardLeases.latest`), so each must be safe to
    /// write twice or late (a write that never lets an older value replace a newer one). Unsharded
    /// (no lease) they are the first commands of the MULTI/EXEC.
    public var outside: [RedisCommand] = []
    /// Input entries (by id) to move to `te:dlq` with a reason; they are acknowledged too.
    public var deadLetters: [(id: String, reason: String)]
    /// Entries of the batch that are handled but NOT acknowledged now: they stay pending in the group
    /// (so a crash re-delivers them) until the stage acknowledges them itself, with an XACK in a later
    /// output, once what they wait for has happened.
    public var keepPending: Set<String>

    public init(
        commands: [RedisCommand] = [], deadLetters: [(id: String, reason: String)] = [], keepPending: Set<String> = []
    ) {
        self.commands = commands
        self.deadLetters = deadLetters
        self.keepPending = keepPending
    }

    public static var none: StageOutput { StageOutput() }

    public mutating func append(_ command: RedisCommand) { commands.append(command) }

    /// XADD of `message` to `stream` (`MAXLEN ~ maxLen` when given), with the trace context `tp` last
    /// when given (see `StreamTrace`).
    public mutating func add<M: StreamMessage>(_ message: M, to stream: String, maxLen: Int?, tp: String? = nil) throws
    {
        var fields = try StreamFieldWriter(encoding: message)
        if let tp { fields.field(StreamTrace.field, tp) }
        commands.append(.xadd(stream, maxLen: maxLen, fields: fields))
    }

    public mutating func deadLetter(id: String, reason: String) {
        deadLetters.append((id, reason))
    }
}

extension RedisCommand {
    /// XADD of a message's stream fields (`v` first).
    public static func xadd<M: StreamMessage>(_ stream: String, maxLen: Int?, message: M) throws -> RedisCommand {
        .xadd(stream, maxLen: maxLen, fields: try StreamFieldWriter(encoding: message))
    }

    /// XADD of fields a stream codec wrote: the bytes go into the command as they are.
    public static func xadd(_ stream: String, maxLen: Int?, fields: StreamFieldWriter) -> RedisCommand {
        var c = RedisCommand(
            name: "XADD", capacity: 40 + stream.utf8.count + fields.bytes.count, arguments: 6 + fields.lengths.count)
        c.append(stream)
        if let maxLen {
            c.append("MAXLEN")
            c.append("~")
            c.append(maxLen)
        }
        c.append("*")
        c.append(arguments: fields.bytes, lengths: fields.lengths)
        return c
    }

    /// `HSET key field value …` of fields a stream codec wrote.
    public static func hset(_ key: String, fields: StreamFieldWriter) -> RedisCommand {
        var c = RedisCommand(
            name: "HSET", capacity: 16 + key.utf8.count + fields.bytes.count, arguments: 2 + fields.lengths.count)
        c.append(key)
        c.append(arguments: fields.bytes, lengths: fields.lengths)
        return c
    }
}
