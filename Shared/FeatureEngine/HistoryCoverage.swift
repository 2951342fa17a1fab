import TEModels

/// How far back a restarted `feature-pipeline` must read `te:ticks` to rebuild its windows.
///
/// Feed it the history newest first. A symbol is covered once a quote at or before (its newest
/// `ts_ns` − W) has been seen: replaying from there gives, for every later snapshot, the same window
/// and the same paired terms as an engine that never stopped (its first replayed quote is at least W
/// old, so `warm` is set exactly when the numbers are exact). The scan is enough when every symbol
/// seen is covered and it reaches 2·W before the newest tick: a symbol with no tick in that span has
/// no tick in any window still to come either; what it loses is only the pairing of its next quote
/// with its last old one, and it restarts cold (`warm = false` for W).
public struct HistoryCoverage: Sendable {
    public let windowNs: Int64
    private var newestTsNs: Int64 = .min
    private var oldestTsNs: Int64 = .max
    private var symbolNewest: [String: Int64] = [:]
    private var uncovered: Set<String> = []
    public private(set) var observed = 0

    public init(windowNs: Int64) {
        self.windowNs = windowNs
    }

    /// Records one tick of the history, newest first.
    public mutating func observe(_ tick: Tick) {
        observed += 1
        newestTsNs = max(newestTsNs, tick.tsNs)
        oldestTsNs = min(oldestTsNs, tick.tsNs)
        let newest: Int64
        if let known = symbolNewest[tick.symbol] {
            newest = known
        } else {
            newest = tick.tsNs
            symbolNewest[tick.symbol] = newest
            uncovered.insert(tick.symbol)
        }
        if tick.kind == .quote, tick.tsNs <= newest &- windowNs {
            uncovered.remove(tick.symbol)
        }
    }

    /// Enough history has been seen (an empty history is never enough: keep reading to its start).
    public var isSufficient: Bool {
        observed > 0 && uncovered.isEmpty && oldestTsNs <= newestTsNs &- 2 &* windowNs
    }

    /// Symbols whose window the history seen so far does not cover.
    public var uncoveredSymbols: [String] { uncovered.sorted() }

    public var symbols: [String] { symbolNewest.keys.sorted() }
}
