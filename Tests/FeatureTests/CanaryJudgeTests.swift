import FeatureEngine
import TEModels
import Testing

/// The canary-on-quality judge and the rollout state's transitions, on hand-made outcomes: no I/O.
@Suite("Canary judge and rollout state")
struct CanaryJudgeTests {
    static let policy = CanaryJudge.Policy(minOutcomes: 4, minTrades: 2, window: 6, z: 2)

    @Test("nothing is judged below the minimum number of outcomes per side")
    func minimum() {
        var j = CanaryJudge(policy: Self.policy)
        for _ in 0..<3 { j.addPaired(primary: 0.9, canary: 0.1, eligible: true) }
        #expect(j.verdict() == nil)
        j.addPaired(primary: 0.9, canary: 0.1, eligible: true)
        #expect(j.verdict()?.kind == .worse)
    }

    @Test("shadow pairs: a canary further from every label is worse, by its Brier, hand-computed")
    func pairedWorse() throws {
        var j = CanaryJudge(policy: Self.policy)
        // Labels 1,0,1,0; primary 0.8/0.2 (error² 0.04 each), canary 0.6/0.5 (0.16, 0.25, 0.16, 0.25).
        for (y, c) in [(true, 0.6), (false, 0.5), (true, 0.6), (false, 0.5)] {
            j.addPaired(primary: y ? 0.8 : 0.2, canary: c, eligible: y)
        }
        let v = try #require(j.verdict())
        #expect(v.kind == .worse && v.evidence == .shadow && v.comparison.metric == "brier")
        #expect(abs(v.comparison.canary - 0.205) < 1e-12)
        #expect(abs(v.comparison.primary - 0.04) < 1e-12)
        // Differences 0.12, 0.21, 0.12, 0.21: mean 0.165, sample sd 0.051962, se 0.025981.
        #expect(abs(v.comparison.worseBy - 0.165) < 1e-12)
        #expect(abs(v.comparison.standardError - 0.025980762113533) < 1e-12)
    }

    @Test("shadow pairs: the mirror image is better; identical scores give no verdict")
    func pairedBetterAndEqual() {
        var better = CanaryJudge(policy: Self.policy)
        var equal = CanaryJudge(policy: Self.policy)
        for (y, c) in [(true, 0.6), (false, 0.5), (true, 0.6), (false, 0.5)] {
            better.addPaired(primary: c, canary: y ? 0.8 : 0.2, eligible: y)
            equal.addPaired(primary: c, canary: c, eligible: y)
        }
        #expect(better.verdict()?.kind == .better)
        #expect(equal.verdict() == nil)
    }

    @Test("a difference inside z standard errors is noise: no verdict")
    func noise() {
        var j = CanaryJudge(policy: Self.policy)
        // Canary better on two decisions, worse on two: mean difference 0.
        j.addPaired(primary: 0.8, canary: 0.6, eligible: true)
        j.addPaired(primary: 0.6, canary: 0.8, eligible: true)
        j.addPaired(primary: 0.2, canary: 0.4, eligible: false)
        j.addPaired(primary: 0.4, canary: 0.2, eligible: false)
        #expect(j.verdict() == nil)
    }

    @Test("precision worse vetoes a better Brier; precision needs minTrades on each side")
    func precisionVeto() throws {
        let policy = CanaryJudge.Policy(minOutcomes: 4, minTrades: 2, window: 8, z: 0)
        var j = CanaryJudge(policy: policy)
        // Brier: primary 0.2025 on all 8; canary (4·0 + 2·0.25 + 2·0.16) / 8 = 0.1025, better.
        for _ in 0..<4 { j.addPaired(primary: 0.45, canary: 0.0, eligible: false) }
        for _ in 0..<2 { j.addPaired(primary: 0.45, canary: 0.5, eligible: false) }  // canary trades, wrongly
        for _ in 0..<2 { j.addPaired(primary: 0.55, canary: 0.6, eligible: true) }  // both trade, rightly
        let v = try #require(j.verdict())
        // Primary precision 2/2 = 1, canary 2/4 = 0.5.
        #expect(v.kind == .worse && v.comparison.metric == "precision")
        #expect(v.comparison.canary == 0.5 && v.comparison.primary == 1)
    }

