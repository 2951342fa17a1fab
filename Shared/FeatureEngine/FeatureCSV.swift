import TEModels

/// The CSV of `te features`: one row per quote snapshot. Doubles are written with Swift's shortest
/// round-trip text (`description`), so every value parses back to the same bits.
public enum FeatureCSV {
    public static let columns = ["symbol", "ts_ns"] + FeatureVector.names + ["n_quotes", "n_trades", "trade_volume"]
    public static let header = columns.joined(separator: ",")
    /// Appended by `te features --label`: `return_bps` and `eligible` (0/1), both empty without a label.
    public static let labelColumns = ["return_bps", "eligible"]
    public static let labelledHeader = (columns + labelColumns).joined(separator: ",")

    /// The label cells of a row, with their leading commas.
    public static func labelCells(_ result: LabelResult) -> String {
        guard case .labelled(let label) = result else { return ",," }
        return ",\(label.returnBps.description),\(label.eligible ? 1 : 0)"
    }

    public static func row(_ s: FeatureSnapshot) -> String {
        var line = s.symbol
        line.reserveCapacity(256)
        line += ","
        line += String(s.tsNs)
        let f = s.features
        for value in [
            f.spreadBps, f.imbalance, f.depthImbalance, f.ofiNorm, f.realizedVolBps, f.midReturnBps, f.tickRate,
            f.micropriceOffsetBps
        ] {
            line += ","
            line += value.description
        }
        line += ",\(s.nQuotes),\(s.nTrades),\(s.tradeVolume.description)"
        return line
    }

    /// One parsed row: what a reader of the CSV (tests, training jobs) gets back.
    public struct Row: Equatable, Sendable {
        public var symbol: String
        public var tsNs: Int64
        public var features: [Double]
        public var nQuotes: Int
        public var nTrades: Int
        public var tradeVolume: Double

        public init(symbol: String, tsNs: Int64, features: [Double], nQuotes: Int, nTrades: Int, tradeVolume: Double) {
            self.symbol = symbol
            self.tsNs = tsNs
            self.features = features
            self.nQuotes = nQuotes
            self.nTrades = nTrades
            self.tradeVolume = tradeVolume
        }

        public init(_ s: FeatureSnapshot) {
            self.init(
                symbol: s.symbol, tsNs: s.tsNs, features: s.features.values, nQuotes: s.nQuotes, nTrades: s.nTrades,
                tradeVolume: s.tradeVolume)
        }
    }

    /// Parses a data row (not the header); nil when it is not one.
    public static func parse(_ line: Substring) -> Row? {
        let cells = line.split(separator: ",", omittingEmptySubsequences: false)
        guard cells.count == columns.count, let ts = Int64(cells[1]) else { return nil }
        var features: [Double] = []
        for cell in cells[2..<10] {
            guard let v = Double(cell) else { return nil }
            features.append(v)
        }
        guard let nQuotes = Int(cells[10]), let nTrades = Int(cells[11]), let volume = Double(cells[12]) else {
            return nil
        }
        return Row(
            symbol: String(cells[0]), tsNs: ts, features: features, nQuotes: nQuotes, nTrades: nTrades,
            tradeVolume: volume)
    }
}
