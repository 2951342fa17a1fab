/// The one rollout decision every gateway replica follows for a model: a Redis hash next to `te:rollout`,
/// changed only by compare-and-set on `generation` in the same Lua step that appends the RolloutEvent
/// (`RolloutStore`). Absent, it is generation 0, `configured`: each replica serves its configured primary
/// and canary. Pure: the hash codec and the allowed transitions.
public struct RolloutState: Sendable, Equatable {
    public enum Status: String, Sendable, CaseIterable {
        /// Primary and canary as configured (canary/shadow traffic as configured).
        case configured
        /// The canary gets no traffic; the primary answers.
        case rolledBack = "rolled_back"
        /// The canary version answers as primary; no canary or shadow traffic.
        case promoted
    }

    /// Bumped by every transition; the compare-and-set's expected value.
    public var generation: Int64
    public var status: Status
    /// The configured (primary, canary) pair the status applies to; nil at generation 0.
    public var primaryVersion: String?
    public var canaryVersion: String?
    /// When the last transition happened, and its RolloutEvent.
    public var tsNs: Int64?
    public var eventId: String?

    public init(
        generation: Int64 = 0, status: Status = .configured, primaryVersion: String? = nil,
        canaryVersion: String? = nil, tsNs: Int64? = nil, eventId: String? = nil
    ) {
        self.generation = generation
        self.status = status
        self.primaryVersion = primaryVersion
        self.canaryVersion = canaryVersion
        self.tsNs = tsNs
        self.eventId = eventId
    }

    /// The state's hash key: `<rollout stream>:state:<model>:{<rollout stream>}`. The hash tag puts it in
    /// the slot of the rollout stream itself (a key without braces hashes whole), so the Lua step that
    /// changes both touches one slot on a Redis Cluster too.
    public static func key(model: String, stream: String = StreamKey.rollout) -> String {
        "\(stream):state:\(model):{\(stream)}"
    }

    /// From HGETALL; an empty hash is generation 0. Nil for a hash that is not a state.
    public init?(hash: [String: String]) {
        if hash.isEmpty {
            self.init()
            return
        }
        guard let g = hash["generation"].flatMap({ Int64($0) }), let s = hash["status"].flatMap(Status.init(rawValue:))
        else { return nil }
        self.init(
            generation: g, status: s, primaryVersion: hash["primary_version"], canaryVersion: hash["canary_version"],
            tsNs: hash["ts_ns"].flatMap { Int64($0) }, eventId: hash["event_id"])
    }

    /// The status for a replica configured with `primary` and `canary`: a state written for another pair
    /// (an earlier rollout) does not apply, and reads as `configured`.
    public func status(primary: String, canary: String) -> Status {
        primaryVersion == primary && canaryVersion == canary ? status : .configured
    }

    /// The status `kind` moves the pair to, or nil when it does not apply from here (a rollback or a
    /// promotion of a canary not currently configured-and-running; a restore with nothing to restore).
    public func next(_ kind: RolloutEvent.Kind, primary: String, canary: String) -> Status? {
        let current = status(primary: primary, canary: canary)
        switch kind {
        case .rollback, .promotion:
            guard current == .configured else { return nil }
            return kind == .rollback ? .rolledBack : .promoted
        case .restore:
            switch current {
            case .configured: return nil
            case .rolledBack, .promoted: return .configured
            }
        }
    }

    /// The version answering as primary under `status` (a promoted canary answers as primary).
    public static func servingPrimary(_ status: Status, primary: String, canary: String) -> String {
        switch status {
        case .configured, .rolledBack: primary
        case .promoted: canary
        }
    }

    /// The event of moving a replica configured with (`primary`, `canary`) from `status` to `next`:
    /// `from_version` is the version that answered as primary before, `to_version` the one after (for a
    /// rollback or a restore of a rolled-back canary, canary → primary and primary → canary).
    public static func event(
        _ kind: RolloutEvent.Kind, model: String, primary: String, canary: String, metric: String?, value: Double?,
        limit: Double?, replica: String, eventId: String, tsNs: Int64, restoring previous: Status = .configured
    ) -> RolloutEvent {
        let (from, to): (String, String) =
            switch kind {
            case .rollback: (canary, primary)
            case .promotion: (primary, canary)
            case .restore: previous == .promoted ? (canary, primary) : (primary, canary)
            }
        return RolloutEvent(
            eventId: eventId, tsNs: tsNs, kind: kind, modelName: model, fromVersion: from, toVersion: to,
            metric: metric,
            value: value, limit: limit, replica: replica)
    }
}
