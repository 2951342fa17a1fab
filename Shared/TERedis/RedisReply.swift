/// One RESP2 reply, parsed recursively from hiredis' `redisReply`.
public enum RedisReply: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RedisReply])
    /// A list of stream entries (`[[id, [field, value, …]], …]`), read straight into `StreamEntry`s that
    /// share one buffer, in the place the command's `StreamReplyShape` names.
    case entries([StreamEntry])

    /// Text of a status, error or bulk reply (bulk bytes decoded as UTF-8).
    public var string: String? {
        switch self {
        case .status(let s), .error(let s): return s
        case .bulk(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .integer(let n): return String(n)
        case .null, .array, .entries: return nil
        }
    }

    public var bytes: [UInt8]? {
        if case .bulk(let bytes) = self { return bytes }
        return nil
    }

    /// An integer reply, or a bulk reply holding a decimal integer.
    public var int: Int64? {
        switch self {
        case .integer(let n): return n
        case .bulk, .status: return string.flatMap { Int64($0) }
        case .error, .null, .array, .entries: return nil
        }
    }

    public var array: [RedisReply]? {
        if case .array(let items) = self { return items }
        return nil
    }

    public var entries: [StreamEntry]? {
        if case .entries(let entries) = self { return entries }
        return nil
    }

    public var isNull: Bool { self == .null }

    /// Throws the error reply as a `RedisError(.server)`; returns any other reply.
    @discardableResult
    public func throwingError(file: String = #fileID, line: Int = #line) throws(RedisError) -> RedisReply {
        if case .error(let message) = self { throw RedisError(.server, message, file: file, line: line) }
        return self
    }
}
