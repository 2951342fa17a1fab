import TECore

/// One stream entry. Field values are text (DESIGN.md: stream entries carry text fields only); the
/// entries of one reply share one byte buffer (`StreamFields`), so reading them copies no field apart.
public struct StreamEntry: Sendable, Equatable {
    public let id: String
    public let fields: StreamFields
    /// True when the entry id is still pending but the entry itself was trimmed or deleted
    /// (`XREADGROUP … 0` and `XCLAIM` report such entries without fields).
    public let isDeleted: Bool

    public init(id: String, fields: [(String, String)], isDeleted: Bool = false) {
        self.init(id: id, fields: StreamFields(fields), isDeleted: isDeleted)
    }

    public init(id: String, fields: StreamFields, isDeleted: Bool = false) {
        self.id = id
        self.fields = fields
        self.isDeleted = isDeleted
    }

    /// The value of the last field named `name`.
    public func field(_ name: String) -> String? { fields.value(name) }

    public var fieldDictionary: [String: String] { fields.dictionary }
}

/// Entries read from one stream by XREAD / XREADGROUP.
public typealias StreamReadResult = (stream: String, entries: [StreamEntry])

/// Reply of XAUTOCLAIM (Redis 7.0 shape).
public struct AutoClaimResult: Sendable {
    /// Where the next XAUTOCLAIM scan starts; "0-0" when the scan is complete.
    public let nextStart: String
    public let entries: [StreamEntry]
    /// Pending ids whose entries no longer exist; Redis removed them from the pending list.
    public let deletedIDs: [String]
}

/// Summary form of XPENDING.
public struct PendingSummary: Sendable, Equatable {
    public let count: Int
    public let smallestID: String?
    public let largestID: String?
    public let consumers: [String: Int]
}

/// One row of the extended form of XPENDING.
public struct PendingEntry: Sendable, Equatable {
    public let id: String
    public let consumer: String
    /// Time since the entry was last delivered.
    public let idle: Duration
    /// How many times the entry was delivered.
    public let deliveries: Int
}

/// One group of XINFO GROUPS.
public struct StreamGroupInfo: Sendable, Equatable {
    public let name: String
    public let consumers: Int
    public let pending: Int
    public let lastDeliveredID: String
    /// Entries not yet delivered to the group; nil when Redis cannot tell (after deletions).
    public let lag: Int?
    public let entriesRead: Int?
}

/// The basics of XINFO STREAM.
public struct StreamInfo: Sendable, Equatable {
    public let length: Int
    public let groups: Int
    public let lastGeneratedID: String
    public let firstEntryID: String?
    public let lastEntryID: String?
}
