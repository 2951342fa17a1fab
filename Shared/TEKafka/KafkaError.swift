import CRdKafka

/// An error from librdkafka or from this wrapper. `isRetriable` says whether the same call may succeed later
/// (broker unreachable, queue full, coordinator moving); `isFatal` says the client instance is unusable.
public struct KafkaError: Error, CustomStringConvertible, Sendable {
    /// librdkafka's `rd_kafka_resp_err_t` value: negative codes are the client's own, positive the broker's.
    public var code: KafkaErrorCode
    public var message: String
    public var isRetriable: Bool
    public var isFatal: Bool
    public var file: String
    public var line: Int

    public init(
        code: KafkaErrorCode, message: String, isRetriable: Bool? = nil, isFatal: Bool = false,
        file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.isRetriable = isRetriable ?? code.isRetriable
        self.isFatal = isFatal
        self.file = file
        self.line = line
    }

    init(_ err: rd_kafka_resp_err_t, context: String, file: String = #fileID, line: Int = #line) {
        let text = String(cString: rd_kafka_err2str(err))
        self.init(code: KafkaErrorCode(rawValue: err.rawValue), message: "\(context): \(text)", file: file, line: line)
    }

    /// Takes ownership of an `rd_kafka_error_t` and destroys it.
    init(consuming error: OpaquePointer, context: String, file: String = #fileID, line: Int = #line) {
        defer { rd_kafka_error_destroy(error) }
        self.init(
            code: KafkaErrorCode(rawValue: rd_kafka_error_code(error).rawValue),
            message: "\(context): \(String(cString: rd_kafka_error_string(error)))",
            isRetriable: rd_kafka_error_is_retriable(error) != 0
                || KafkaErrorCode(rawValue: rd_kafka_error_code(error).rawValue).isRetriable,
            isFatal: rd_kafka_error_is_fatal(error) != 0, file: file, line: line)
    }

    public var description: String {
        "KafkaError(\(code.name)\(isFatal ? ", fatal" : isRetriable ? ", retriable" : "")): \(message) [\(file):\(line)]"
    }
}

/// librdkafka's `rd_kafka_resp_err_t`, with the codes this project names.
public struct KafkaErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let noError = KafkaErrorCode(rawValue: 0)
    public static let unknownTopicOrPartition = KafkaErrorCode(rawValue: 3)
    public static let leaderNotAvailable = KafkaErrorCode(rawValue: 5)
    public static let notLeaderForPartition = KafkaErrorCode(rawValue: 6)
    public static let requestTimedOut = KafkaErrorCode(rawValue: 7)
    public static let coordinatorLoadInProgress = KafkaErrorCode(rawValue: 14)
    public static let coordinatorNotAvailable = KafkaErrorCode(rawValue: 15)
    public static let notCoordinator = KafkaErrorCode(rawValue: 16)
    public static let illegalGeneration = KafkaErrorCode(rawValue: 22)
    public static let unknownMemberID = KafkaErrorCode(rawValue: 25)
    public static let rebalanceInProgress = KafkaErrorCode(rawValue: 27)
    public static let brokerNotAvailable = KafkaErrorCode(rawValue: 8)
    // Client-side codes (negative).
    public static let messageTimedOut = KafkaErrorCode(rawValue: -192)
    public static let transport = KafkaErrorCode(rawValue: -195)
    public static let allBrokersDown = KafkaErrorCode(rawValue: -187)
    public static let queueFull = KafkaErrorCode(rawValue: -184)
    public static let timedOut = KafkaErrorCode(rawValue: -185)
    public static let partitionEOF = KafkaErrorCode(rawValue: -191)
    public static let noOffset = KafkaErrorCode(rawValue: -168)
    public static let waitCoordinator = KafkaErrorCode(rawValue: -180)
    public static let destroyed = KafkaErrorCode(rawValue: -197)
    public static let invalidArgument = KafkaErrorCode(rawValue: -186)
    /// A configuration property librdkafka refused.
    public static let invalidConfiguration = KafkaErrorCode(rawValue: -199 - 1000)

    public var name: String {
        if self == .invalidConfiguration { return "INVALID_CONFIGURATION" }
        return String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: rawValue)))
    }
    public var description: String { name }

    /// Conditions that clear by themselves: the broker or coordinator comes back, the queue drains.
    public var isRetriable: Bool {
        switch self {
        case .leaderNotAvailable, .notLeaderForPartition, .requestTimedOut, .coordinatorLoadInProgress,
            .coordinatorNotAvailable, .notCoordinator, .illegalGeneration, .unknownMemberID, .rebalanceInProgress,
            .brokerNotAvailable, .messageTimedOut, .transport, .allBrokersDown, .queueFull, .timedOut,
            .waitCoordinator:
            return true
        default:
            return false
        }
    }
}
