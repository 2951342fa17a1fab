import Foundation
import Testing

@testable import Strategies

@Suite("Strategy file")
struct StrategyConfigurationTests {
    func parse(_ json: String) throws(StrategyConfigurationError) -> StrategySet {
        try StrategySet.parse(Data(json.utf8), file: "test.json")
    }

    func error(_ json: String) -> StrategyConfigurationError? {
        do {
            _ = try parse(json)
            return nil
        } catch {
            return error
        }
    }

    @Test func parsesEveryKind() throws {
        let set = try parse(
            """
            {"strategies": [
              {"name": "r", "kind": "rapid_rise", "min_change_bps": 8, "min_volume": 20},
              {"name": "f", "kind": "rapid_fall", "min_change_bps": 6.5, "min_volume": 0, "confidence_scale_bps": 2},
              {"name": "p", "kind": "imbalance_pressure", "max_spread_bps": 0.05, "min_imbalance": 0.9},
              {"name": "o", "kind": "ofi_breakout", "k": 40, "min_tick_rate": 100}
            ]}
            """)
        #expect(
            set.strategies == [
                Strategy(name: "r", rule: .rapidRise(.init(minChangeBps: 8, minVolume: 20, confidenceScaleBps: 8))),
                Strategy(name: "f", rule: .rapidFall(.init(minChangeBps: 6.5, minVolume: 0, confidenceScaleBps: 2))),
                Strategy(name: "p", rule: .imbalancePressure(.init(maxSpreadBps: 0.05, minImbalance: 0.9))),
                Strategy(name: "o", rule: .ofiBreakout(.init(k: 40, minTickRate: 100, confidenceScale: 40)))
            ])
    }

    @Test func committedDefaultFileLoads() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/strategies/default.json").path
        let set = try StrategySet.load(file: file)
        #expect(Set(set.strategies.map(\.rule.kind)) == Set(Strategy.Kind.allCases))
    }

    @Test func negativeParameterNamesKeyPath() {
        let e = error(
            """
            {"strategies": [
              {"name": "a", "kind": "rapid_rise", "min_change_bps": 8, "min_volume": 20},
              {"name": "b", "kind": "ofi_breakout", "k": 40, "min_tick_rate": 100},
              {"name": "c", "kind": "rapid_fall", "min_change_bps": -3, "min_volume": 20}
            ]}
            """)
        #expect(
            e
                == StrategyConfigurationError(
                    file: "test.json", keyPath: "strategies[2].min_change_bps", reason: "negative, got -3.0"))
        #expect(e?.description == "strategy file test.json: strategies[2].min_change_bps: negative, got -3.0")
    }

    @Test func missingParameter() {
        let e = error(#"{"strategies": [{"name": "o", "kind": "ofi_breakout", "k": 40}]}"#)
        #expect(e?.keyPath == "strategies[0].min_tick_rate")
        #expect(e?.reason == "missing")
    }

    @Test func zeroWherePositiveRequired() {
        let e = error(#"{"strategies": [{"name": "o", "kind": "ofi_breakout", "k": 0, "min_tick_rate": 1}]}"#)
        #expect(e?.keyPath == "strategies[0].k")
        #expect(e?.reason == "must be greater than 0, got 0.0")
    }

    @Test func imbalanceAboveOne() {
        let e = error(
            #"{"strategies": [{"name": "p", "kind": "imbalance_pressure", "max_spread_bps": 1, "min_imbalance": 1.5}]}"#
        )
        #expect(e?.keyPath == "strategies[0].min_imbalance")
        #expect(e?.reason == "must be in (0, 1], got 1.5")
    }

    @Test func wrongType() {
        let e = error(
            #"{"strategies": [{"name": "r", "kind": "rapid_rise", "min_change_bps": "8", "min_volume": 1}]}"#)
        #expect(e?.keyPath == "strategies[0].min_change_bps")
        #expect(e?.reason == "expected a number, got a string")
        let b = error(
            #"{"strategies": [{"name": "r", "kind": "rapid_rise", "min_change_bps": true, "min_volume": 1}]}"#)
        #expect(b?.reason == "expected a number, got a boolean")
    }

    @Test func unknownKind() {
        let e = error(#"{"strategies": [{"name": "x", "kind": "moon_shot"}]}"#)
        #expect(e?.keyPath == "strategies[0].kind")
        #expect(e?.reason.hasPrefix("unknown kind \"moon_shot\"") == true)
    }

    @Test func unknownKeyCatchesTypos() {
        let e = error(
            #"{"strategies": [{"name": "r", "kind": "rapid_rise", "min_change_bps": 8, "min_volume": 1, "min_volme": 2}]}"#
        )
        #expect(e?.keyPath == "strategies[0].min_volme")
        #expect(e?.reason.hasPrefix("unknown key") == true)
    }

    @Test func duplicateName() {
        let e = error(
            """
            {"strategies": [
              {"name": "same", "kind": "ofi_breakout", "k": 40, "min_tick_rate": 100},
              {"name": "same", "kind": "ofi_breakout", "k": 60, "min_tick_rate": 100}
            ]}
            """)
        #expect(e?.keyPath == "strategies[1].name")
        #expect(e?.reason == "duplicate name \"same\" (also strategies[0].name)")
    }

    @Test func invalidName() {
        let e = error(#"{"strategies": [{"name": "a:b", "kind": "ofi_breakout", "k": 40, "min_tick_rate": 100}]}"#)
        #expect(e?.keyPath == "strategies[0].name")
    }

    @Test func malformedJSONNamesTheFile() {
        let e = error(#"{"strategies": [ {"name": "a", }"#)
        #expect(e?.file == "test.json")
        #expect(e?.keyPath == "")
        #expect(e?.reason.hasPrefix("malformed JSON") == true)
        #expect(e?.description.hasPrefix("strategy file test.json: malformed JSON") == true)
    }

    @Test func structureErrors() {
        #expect(error("[]")?.reason == "expected an object, got an array")
        #expect(error("{}")?.keyPath == "strategies")
        #expect(error(#"{"strategies": []}"#)?.reason == "empty: configure at least one strategy")
        #expect(error(#"{"strategies": [3]}"#)?.keyPath == "strategies[0]")
    }

    @Test func unreadableFile() {
        let path = "/nonexistent/dir/strategies-\(UInt64.random(in: 0...UInt64.max)).json"
        do {
            _ = try StrategySet.load(file: path)
            Issue.record("expected an error")
        } catch {
            #expect(error.file == path)
            #expect(error.reason.hasPrefix("cannot read"))
            #expect(!error.description.contains("\n"))
        }
    }
}
