import FeatureEngine
import TECore
import TEModels
import TestSupport
import Testing

@Suite("FeatureCSV and HistoryCoverage")
struct FeatureCSVAndCoverageTests {
    @Test("a CSV row parses back to the same bits")
    func csvRoundTrip() throws {
        let ticks = randomTicks(count: 2_000, windowNs: 50_000_000, seed: 5)
        var engine = FeatureEngine(windowNs: 50_000_000)
        var rows = 0
        for tick in ticks {
            guard case .snapshot(let s) = engine.apply(tick) else { continue }
            let line = FeatureCSV.row(s)
            let parsed = try #require(FeatureCSV.parse(line[...]))
            #expect(parsed == FeatureCSV.Row(s))
            #expect(parsed.features.map(\.bitPattern) == s.features.values.map(\.bitPattern))
            #expect(parsed.tradeVolume.bitPattern == s.tradeVolume.bitPattern)
            rows += 1
        }
        #expect(rows > 500)
        #expect(FeatureCSV.header.hasPrefix("symbol,ts_ns,spread_bps,imbalance,depth_imbalance,ofi_norm,"))
        #expect(FeatureCSV.header.hasSuffix(",microprice_offset_bps,n_quotes,n_trades,trade_volume"))
        #expect(FeatureCSV.parse(FeatureCSV.header[...]) == nil)
    }

    @Test("coverage: every symbol needs a quote W before its newest tick, and the scan 2·W")
    func coverage() {
        var c = HistoryCoverage(windowNs: second)
        #expect(!c.isSufficient)
        c.observe(q(10, 100, 1, 101, 1))
        c.observe(tr(9.5, 100, 1))
        c.observe(q(9.2, 10, 1, 11, 1, symbol: "ETHUSDT"))
        #expect(c.uncoveredSymbols == ["BTCUSDT", "ETHUSDT"])
        c.observe(tr(9.0, 100, 1))  // a trade W old does not cover: the window is made of quotes
        c.observe(q(9.0, 100, 1, 101, 1))  // exactly W before BTCUSDT's newest: covered
        #expect(c.uncoveredSymbols == ["ETHUSDT"])
        c.observe(q(8.2, 10, 1, 11, 1, symbol: "ETHUSDT"))
        #expect(c.uncoveredSymbols.isEmpty)
        #expect(!c.isSufficient)  // not yet 2·W back
        c.observe(q(8.0, 100, 1, 101, 1))
        #expect(c.isSufficient)
        // A symbol first met further back needs its own cover again.
        c.observe(q(7.5, 1, 1, 2, 1, symbol: "SOLUSDT"))
        #expect(!c.isSufficient)
        c.observe(q(6.5, 1, 1, 2, 1, symbol: "SOLUSDT"))
        #expect(c.isSufficient)
    }

    @Test("replaying from where coverage stops reproduces the warm snapshots of the full run")
    func coverageRebuild() {
        let windowNs: Int64 = 50_000_000
        let ticks = randomTicks(count: 3_000, windowNs: windowNs, seed: 11, outOfOrder: false)
        for cut in [900, 1_500, 2_400] {
            var full = FeatureEngine(windowNs: windowNs)
            for tick in ticks[..<cut] { _ = full.apply(tick) }
            var coverage = HistoryCoverage(windowNs: windowNs)
            var start = cut
            while start > 0, !coverage.isSufficient {
                start -= 1
                coverage.observe(ticks[start])
            }
            var rebuilt = FeatureEngine(windowNs: windowNs)
            for tick in ticks[start..<cut] { _ = rebuilt.apply(tick) }
            var warm = 0
            for tick in ticks[cut...] {
                let a = full.apply(tick)
                let b = rebuilt.apply(tick)
                if case .snapshot(let s) = b, s.warm {
                    #expect(a == b)
                    warm += 1
                }
            }
            #expect(warm > 100)
        }
    }
}

@Suite("FixedPoint conversions")
struct FixedPointTests {
    @Test("fast conversions equal the standard library's, including rounding of wide sums")
    func conversions() {
        var rng = SeededGenerator(seed: 3)
        var samples: [Int128] = [0, 1, -1, Int128(Int64.max), Int128(Int64.min), 1 << 62, -(1 << 62), (1 << 62) - 1]
        for bits in 60...126 {
            let base: Int128 = 1 << bits
            samples += [
                base, -base, base - 1, base + 1, -(base + 1), base | (1 << (bits - 53)), base | (1 << (bits - 54))
            ]
        }
        for _ in 0..<20_000 {
            let high =
                Int64.random(in: Int64.min / 4...Int64.max / 4, using: &rng) >> Int.random(in: 0...62, using: &rng)
            let low = UInt64.random(in: 0...UInt64.max, using: &rng)
            samples.append(Int128(high) << 64 | Int128(low))
        }
        for x in samples {
            #expect(FixedPoint.double(x).bitPattern == Double(x).bitPattern, "\(x)")
        }
        for _ in 0..<20_000 {
            let v =
                (Double.random(in: -1...1, using: &rng) * 0x1p104 / Double(1 << Int.random(in: 0...60, using: &rng)))
                .rounded()
            #expect(FixedPoint.int128(integral: v) == Int128(v), "\(v)")
        }
        #expect(FixedPoint.int128(integral: -0x1p100) == -(Int128(1) << 100))
        #expect(FixedPoint.int128(integral: 0x1p62) == Int128(1) << 62)
        #expect(FixedPoint.int128(integral: -0x1p62 - 2048) == -(Int128(1) << 62) - 2048)
    }
}

@Suite("fast stream readers on a real recording")
struct FastReaderRecordingTests {
    /// Every tick of a recording (spot, and USD-M with 10 depth levels) as ingest writes it, and every snapshot
    /// of it as feature-pipeline writes it: the hand-written readers over the entries' bytes take each entry
    /// and give the Codable decoder's value to the bit.
    @Test(arguments: ["binance/spot_ethusdt_20240808.gz", "binance/usdm_btcusdt_20240808.gz"])
    func fastReadersEqualCodableOnEveryEntry(recording: String) throws {
        let ticks = try NormalizedRecording.ticks(try RecordedData.file(recording))
        var engine = FeatureEngine(windowMs: 5000)
        var tickMismatches = 0
        var snapshotMismatches = 0
        for tick in ticks {
            let fields = try StreamFieldEncoder.encode(tick)
            let codable = try StreamFieldDecoder.decodeCodable(Tick.self, from: fields)
            guard let fast = Tick.decodeFast(fields), fast == codable, fast.bids == codable.bids,
                fast.bids.map({ $0.flatMap { $0.map(\.bitPattern) } })
                    == codable.bids.map({ $0.flatMap { $0.map(\.bitPattern) } }),
                fast.asks.map({ $0.flatMap { $0.map(\.bitPattern) } })
                    == codable.asks.map({ $0.flatMap { $0.map(\.bitPattern) } })
            else {
                tickMismatches += 1
                continue
            }
            if case .snapshot(let snapshot) = engine.apply(tick) {
                let fields = try StreamFieldEncoder.encode(snapshot)
                let codable = try StreamFieldDecoder.decodeCodable(FeatureSnapshot.self, from: fields)
                let fast = FeatureSnapshot.decodeFast(fields)
                if fast != codable
                    || fast?.features.values.map(\.bitPattern) != codable.features.values.map(\.bitPattern)
                {
                    snapshotMismatches += 1
                }
            }
        }
        #expect(ticks.count > 10_000)
        #expect(tickMismatches == 0)
        #expect(snapshotMismatches == 0)
    }
}
