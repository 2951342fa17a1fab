/// An error from PostgreSQL or libpq. Carries the server's SQLSTATE, message and detail when the
/// server sent them, and the call site. Its description never contains the connection password:
/// it is built only from server/libpq messages, which are scrubbed of it (see `PostgresConfiguration`).
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: String, Hashable, Sendable {
            case connection, connectionLost, server, copy, protocolViolation, closed, configuration
        }
        let base: Base
        /// Could not connect (refused, authentication, timeout, backoff pending).
        public static let connection = Code(base: .connection)
        /// The connection broke during an operation (or a transaction's session is gone).
        public static let connectionLost = Code(base: .connectionLost)
        /// The server answered with an error (see `sqlState`).
        public static let server = Code(base: .server)
        /// A COPY could not be sent.
        public static let copy = Code(base: .copy)
        /// The server or libpq answered something this module did not expect.
        public static let protocolViolation = Code(base: .protocolViolation)
        /// The connection was closed by its owner.
        public static let closed = Code(base: .closed)
        /// The connection URL or a parameter is malformed.
        public static let configuration = Code(base: .configuration)
        public var description: String { base.rawValue }
    }

    public var code: Code
    /// Five-character SQLSTATE (e.g. `23505`), when the server sent one.
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?
    public var file: String
    public var line: Int

    public init(
        _ code: Code, message: String, sqlState: String? = nil, detail: String? = nil, hint: String? = nil,
        file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.file = file
        self.line = line
    }

    /// SQLSTATE class 22 (data exception) or 23 (integrity constraint violation): the data itself is
    /// unacceptable, so retrying the same row can never succeed.
    public var isDataError: Bool {
        guard let sqlState else { return false }
        return sqlState.hasPrefix("22") || sqlState.hasPrefix("23")
    }

    /// Worth retrying later: the connection is gone or the server is temporarily unable to serve
    /// (class 08 connection exception, 57P0x shutdown/cannot-connect-now, 53 insufficient resources,
    /// 40001 serialization failure, 40P01 deadlock).
    public var isRetriable: Bool {
        switch code.base {
        case .connection, .connectionLost: return true
        case .copy, .protocolViolation, .closed, .configuration: return false
        case .server:
            guard let s = sqlState else { return false }
            return s.hasPrefix("08") || s.hasPrefix("53") || s == "57P01" || s == "57P02" || s == "57P03"
                || s == "40001" || s == "40P01"
        }
    }

    public var description: String {
        var out = "postgres \(code)"
        if let sqlState { out += " [\(sqlState)]" }
        out += ": \(message)"
        if let detail { out += " (detail: \(detail))" }
        if let hint { out += " (hint: \(hint))" }
        return out
    }
}