    @Test("canary mode: the primary is judged on the span of the canary's window only")
    func unpairedSameSpan() throws {
        var j = CanaryJudge(policy: Self.policy)
        // Old primary outcomes, before any canary outcome: not the same span.
        for _ in 0..<10 { j.addPrimary(score: 0.5, traded: true, eligible: false) }
        #expect(j.primaryCount == 0)
        for i in 0..<8 {
            j.addCanary(score: 0.9, traded: true, eligible: i % 2 == 0)  // error² 0.01 / 0.81
            j.addPrimary(score: 0.5, traded: true, eligible: i % 2 == 0)  // 0.25 each
        }
        // Window 6: the canary's last 6 (from its 3rd), and the primary's since then: 6 too.
        #expect(j.canaryCount == 6 && j.primaryCount == 6)
        let v = try #require(j.comparisons())
        #expect(v.0 == .canary)
        let brier = try #require(v.1.first { $0.metric == "brier" })
        #expect(abs(brier.canary - 0.41) < 1e-12 && abs(brier.primary - 0.25) < 1e-12)
        // Welch: canary variance 0.192 (sample), primary 0: se = sqrt(0.192 / 6) ≈ 0.178885 > 0.16 / 2.
        #expect(abs(brier.standardError - (0.192 / 6).squareRoot()) < 1e-12)
        #expect(j.verdict() == nil)
    }

    @Test("rollout state: rollback and promotion only from configured, restore only back to it")
    func transitions() {
        let zero = RolloutState()
        #expect(zero.next(.rollback, primary: "1", canary: "2") == .rolledBack)
        #expect(zero.next(.promotion, primary: "1", canary: "2") == .promoted)
        #expect(zero.next(.restore, primary: "1", canary: "2") == nil)
        let rolled = RolloutState(generation: 1, status: .rolledBack, primaryVersion: "1", canaryVersion: "2")
        #expect(rolled.next(.rollback, primary: "1", canary: "2") == nil)
        #expect(rolled.next(.promotion, primary: "1", canary: "2") == nil)
        #expect(rolled.next(.restore, primary: "1", canary: "2") == .configured)
        // A state written for another pair does not apply to a replica configured with 1 and 3.
        #expect(rolled.status(primary: "1", canary: "3") == .configured)
        #expect(rolled.next(.rollback, primary: "1", canary: "3") == .rolledBack)
        let promoted = RolloutState(generation: 2, status: .promoted, primaryVersion: "1", canaryVersion: "2")
        #expect(RolloutState.servingPrimary(promoted.status, primary: "1", canary: "2") == "2")
        let restore = RolloutState.event(
            .restore, model: "m", primary: "1", canary: "2", metric: nil, value: nil, limit: nil, replica: "r",
            eventId: "e", tsNs: 1, restoring: .promoted)
        #expect(restore.fromVersion == "2" && restore.toVersion == "1")
        let rollback = RolloutState.event(
            .rollback, model: "m", primary: "1", canary: "2", metric: "brier", value: 0.3, limit: 0.2, replica: "r",
            eventId: "e", tsNs: 1)
        #expect(rollback.fromVersion == "2" && rollback.toVersion == "1")
    }

    @Test("rollout state: hash codec, and the key shares the stream's cluster slot through its hash tag")
    func codec() {
        #expect(RolloutState(hash: [:]) == RolloutState())
        let s = RolloutState(
            hash: [
                "generation": "3", "status": "promoted", "primary_version": "1", "canary_version": "2", "ts_ns": "7",
                "event_id": "e"
            ])
        #expect(
            s
                == RolloutState(
                    generation: 3, status: .promoted, primaryVersion: "1", canaryVersion: "2", tsNs: 7, eventId: "e"))
        #expect(RolloutState(hash: ["generation": "x"]) == nil)
        #expect(RolloutState.key(model: "trade_eligibility") == "te:rollout:state:trade_eligibility:{te:rollout}")
    }
}
