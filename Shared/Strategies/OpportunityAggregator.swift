import Foundation
import TEModels

/// Merges signals into opportunities: a pure state machine, no I/O, no wall clock.
///
/// **Clock.** Only event time (`Signal.tsNs`, the receive clock of the ticks) is used, so a replay at any
/// speed, or a catch-up after downtime, gives the same opportunities. Each symbol has its own event clock: the
/// latest `ts_ns` of any signal of that symbol applied so far (duplicates excepted).
///
/// **Per signal, in order:**
/// 1. A signal id already in the symbol+direction's open window is a *duplicate*: ignored, counted. (The
///    service also checks ids against its Redis memory of ids seen earlier, before calling `apply`.)
/// 2. The symbol's clock advances to the signal's `ts_ns`; every window of the symbol whose end
///    (`first_ts_ns + cooldown`) is now before the clock closes (emission `close`).
/// 3. `confidence < minConfidence` → dropped *low confidence*, counted.
/// 4. `clock − ts_ns > maxSignalAge` → dropped *stale*, counted (age is measured in event time against the
///    symbol's clock, not against the wall clock).
/// 5. An open window for the same symbol and direction takes the signal (merge): count, signal ids, unique
///    strategies in order of first appearance, `last_ts_ns`; when its confidence is above the window's, the
///    window's confidence rises to it and the opportunity is emitted (`upgrade`). Merging a signal that does not
///    raise the confidence emits nothing.
/// 6. Otherwise the signal opens a window (emission `first`). When the opposite direction has a window open for
///    the symbol, the two are not merged: both are marked `conflict: true`, the new one in its `first`
///    emission and the other in its next emission (`upgrade` or `close`).
///
/// **Window close.** A window of symbol S closes at the first event-time instant after `first_ts_ns + cooldown`
/// seen: on S's next signal (step 2), or on `tick(now:)`, which the service calls after each batch with the
/// latest event time over all symbols minus a grace (so a quiet symbol's window closes when other symbols move
/// on), and with `Int64.max` once the input has been idle for a while (wall clock; see the service's README).
/// The `close` emission carries the final state; every emission of one opportunity has the same `id`
/// (`symbol:direction:first_ts_ns:first_strategy`), so a reader keeps the latest entry per id.
public struct OpportunityAggregator: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Signals of one symbol and direction within this long after a window's first signal join it.
        /// Default: 5000 ms (`COOLDOWN_MS`).
        public var cooldownNs: Int64
        /// Signals below this confidence are dropped. Default: 0.5 (`MIN_CONFIDENCE`).
        public var minConfidence: Double
        /// Signals older than this behind their symbol's event clock are dropped. Default: 30000 ms
        /// (`MAX_SIGNAL_AGE_MS`).
        public var maxSignalAgeNs: Int64

        public init(cooldownNs: Int64 = 5_000_000_000, minConfidence: Double = 0.5, maxSignalAgeNs: Int64 = 30_000_000_000) {
            self.cooldownNs = cooldownNs
            self.minConfidence = minConfidence
            self.maxSignalAgeNs = maxSignalAgeNs
        }
    }

    public struct WindowKey: Hashable, Sendable, Comparable {
        public var symbol: String
        public var direction: Direction

        public init(symbol: String, direction: Direction) {
            self.symbol = symbol
            self.direction = direction
        }

        public static func < (a: WindowKey, b: WindowKey) -> Bool {
            (a.symbol, a.direction.rawValue) < (b.symbol, b.direction.rawValue)
        }

        var opposite: WindowKey { WindowKey(symbol: symbol, direction: direction == .buy ? .sell : .buy) }
    }

    public enum EmitReason: String, Sendable, CaseIterable {
        case first, upgrade, close
    }

    /// One entry for `te:opportunities`; `opportunity.emitReason` is `reason.rawValue`.
    public struct Emission: Sendable, Equatable {
        public var reason: EmitReason
        public var opportunity: Opportunity
    }

    /// What became of an applied signal.
    public enum Disposition: Sendable, Equatable {
        case opened, merged, upgraded, duplicate, lowConfidence, stale
    }

    public struct Applied: Sendable, Equatable {
        public var disposition: Disposition
        /// Closes first (oldest first), then the signal's own emission if any.
        public var emissions: [Emission]
    }

    /// State changed since the last `takeChanges()`, for the service to persist.
    public struct Changes: Sendable, Equatable {
        /// Open windows created or changed (current state).
        public var upserted: [Opportunity] = []
        /// Windows closed (and not reopened).
        public var closed: [WindowKey] = []
        /// Symbols' event clocks that moved.
        public var clocks: [(symbol: String, tsNs: Int64)] = []

        public var isEmpty: Bool { upserted.isEmpty && closed.isEmpty && clocks.isEmpty }

        public static func == (a: Changes, b: Changes) -> Bool {
            a.upserted == b.upserted && a.closed == b.closed
                && a.clocks.map(\.symbol) == b.clocks.map(\.symbol) && a.clocks.map(\.tsNs) == b.clocks.map(\.tsNs)
        }
    }

    private struct Window: Sendable {
        var opportunity: Opportunity
        /// The ids of `opportunity.signalIds`, for O(1) duplicate checks.
        var ids: Set<String>

        init(_ opportunity: Opportunity) {
            self.opportunity = opportunity
            self.ids = Set(opportunity.signalIds)
        }
    }

    public let configuration: Configuration
    private var windows: [WindowKey: Window] = [:]
    private var clocks: [String: Int64] = [:]
    private var dirtyWindows: Set<WindowKey> = []
    private var dirtyClocks: Set<String> = []

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Rebuilds the state the service persisted: open windows and symbols' event clocks.
    public init(configuration: Configuration, openWindows: [Opportunity], clocks: [String: Int64]) {
        self.configuration = configuration
        for opportunity in openWindows {
            windows[WindowKey(symbol: opportunity.symbol, direction: opportunity.direction)] = Window(opportunity)
        }
        self.clocks = clocks
    }

    /// Open windows, ordered by first signal time then key.
    public var openWindows: [Opportunity] {
        windows.values.map(\.opportunity).sorted(by: Self.closeOrder)
    }

    /// The symbol's event clock (latest ts_ns applied), if any signal of it was seen.
    public func clock(for symbol: String) -> Int64? { clocks[symbol] }

    /// The latest event time over all symbols.
    public var latestEventTime: Int64? { clocks.values.max() }

    public mutating func apply(_ signal: Signal) -> Applied {
        let key = WindowKey(symbol: signal.symbol, direction: signal.direction)
        if let window = windows[key], window.ids.contains(signal.id) {
            return Applied(disposition: .duplicate, emissions: [])
        }
        let clock = advanceClock(signal.symbol, to: signal.tsNs)
        var emissions = closeWindows(symbol: signal.symbol, before: clock)

        guard signal.confidence >= configuration.minConfidence else {
            return Applied(disposition: .lowConfidence, emissions: emissions)
        }
        guard clock - signal.tsNs <= configuration.maxSignalAgeNs else {
            return Applied(disposition: .stale, emissions: emissions)
        }

        if var window = windows[key] {
            window.ids.insert(signal.id)
            var o = window.opportunity
            o.signalIds.append(signal.id)
            if !o.strategies.contains(signal.strategy) { o.strategies.append(signal.strategy) }
            o.count += 1
            o.firstTsNs = min(o.firstTsNs, signal.tsNs)
            o.lastTsNs = max(o.lastTsNs, signal.tsNs)
            let upgraded = signal.confidence > o.confidence
            if upgraded {
                o.confidence = signal.confidence
                o.emitReason = EmitReason.upgrade.rawValue
                emissions.append(Emission(reason: .upgrade, opportunity: o))
            }
            window.opportunity = o
            windows[key] = window
            dirtyWindows.insert(key)
            return Applied(disposition: upgraded ? .upgraded : .merged, emissions: emissions)
        }

        let conflict = windows[key.opposite] != nil
        if conflict {
            windows[key.opposite]!.opportunity.conflict = true
            dirtyWindows.insert(key.opposite)
        }
        let opened = Opportunity(
            id: Self.opportunityID(first: signal), symbol: signal.symbol, direction: signal.direction,
            confidence: signal.confidence, strategies: [signal.strategy], signalIds: [signal.id],
            firstTsNs: signal.tsNs, lastTsNs: signal.tsNs, count: 1, emitReason: EmitReason.first.rawValue,
            conflict: conflict ? true : nil)
        windows[key] = Window(opened)
        dirtyWindows.insert(key)
        emissions.append(Emission(reason: .first, opportunity: opened))
        return Applied(disposition: .opened, emissions: emissions)
    }

    /// Closes every window (all symbols) whose end `first_ts_ns + cooldown` is before `now` (event time), oldest
    /// first. `tick(now: .max)` closes everything.
    public mutating func tick(now: Int64) -> [Emission] {
        let due = windows.filter { end(of: $0.value.opportunity) < now }.map(\.key)
        return close(due)
    }

    /// `symbol:direction:first_ts_ns:first_strategy` — the same for every emission of one opportunity, and the
    /// same on every run over the same signals.
    public static func opportunityID(first signal: Signal) -> String {
        "\(signal.symbol):\(signal.direction.rawValue):\(signal.tsNs):\(signal.strategy)"
    }

    /// Returns and forgets what changed since the last call.
    public mutating func takeChanges() -> Changes {
        var changes = Changes()
        for key in dirtyWindows.sorted() {
            if let window = windows[key] {
                changes.upserted.append(window.opportunity)
            } else {
                changes.closed.append(key)
            }
        }
        for symbol in dirtyClocks.sorted() {
            changes.clocks.append((symbol, clocks[symbol]!))
        }
        dirtyWindows.removeAll(keepingCapacity: true)
        dirtyClocks.removeAll(keepingCapacity: true)
        return changes
    }

    // MARK: - Internals

    private mutating func advanceClock(_ symbol: String, to tsNs: Int64) -> Int64 {
        if let current = clocks[symbol], current >= tsNs { return current }
        clocks[symbol] = tsNs
        dirtyClocks.insert(symbol)
        return tsNs
    }

    private func end(of o: Opportunity) -> Int64 {
        let (sum, overflow) = o.firstTsNs.addingReportingOverflow(configuration.cooldownNs)
        return overflow ? .max : sum
    }

    private mutating func closeWindows(symbol: String, before clock: Int64) -> [Emission] {
        var due: [WindowKey] = []
        for direction in [Direction.buy, .sell] {
            let key = WindowKey(symbol: symbol, direction: direction)
            if let window = windows[key], end(of: window.opportunity) < clock { due.append(key) }
        }
        return due.isEmpty ? [] : close(due)
    }

    private mutating func close(_ keys: [WindowKey]) -> [Emission] {
        var closing: [Opportunity] = []
        for key in keys {
            guard let window = windows.removeValue(forKey: key) else { continue }
            dirtyWindows.insert(key)
            var o = window.opportunity
            o.emitReason = EmitReason.close.rawValue
            closing.append(o)
        }
        return closing.sorted(by: Self.closeOrder).map { Emission(reason: .close, opportunity: $0) }
    }

    private static func closeOrder(_ a: Opportunity, _ b: Opportunity) -> Bool {
        (a.firstTsNs, a.symbol, a.direction.rawValue) < (b.firstTsNs, b.symbol, b.direction.rawValue)
    }
}
