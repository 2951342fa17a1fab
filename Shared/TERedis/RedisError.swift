/// A failed Redis operation. `isRetriable` says whether the same command may succeed when sent again
/// (the connection broke or timed out and the client reconnects on the next command).
public struct RedisError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// Could not connect, or the connection broke while sending or reading.
        case connection
        /// The socket timed out waiting for a reply.
        case timeout
        /// Redis answered with an error reply (`message` holds it, e.g. `WRONGTYPE …`).
        case server
        /// The reply did not have the shape the command promises.
        case unexpectedReply
        /// The configuration (URL) is invalid.
        case configuration
        /// The client was closed.
        case closed
    }

    public let code: Code
    public let message: String
    public let file: String
    public let line: Int

    public init(_ code: Code, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    /// True when the command may succeed if sent again: the client reconnects on the next command.
    public var isRetriable: Bool {
        switch code {
        case .connection, .timeout: return true
        case .server, .unexpectedReply, .configuration, .closed: return false
        }
    }

    /// True for an error reply whose first word is `prefix` (`BUSYGROUP`, `NOGROUP`, `WRONGTYPE`).
    public func isServerError(_ prefix: String) -> Bool {
        code == .server && message.hasPrefix(prefix)
    }

    public var description: String {
        switch code {
        case .connection: return "redis connection error: \(message)"
        case .timeout: return "redis timeout: \(message)"
        case .server: return "redis error reply: \(message)"
        case .unexpectedReply: return "unexpected redis reply: \(message)"
        case .configuration: return "redis configuration error: \(message)"
        case .closed: return "redis client closed"
        }
    }
}
