import AuditStorage
import Foundation
import TEModels
import TEPostgres
import Testing

@Suite("outcomes and rollout_events stores (real server)", .timeLimit(.minutes(2)))
struct OutcomeStoreTests {
    func uuid() -> String { UUID().uuidString.lowercased() }

    @Test("an Outcome is one row under its decision_id, column per field; a repeat is skipped; bad ids are set aside")
    func outcomes() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            _ = try await AuditStore(connection: db).migrate(logger: PostgresTestServer.logger)
            let store = OutcomeStore(connection: db)
            let labelled = Outcome(
                decisionId: uuid(), symbol: "BTCUSDT", modelVersion: "1", score: 0.625, decision: .trade,
                horizonMs: 5000,
                midAtDecision: 61837.635, midAtHorizon: 61840.5, spreadBpsAtDecision: 0.0016170, returnBps: 0.46331,
                eligible: false, resolvedTsNs: 1_723_161_259_087_891_268)
            let unlabelled = Outcome(
                decisionId: uuid(), symbol: "ETHUSDT", modelVersion: nil, score: nil, decision: .abstain,
                horizonMs: 5000,
                resolvedTsNs: 7, reason: "horizon_unresolved")
            let bad = Outcome(
                decisionId: "not-a-uuid", symbol: "X", modelVersion: nil, score: nil, decision: .abstain, horizonMs: 1,
                resolvedTsNs: 1)
            let first = try await store.insertSkippingBadRows([labelled, unlabelled, bad])
            #expect(first.inserted == 2)
            #expect(first.rejected.map(\.index) == [2])
            #expect(try await store.insertSkippingBadRows([labelled, unlabelled]).inserted == 0)
            let rows = try await db.query(
                "SELECT * FROM outcomes WHERE decision_id = $1::uuid", [labelled.decisionId]
            ).rows
            #expect(rows.count == 1)
            let row = try #require(rows.first)
            #expect(row["symbol"] == "BTCUSDT" && row["decision"] == "trade" && row["eligible"] == "f")
            #expect(Double(row["mid_at_decision"] ?? "") == 61837.635)
            #expect(Double(row["return_bps"] ?? "") == 0.46331)
            #expect(row["resolved_ts_ns"] == "1723161259087891268")
            let other = try #require(
                try await db.query(
                    "SELECT eligible, reason, model_version FROM outcomes WHERE decision_id = $1::uuid",
                    [unlabelled.decisionId]
                ).rows.first)
            #expect(
                other["eligible"] == nil && other["model_version"] == nil && other["reason"] == "horizon_unresolved")
        }
    }

    @Test("a RolloutEvent is one row under its event_id, with occurred_at from ts_ns; a repeat is skipped")
    func rolloutEvents() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            _ = try await AuditStore(connection: db).migrate(logger: PostgresTestServer.logger)
            let store = RolloutEventStore(connection: db)
            let event = RolloutEvent(
                eventId: uuid(), tsNs: 1_723_161_254_087_891_268, kind: .rollback, modelName: "trade_eligibility",
                fromVersion: "2", toVersion: "1", metric: "error_rate", value: 1, limit: 0.05, replica: "host-a")
            #expect(try await store.insertSkippingBadRows([event, event]).inserted == 1)
            #expect(try await store.insertSkippingBadRows([event]).inserted == 0)
            let row = try #require(
                try await db.query(
                    "SELECT kind, \"limit\", replica, (extract(epoch FROM occurred_at) * 1000000)::bigint = 1723161254087891 AS at FROM rollout_events"
                ).rows.first)
            #expect(
                row["kind"] == "rollback" && row["limit"] == "0.05" && row["replica"] == "host-a" && row["at"] == "t")
        }
    }
}
