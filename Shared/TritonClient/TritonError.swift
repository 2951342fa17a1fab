/// An error from a Triton call: a gRPC status the server sent, or a local failure (connection, deadline, protocol).
///
/// `code` is extensible (new codes can be added without breaking `switch`es that use `default`), `message` is
/// the server's `grpc-message` or a local explanation, and `file`/`line` name the call site that issued the call
/// (kept out of `description`, which operators read).
public struct TritonError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable {
            case cancelled, unknown, invalidArgument, deadlineExceeded, notFound, alreadyExists, permissionDenied
            case resourceExhausted, failedPrecondition, aborted, outOfRange, unimplemented, internalError
            case unavailable, dataLoss, unauthenticated, connection, protocolViolation
        }
        fileprivate let base: Base
        public var description: String { base.rawValue }

        public static let cancelled = Code(base: .cancelled)
        public static let unknown = Code(base: .unknown)
        public static let invalidArgument = Code(base: .invalidArgument)
        /// The call's deadline passed (locally: the stream was reset; or the server said DEADLINE_EXCEEDED).
        public static let deadlineExceeded = Code(base: .deadlineExceeded)
        public static let notFound = Code(base: .notFound)
        public static let alreadyExists = Code(base: .alreadyExists)
        public static let permissionDenied = Code(base: .permissionDenied)
        public static let resourceExhausted = Code(base: .resourceExhausted)
        public static let failedPrecondition = Code(base: .failedPrecondition)
        public static let aborted = Code(base: .aborted)
        public static let outOfRange = Code(base: .outOfRange)
        public static let unimplemented = Code(base: .unimplemented)
        public static let internalError = Code(base: .internalError)
        /// The server answered UNAVAILABLE.
        public static let unavailable = Code(base: .unavailable)
        public static let dataLoss = Code(base: .dataLoss)
        public static let unauthenticated = Code(base: .unauthenticated)
        /// No usable connection: connect refused/failed, or the connection was lost while the call was in flight.
        public static let connection = Code(base: .connection)
        /// The peer broke HTTP/2 or gRPC framing, or sent a message we cannot decode.
        public static let protocolViolation = Code(base: .protocolViolation)

        /// The code for a `grpc-status` value (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
        public init(grpcStatus: Int) {
            switch grpcStatus {
            case 1: self = .cancelled
            case 3: self = .invalidArgument
            case 4: self = .deadlineExceeded
            case 5: self = .notFound
            case 6: self = .alreadyExists
            case 7: self = .permissionDenied
            case 8: self = .resourceExhausted
            case 9: self = .failedPrecondition
            case 10: self = .aborted
            case 11: self = .outOfRange
            case 12: self = .unimplemented
            case 13: self = .internalError
            case 14: self = .unavailable
            case 15: self = .dataLoss
            case 16: self = .unauthenticated
            default: self = .unknown
            }
        }
        fileprivate init(base: Base) { self.base = base }
    }

    public let code: Code
    /// The server's `grpc-message` (percent-decoded) or a local explanation. Never contains credentials.
    public let message: String
    /// The `grpc-status` the server sent, when the error came from the server.
    public let grpcStatus: Int?
    public let file: String
    public let line: Int

    public init(code: Code, message: String, grpcStatus: Int? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.grpcStatus = grpcStatus
        self.file = file
        self.line = line
    }

    /// Whether trying again (possibly on another replica) can succeed: the request itself was not at fault.
    public var isRetriable: Bool {
        switch code.base {
        case .unavailable, .connection, .deadlineExceeded, .resourceExhausted, .aborted: return true
        default: return false
        }
    }

    public var description: String {
        let status = grpcStatus.map { " (grpc-status \($0))" } ?? ""
        return "Triton \(code)\(status): \(message)"
    }
}
