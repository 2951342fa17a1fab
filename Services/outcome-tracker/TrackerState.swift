import FeatureEngine
import Logging
import TEModels

/// What the tracker's three loops share: the `OutcomeBook` (quotes and held decisions) and the quality
/// windows. An actor so the decision stage, the quote stage and the sweeper see one state.
actor TrackerState {
    private var book: OutcomeBook<ContinuousClock.Instant>
    private var quality: QualityMetrics
    private var canary: CanaryQuality
    let settings: TrackerSettings

    init(settings: TrackerSettings, logger: Logger) {
        self.settings = settings
        book = OutcomeBook(rule: settings.rule, historyNs: Int64(settings.quoteHistoryMs) * 1_000_000)
        quality = QualityMetrics(
            window: settings.qualityWindow, references: ReferenceLoader(directory: settings.referenceDirectory),
            logger: logger)
        canary = CanaryQuality(settings: settings)
    }

    func admit(_ decisions: [(entryID: String, record: AuditRecord)]) {
        let now = ContinuousClock.now
        for d in decisions { book.admit(entryID: d.entryID, record: d.record, now: now) }
        quality.held(book.heldCount)
    }

    func apply(_ quotes: [(symbol: String, quote: LabelQuote)]) {
        for q in quotes { book.apply(symbol: q.symbol, quote: q.quote) }
        book.prune()
    }

    func replaceQuotes(_ histories: [String: QuoteHistory]) {
        book.replaceQuotes(histories)
    }

    /// The outcomes known now (they stay held until `written`).
    func ready() -> [OutcomeBook<ContinuousClock.Instant>.Emission] {
        let now = ContinuousClock.now
        return book.ready(now: now, expiredBefore: now - settings.maxHold)
    }

    /// The emissions' outcomes are in `te:outcomes` and their entries acknowledged.
    func written(_ emissions: [OutcomeBook<ContinuousClock.Instant>.Emission]) {
        book.release(emissions.map(\.entryID))
        quality.add(emissions)
        quality.held(book.heldCount)
        canary.add(emissions)
    }

    /// The shared rollout state as last read (a new generation starts a fresh judgement).
    func followRollout(_ state: RolloutState) { canary.follow(state) }

    /// The canary judge's verdict under the state followed; nil while there is none or nothing to judge.
    func canaryVerdict() -> CanaryJudge.Verdict? { canary.verdict() }
}
