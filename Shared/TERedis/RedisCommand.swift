/// One command's arguments, binary-safe. Stored as one flat byte buffer plus argument lengths, so
/// building a command costs two allocations however many arguments it has.
public struct RedisCommand: Sendable, CustomStringConvertible {
    @usableFromInline var buffer: [UInt8]
    @usableFromInline var lengths: [Int]
    /// Where the reply holds stream entries, read as `RedisReply.entries`; nil for any other reply.
    var replyShape: StreamReplyShape?

    public init(_ args: [String]) {
        buffer = []
        lengths = []
        lengths.reserveCapacity(args.count)
        var total = 0
        for a in args { total += a.utf8.count }
        buffer.reserveCapacity(total)
        for a in args { append(a) }
    }

    public init(_ args: String...) { self.init(args) }

    public init(bytes args: [[UInt8]]) {
        buffer = []
        lengths = []
        for a in args { append(bytes: a) }
    }

    /// An empty command to be filled with `append`; `capacity` is a byte estimate, `arguments` a count
    /// estimate (the name included).
    public init(name: String, capacity: Int = 64, arguments: Int = 8) {
        buffer = []
        buffer.reserveCapacity(capacity)
        lengths = []
        lengths.reserveCapacity(arguments)
        append(name)
    }

    public mutating func append(_ arg: String) {
        buffer.append(contentsOf: arg.utf8)
        lengths.append(arg.utf8.count)
    }

    public mutating func append(_ arg: Int) { append(String(arg)) }

    public mutating func append(bytes arg: [UInt8]) {
        buffer.append(contentsOf: arg)
        lengths.append(arg.count)
    }

    /// Appends arguments laid out as one flat buffer plus each one's length (a stream codec's output).
    public mutating func append(arguments bytes: [UInt8], lengths: [Int]) {
        buffer.append(contentsOf: bytes)
        self.lengths.append(contentsOf: lengths)
    }

    public var argumentCount: Int { lengths.count }

    /// The command's name, upper-cased (`XADD`).
    public var name: String { arguments.first.map { String(decoding: $0, as: UTF8.self).uppercased() } ?? "" }

    public var arguments: [[UInt8]] {
        var out: [[UInt8]] = []
        var offset = 0
        for n in lengths {
            out.append(Array(buffer[offset..<offset + n]))
            offset += n
        }
        return out
    }

    /// Arguments as text, for logs and errors (values longer than 64 bytes are cut).
    public var description: String {
        arguments.map { arg -> String in
            let text = String(decoding: arg.prefix(64), as: UTF8.self)
            return arg.count > 64 ? text + "…" : text
        }.joined(separator: " ")
    }

    /// The command with its reply's stream entries read as `RedisReply.entries`.
    func replying(_ shape: StreamReplyShape) -> RedisCommand {
        var c = self
        c.replyShape = shape
        return c
    }

    /// This command (a script) replies `[status, XREAD/XREADGROUP reply, …]`: its entries are read into one
    /// buffer, as XREADGROUP's own (ServiceKit's fenced read).
    public func replyingStreamReadSecond() -> RedisCommand { replying(.scriptStreams) }

    // MARK: Commands a pipeline or transaction writes

    /// `XADD stream [MAXLEN ~ n] id field value …`.
    public static func xadd(_ stream: String, id: String = "*", maxLen: Int?, fields: [(String, String)])
        -> RedisCommand
    {
        var c = RedisCommand(name: "XADD", capacity: 32 + stream.utf8.count + fields.count * 24)
        c.append(stream)
        if let maxLen {
            c.append("MAXLEN")
            c.append("~")
            c.append(maxLen)
        }
        c.append(id)
        for (k, v) in fields {
            c.append(k)
            c.append(v)
        }
        return c
    }

    public static func xack(_ stream: String, group: String, ids: [String]) -> RedisCommand {
        var c = RedisCommand(name: "XACK", capacity: 16 + ids.count * 20)
        c.append(stream)
        c.append(group)
        for id in ids { c.append(id) }
        return c
    }

    /// `SET key value [EX seconds]`.
    public static func set(_ key: String, _ value: String, expireSeconds: Int? = nil) -> RedisCommand {
        var c = RedisCommand(name: "SET")
        c.append(key)
        c.append(value)
        if let expireSeconds {
            c.append("EX")
            c.append(expireSeconds)
        }
        return c
    }

    public static func set(_ key: String, bytes value: [UInt8], expireSeconds: Int? = nil) -> RedisCommand {
        var c = RedisCommand(name: "SET")
        c.append(key)
        c.append(bytes: value)
        if let expireSeconds {
            c.append("EX")
            c.append(expireSeconds)
        }
        return c
    }

    public static func get(_ key: String) -> RedisCommand { RedisCommand("GET", key) }

    public static func hset(_ key: String, fields: [(String, String)]) -> RedisCommand {
        var c = RedisCommand(name: "HSET", capacity: 16 + fields.count * 24)
        c.append(key)
        for (k, v) in fields {
            c.append(k)
            c.append(v)
        }
        return c
    }

    public static func expire(_ key: String, seconds: Int) -> RedisCommand {
        var c = RedisCommand(name: "EXPIRE")
        c.append(key)
        c.append(seconds)
        return c
    }

    public static func del(_ keys: [String]) -> RedisCommand { RedisCommand(["DEL"] + keys) }
}

/// Where a stream command's reply holds its entry lists.
enum StreamReplyShape: Sendable {
    /// The reply is the list (XRANGE, XREVRANGE, XCLAIM).
    case entries
    /// `[[stream, list], …]` (XREAD, XREADGROUP).
    case streams
    /// `[next, list, deleted ids]` (XAUTOCLAIM).
    case autoclaim
    /// A script's `[status, [[stream, list], …], …]`: an XREAD/XREADGROUP reply as its second element.
    case scriptStreams
}
