import FeatureEngine
import Logging
import ServiceKit
import TEModels
import TERedis

/// `te:audit` (group `outcome-tracker`) → held decisions. Every decision stays PENDING in the group
/// (`keepPending`) until the sweeper has written its Outcome and acknowledges it in the same
/// MULTI/EXEC, so a tracker killed at any moment finds its undecided decisions again on restart.
struct DecisionStage: StreamStage {
    typealias Input = AuditRecord

    let stage = "outcome-tracker"
    let inputStream: String
    let state: TrackerState

    mutating func handle(_ batch: [StreamDelivery<AuditRecord>]) async throws -> StageOutput {
        var output = StageOutput()
        var decisions: [(entryID: String, record: AuditRecord)] = []
        for d in batch where OutcomeBook<ContinuousClock.Instant>.isDecision(d.message) {
            decisions.append((d.id, d.message))
            output.keepPending.insert(d.id)
        }
        await state.admit(decisions)
        return output
    }
}

/// `te:ticks` (group `outcome-tracker`) → each symbol's recent quotes. The quotes' only output is their
/// acknowledgement; after a restart (or a failed acknowledgement, which re-delivers entries already
/// applied) the quotes are rebuilt from the stream itself, so none is applied twice.
///
/// Quotes need every tick of a symbol in order: the group has ONE consumer (replicas: 1).
struct QuoteStage: StreamStage {
    typealias Input = Tick

    let stage = "outcome-tracker"
    let inputStream: String
    let state: TrackerState
    let settings: TrackerSettings
    let logger: Logger
    private var redis: RedisClient?
    /// The quotes are those of the entries acknowledged so far; false after a `handle` whose
    /// acknowledgement is not known to be written.
    private var inStep = false

    init(inputStream: String, state: TrackerState, settings: TrackerSettings, logger: Logger) {
        self.inputStream = inputStream
        self.state = state
        self.settings = settings
        self.logger = logger
    }

    mutating func prepare(redis: RedisClient) async throws {
        self.redis = redis
        // At start the group's pending entries come first, from the smallest: rebuild from what lies
        // before them, or, with none pending, from everything the group has delivered.
        let groups = try await redis.xinfoGroups(inputStream)
        let pending = try await redis.xpending(inputStream, group: stage)
        if let smallest = pending.smallestID, pending.count > 0 {
            try await rebuild(end: "(" + smallest)
        } else if let last = groups.first(where: { $0.name == stage })?.lastDeliveredID, last != "0-0" {
            try await rebuild(end: last)
        }
        inStep = true
    }

    mutating func handle(_ batch: [StreamDelivery<Tick>]) async throws -> StageOutput {
        guard let first = batch.first else { return .none }
        if !inStep { try await rebuild(end: "(" + first.id) }
        inStep = false
        var quotes: [(symbol: String, quote: LabelQuote)] = []
        quotes.reserveCapacity(batch.count)
        for d in batch {
            if let q = LabelQuote(d.message) { quotes.append((d.message.symbol, q)) }
        }
        await state.apply(quotes)
        return .none
    }

    mutating func committed() async {
        inStep = true
    }

    /// Replaces the quotes with those of the `te:ticks` entries up to `end`, read back newest first until
    /// `OUTCOME_QUOTE_HISTORY_MS` of market time (or the stream's start, or the entry bound).
    private func rebuild(end: String) async throws {
        guard let redis else { return }
        var ticks: [Tick] = []
        var newest: Int64?
        var cursor = end
        var scanned = 0
        var reachedStart = false
        let span = Int64(settings.quoteHistoryMs) * 1_000_000
        scan: while scanned < settings.rebuildMaxEntries {
            let page = try await redis.xrevrange(
                inputStream, end: cursor, start: "-", count: min(2_000, settings.rebuildMaxEntries - scanned))
            guard let last = page.last else {
                reachedStart = true
                break
            }
            cursor = "(" + last.id
            for entry in page {
                scanned += 1
                guard let tick = try? StreamFieldDecoder.decode(Tick.self, from: entry.fields) else { continue }
                newest = max(newest ?? tick.tsNs, tick.tsNs)
                ticks.append(tick)
                if let newest, tick.tsNs < newest - span { break scan }
            }
        }
        var histories: [String: QuoteHistory] = [:]
        for tick in ticks.reversed() {
            if let q = LabelQuote(tick) { histories[tick.symbol, default: QuoteHistory()].append(q) }
        }
        if !reachedStart {
            for symbol in histories.keys { histories[symbol]?.markTruncated() }
        }
        await state.replaceQuotes(histories)
        logger.info(
            "quotes rebuilt from the stream",
            metadata: [
                "end": "\(end)", "entries_read": "\(scanned)", "symbols": "\(histories.count)",
                "reached_start": "\(reachedStart)"
            ])
    }
}
