import FeatureEngine
import Logging
import Metrics
import ServiceKit
import ServiceLifecycle
import TEModels
import TERedis

/// Which outcomes are evidence about the canary, under the shared rollout state the tracker last read.
/// Only while the configured pair is `configured` (canary or shadow traffic running) and only decisions
/// made since that state began count; a new generation starts a fresh judge.
struct CanaryQuality {
    let settings: TrackerSettings
    private(set) var judge: CanaryJudge
    private(set) var rollout = RolloutState()
    private let brierDelta = Gauge(label: "te_canary_brier_delta")
    private let precisionDelta = Gauge(label: "te_canary_precision_delta")
    private let judgedCanary = Gauge(label: "te_canary_judged_outcomes", dimensions: [("side", "canary")])
    private let judgedPrimary = Gauge(label: "te_canary_judged_outcomes", dimensions: [("side", "primary")])
    private let verdictGauge = Gauge(label: "te_canary_verdict")

    init(settings: TrackerSettings) {
        self.settings = settings
        judge = CanaryJudge(policy: settings.judgePolicy)
    }

    var judging: Bool {
        rollout.status(primary: settings.primaryVersion, canary: settings.canaryVersion) == .configured
    }

    mutating func follow(_ state: RolloutState) {
        guard state.generation != rollout.generation else { return }
        rollout = state
        judge.reset()
        publish()
    }

    mutating func add(_ emissions: [OutcomeBook<ContinuousClock.Instant>.Emission]) {
        guard judging else { return }
        let since = rollout.tsNs ?? 0
        for e in emissions {
            let r = e.record
            guard let eligible = e.outcome.eligible, r.source == .model, let score = r.score, r.tsNs >= since else {
                continue
            }
            if r.modelVersion == settings.primaryVersion, let c = r.canary, c.mode == "shadow",
                c.version == settings.canaryVersion
            {
                if let canaryScore = c.score {
                    judge.addPaired(primary: score, canary: canaryScore, eligible: eligible)
                }
            } else if r.modelVersion == settings.canaryVersion, r.canary?.mode == "canary" {
                judge.addCanary(score: score, traded: r.decision == .trade, eligible: eligible)
            } else if r.modelVersion == settings.primaryVersion {
                judge.addPrimary(score: score, traded: r.decision == .trade, eligible: eligible)
            }
        }
        publish()
    }

    func verdict() -> CanaryJudge.Verdict? { judging ? judge.verdict() : nil }

    private func publish() {
        let comparisons = judge.comparisons()?.1 ?? []
        if let b = comparisons.first(where: { $0.metric == "brier" }) {
            brierDelta.record(b.canary - b.primary)
            judgedCanary.record(b.canaryCount)
            judgedPrimary.record(b.primaryCount)
        } else {
            judgedCanary.record(max(judge.pairedCount, judge.canaryCount))
            judgedPrimary.record(max(judge.pairedCount, judge.primaryCount))
        }
        if let p = comparisons.first(where: { $0.metric == "precision" }) {
            precisionDelta.record(p.canary - p.primary)
        }
        let v: Int =
            switch verdict()?.kind {
            case .worse: -1
            case .better: 1
            case nil: 0
            }
        verdictGauge.record(v)
    }
}

/// Every `ROLLOUT_POLL_MS`: re-reads the shared rollout state, and acts on the judge's verdict — a worse
/// canary rolled back (`CANARY_QUALITY_ROLLBACK`), a better one promoted (`CANARY_AUTO_PROMOTE`) — by
/// compare-and-set on the state, which appends the RolloutEvent in the same step. The gateways follow.
struct CanaryRolloutService: Service {
    let state: TrackerState
    let redis: RedisConfiguration
    let stream: String
    let settings: TrackerSettings
    let logger: Logger

    func run() async throws {
        let client = RedisClient(configuration: redis, name: "outcome-tracker-rollout", logger: logger)
        defer { client.close() }
        let store = RolloutStore(redis: client, model: settings.modelName, stream: stream)
        let replica = StreamWorkerConfiguration.hostName()
        for k in RolloutEvent.Kind.allCases {  // every kind's series at 0 from the start
            Counter(label: "te_rollout_transitions_total", dimensions: [("kind", k.rawValue)]).increment(by: 0)
        }
        // The generation a verdict we may not act on was last logged at: once per state, not once per poll.
        var reportedInaction: Int64?
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let current = try await store.read()
                await state.followRollout(current)
                if let verdict = await state.canaryVerdict() {
                    let kind: RolloutEvent.Kind? =
                        switch verdict.kind {
                        case .worse: settings.qualityRollback ? .rollback : nil
                        case .better: settings.autoPromote ? .promotion : nil
                        }
                    if let kind,
                        let next = current.next(kind, primary: settings.primaryVersion, canary: settings.canaryVersion)
                    {
                        try await act(
                            kind, to: next, verdict: verdict, current: current, store: store, replica: replica)
                    } else if kind == nil, reportedInaction != current.generation {
                        reportedInaction = current.generation
                        logger.info(
                            "canary judged \(verdict.kind.rawValue) than the primary; not acting (CANARY_AUTO_PROMOTE / CANARY_QUALITY_ROLLBACK off)",
                            metadata: Self.metadata(verdict))
                    }
                }
            } catch {
                logger.warning("rollout state unavailable; retrying", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: settings.rolloutPoll) }
        }
    }

    private func act(
        _ kind: RolloutEvent.Kind, to next: RolloutState.Status, verdict: CanaryJudge.Verdict, current: RolloutState,
        store: RolloutStore, replica: String
    ) async throws {
        let c = verdict.comparison
        let event = RolloutState.event(
            kind, model: settings.modelName, primary: settings.primaryVersion, canary: settings.canaryVersion,
            metric: c.metric, value: c.canary, limit: c.primary, replica: replica, eventId: RolloutStore.newEventID(),
            tsNs: wallClockNs())
        switch try await store.transition(
            expected: current.generation, to: next, primary: settings.primaryVersion, canary: settings.canaryVersion,
            event: event)
        {
        case .applied(let s, let entryID):
            await state.followRollout(s)
            Counter(label: "te_rollout_transitions_total", dimensions: [("kind", kind.rawValue)]).increment()
            var metadata = Self.metadata(verdict)
            metadata["generation"] = "\(s.generation)"
            metadata["entry_id"] = "\(entryID)"
            logger.notice("canary \(kind == .rollback ? "rolled back" : "promoted") on quality", metadata: metadata)
        case .conflict(let generation):
            logger.info(
                "rollout state moved on before this verdict; re-reading", metadata: ["generation": "\(generation)"])
        }
    }

    static func metadata(_ v: CanaryJudge.Verdict) -> Logger.Metadata {
        [
            "evidence": "\(v.evidence.rawValue)", "metric": "\(v.comparison.metric)",
            "canary": "\(v.comparison.canary)",
            "primary": "\(v.comparison.primary)", "standard_error": "\(v.comparison.standardError)",
            "canary_outcomes": "\(v.comparison.canaryCount)", "primary_outcomes": "\(v.comparison.primaryCount)"
        ]
    }
}
