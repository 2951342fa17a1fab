import Foundation
import TEModels
import Testing

@Suite("Outcome and RolloutEvent codecs")
struct ModelQualityMessagesTests {
    func roundTrip<M: StreamMessage & Equatable>(_ message: M) throws -> [String: String] {
        let fields = try StreamFieldEncoder.encode(message)
        #expect(fields.first?.0 == "v")
        #expect(try StreamFieldDecoder.decode(M.self, from: fields) == message)
        #expect(try JSONDecoder().decode(M.self, from: JSONEncoder().encode(message)) == message)
        return Dictionary(uniqueKeysWithValues: fields)
    }

    @Test("an Outcome's fields are the DESIGN.md names as readable text; a null label is absent")
    func outcome() throws {
        let labelled = Outcome(
            decisionId: "d1", symbol: "BTCUSDT", modelVersion: "1", score: 0.25, decision: .noTrade, horizonMs: 5000,
            midAtDecision: 61837.635, midAtHorizon: 61840.5, spreadBpsAtDecision: 0.0016, returnBps: 0.463,
            eligible: false, resolvedTsNs: 1_723_161_259_087_891_268)
        let f = try roundTrip(labelled)
        #expect(f["decision_id"] == "d1")
        #expect(f["decision"] == "no_trade")
        #expect(f["eligible"] == "false")
        #expect(f["mid_at_horizon"] == "61840.5")
        #expect(f["resolved_ts_ns"] == "1723161259087891268")
        let unlabelled = Outcome(
            decisionId: "d2", symbol: "ETHUSDT", modelVersion: nil, score: nil, decision: .abstain, horizonMs: 5000,
            resolvedTsNs: 7, reason: "horizon_unresolved")
        let g = try roundTrip(unlabelled)
        #expect(g["eligible"] == nil)
        #expect(g["reason"] == "horizon_unresolved")
    }

    @Test("a RolloutEvent round-trips with its kind as text")
    func rollout() throws {
        let event = RolloutEvent(
            eventId: "e1", tsNs: 9, kind: .rollback, modelName: "trade_eligibility", fromVersion: "2", toVersion: "1",
            metric: "error_rate", value: 0.5, limit: 0.05, replica: "host-a")
        let f = try roundTrip(event)
        #expect(f["kind"] == "rollback")
        #expect(f["limit"] == "0.05")
        #expect(StreamKey.outcomes == "te:outcomes")
        #expect(StreamKey.rollout == "te:rollout")
    }
}
