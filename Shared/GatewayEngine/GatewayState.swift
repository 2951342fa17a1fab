import Foundation
import Synchronization
import TEModels

/// A symbol's latest feature snapshot and when it was written (ns since epoch, wall clock).
public struct StoredFeatures: Sendable, Equatable {
    public var snapshot: FeatureSnapshot
    /// When the feature pipeline wrote it: the `te:features` entry id's millisecond time, or the
    /// `written_at_ns` field of `te:online:{SYMBOL}` (falling back to the snapshot's `ts_ns`).
    public var writtenAtNs: Int64
    /// The `te:features` entry id it was read from (the audit's `feature_snapshot_id`); nil when it came
    /// from `te:online:{SYMBOL}`, which carries no entry id.
    public var entryId: String?

    public init(snapshot: FeatureSnapshot, writtenAtNs: Int64, entryId: String? = nil) {
        self.snapshot = snapshot
        self.writtenAtNs = writtenAtNs
        self.entryId = entryId
    }

    public func ageMs(nowNs: Int64) -> Double { max(0, Double(nowNs - writtenAtNs) / 1e6) }
}

/// Latest features per symbol, in memory. Feature age is wall-clock now minus the time the snapshot was
/// WRITTEN (see `StoredFeatures.writtenAtNs`), not its event time: replays of old recordings carry old
/// event times, yet their features are as current as the pipeline makes them.
public final class FeatureMemory: Sendable {
    private let latest = Mutex<[String: StoredFeatures]>([:])

    public init() {}

    public func get(_ symbol: String) -> StoredFeatures? { latest.withLock { $0[symbol] } }

    /// Keeps the newer of the stored and the given snapshot (by write time).
    public func put(_ features: StoredFeatures) {
        latest.withLock { map in
            if let old = map[features.snapshot.symbol], old.writtenAtNs > features.writtenAtNs { return }
            map[features.snapshot.symbol] = features
        }
    }

    public var count: Int { latest.withLock { $0.count } }
}

/// A symbol's last model score, answered (as `cache`) while younger than `CACHE_TTL_MS`.
final class ScoreCache: Sendable {
    struct Entry: Sendable, Equatable {
        var score: Double
        var model: ModelIdentity
        var at: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])

    init() {}

    func put(_ symbol: String, score: Double, model: ModelIdentity, at: ContinuousClock.Instant) {
        entries.withLock { $0[symbol] = Entry(score: score, model: model, at: at) }
    }

    func get(_ symbol: String) -> Entry? { entries.withLock { $0[symbol] } }
}

/// Model identity per version, as last read from Triton.
public final class ModelIdentityStore: Sendable {
    private let identities = Mutex<[String: ModelIdentity]>([:])
    let modelName: String

    public init(modelName: String) { self.modelName = modelName }

    public func set(_ identity: ModelIdentity) { identities.withLock { $0[identity.version] = identity } }

    /// The known identity, or name and version with hash `unknown` until Triton has told us.
    public func identity(version: String) -> ModelIdentity {
        identities.withLock { $0[version] } ?? ModelIdentity(name: modelName, version: version, hash: "unknown")
    }

    public func known(version: String) -> Bool { identities.withLock { $0[version] != nil } }
}
