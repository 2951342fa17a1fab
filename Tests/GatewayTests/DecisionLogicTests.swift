import GatewayHTTP
import ServiceKit
import TEModels
import Testing

@testable import GatewayEngine

/// Pure decision logic with hand-made inputs (no I/O).
@Suite struct DecisionLogicTests {
    let t0 = ContinuousClock.now

    @Test func breakerOpensSkipsHalfOpensCloses() {
        var b = CircuitBreaker(failureThreshold: 3, openDuration: .milliseconds(100))
        #expect(b.acquire(now: t0) == .allowed)
        b.recordFailure(now: t0)
        b.recordFailure(now: t0)
        #expect(b.gaugeValue == 0)
        b.recordFailure(now: t0)
        #expect(b.state == .open(until: t0 + .milliseconds(100)))
        #expect(b.gaugeValue == 2)
        #expect(b.acquire(now: t0 + .milliseconds(50)) == .rejected)
        #expect(b.acquire(now: t0 + .milliseconds(100)) == .probe)
        #expect(b.gaugeValue == 1)
        // Only one probe at a time.
        #expect(b.acquire(now: t0 + .milliseconds(101)) == .rejected)
        b.recordFailure(now: t0 + .milliseconds(110))
        #expect(b.state == .open(until: t0 + .milliseconds(210)))
        #expect(b.acquire(now: t0 + .milliseconds(210)) == .probe)
        b.recordSuccess()
        #expect(b.state == .closed(consecutiveFailures: 0))
        #expect(b.acquire(now: t0 + .milliseconds(211)) == .allowed)
    }

    @Test func breakerSuccessResetsCountAndAbandonedProbeFreesSlot() {
        var b = CircuitBreaker(failureThreshold: 2, openDuration: .milliseconds(10))
        b.recordFailure(now: t0)
        b.recordSuccess()
        b.recordFailure(now: t0)
        #expect(b.state == .closed(consecutiveFailures: 1))
        b.recordFailure(now: t0)
        #expect(b.acquire(now: t0 + .milliseconds(10)) == .probe)
        b.recordAbandoned(permission: .probe)
        #expect(b.state == .halfOpen(probeInFlight: false))
        #expect(b.acquire(now: t0 + .milliseconds(11)) == .probe)
    }

    @Test func raceAnswersFromPrimary() {
        var r = FallbackRace(hasSecondary: true)
        #expect(r.start() == .start(.primary))
        #expect(r.on(.succeeded(.primary)) == .answer(.primary))
        #expect(r.reasons.isEmpty)
    }

    @Test func raceRetriesOnSecondaryAfterFailure() {
        var r = FallbackRace(hasSecondary: true)
        _ = r.start()
        #expect(r.on(.failed(.primary, reason: "unavailable")) == .start(.secondary))
        #expect(r.on(.succeeded(.secondary)) == .answer(.secondary))
        #expect(r.reasons == ["primary_unavailable"])
    }

    @Test func raceHedgesOnceAndTakesFirstSuccess() {
        var r = FallbackRace(hasSecondary: true)
        _ = r.start()
        #expect(r.on(.hedgeDue) == .start(.secondary))
        #expect(r.on(.hedgeDue) == .wait)
        #expect(r.on(.succeeded(.secondary)) == .answer(.secondary))
        #expect(r.reasons == ["primary_slow"])
        #expect(r.on(.succeeded(.primary)) == .wait)
    }

    @Test func raceGivesUpAtDeadlineOrWhenBothFail() {
        var r = FallbackRace(hasSecondary: true)
        _ = r.start()
        _ = r.on(.hedgeDue)
        #expect(r.on(.deadline) == .giveUp)
        #expect(r.reasons == ["primary_timeout", "secondary_timeout"])

        var s = FallbackRace(hasSecondary: true)
        _ = s.start()
        #expect(s.on(.skipped(.primary)) == .start(.secondary))
        #expect(s.on(.skipped(.secondary)) == .giveUp)
        #expect(s.reasons == ["primary_breaker_open", "secondary_breaker_open"])

        var n = FallbackRace(hasSecondary: false)
        _ = n.start()
        #expect(n.on(.hedgeDue) == .wait)
        #expect(n.on(.failed(.primary, reason: "model_error")) == .giveUp)
        #expect(n.reasons == ["primary_model_error"])
    }

    func limits(window: Int = 10, minSamples: Int = 5) -> CanaryMonitor.Limits {
        .init(maxErrorRate: 0.2, maxP99Ms: 10, maxDisagreeRate: 0.3, window: window, minSamples: minSamples)
    }

    @Test func canaryJudgedOnlyAfterMinSamples() {
        var m = CanaryMonitor(limits: limits())
        for _ in 0..<4 { #expect(m.record(.init(failed: true, latencyMs: 1, disagreed: nil)) == nil) }
        // 5 of 5 failed: 1.0 > 0.2
        #expect(m.record(.init(failed: true, latencyMs: 1, disagreed: nil)) == .errorRate(1.0))
    }

    @Test func canaryErrorRateOverSlidingWindow() {
        var m = CanaryMonitor(limits: limits())
        for _ in 0..<10 { #expect(m.record(.init(failed: false, latencyMs: 1, disagreed: false)) == nil) }
        // 2 failures of 10 = 0.2: not above the limit.
        #expect(m.record(.init(failed: true, latencyMs: 1, disagreed: nil)) == nil)
        #expect(m.record(.init(failed: true, latencyMs: 1, disagreed: nil)) == nil)
        // 3 of 10 = 0.3 > 0.2
        #expect(m.record(.init(failed: true, latencyMs: 1, disagreed: nil)) == .errorRate(0.3))
    }

    @Test func canaryP99AndDisagreement() {
        var m = CanaryMonitor(limits: limits())
        for _ in 0..<9 { _ = m.record(.init(failed: false, latencyMs: 2, disagreed: false)) }
        // p99 of ten latencies = the largest: 12 ms > 10
        #expect(m.record(.init(failed: false, latencyMs: 12, disagreed: false)) == .p99Ms(12))

        var d = CanaryMonitor(limits: limits())
        for i in 0..<10 {
            let breach = d.record(.init(failed: false, latencyMs: 1, disagreed: i % 2 == 0))
            // disagreements 1,1,2,2,3 of 5 samples: 3/5 = 0.6 > 0.3 at the fifth
            if i < 4 { #expect(breach == nil) } else if i == 4 { #expect(breach == .disagreeRate(0.6)) }
        }
    }

    @Test func canaryStickyHashIsDeterministicAndUniform() {
        #expect(CanaryController.unitHash("abc") == CanaryController.unitHash("abc"))
        var below = 0
        for i in 0..<10_000 where CanaryController.unitHash("req-\(i)") < 0.25 { below += 1 }
        #expect(below > 2_300 && below < 2_700)
    }

    @Test func rulesBaseline() {
        let balanced = FeatureVector(
            spreadBps: 0, imbalance: 0, depthImbalance: 0, ofiNorm: 0, realizedVolBps: 0, midReturnBps: 0, tickRate: 0,
            micropriceOffsetBps: 0)
        // σ(-0.5)
        #expect(abs(RulesBaseline.score(balanced) - 0.3775406687981454) < 1e-12)
        var skewed = balanced
        skewed.depthImbalance = -0.6  // z = -0.5 + 1.5 = 1
        #expect(abs(RulesBaseline.score(skewed) - 0.7310585786300049) < 1e-12)
        skewed.spreadBps = 2.5  // z = 1 - 2 = -1
        #expect(abs(RulesBaseline.score(skewed) - 0.2689414213699951) < 1e-12)
    }

    @Test func configurationNamesTheVariable() {
        #expect(throws: ConfigurationError(variable: "REDIS_URL", problem: "is required")) {
            try GatewayConfiguration(environment: ["TRITON_URL": "h:1"])
        }
        #expect(throws: ConfigurationError.self) {
            try GatewayConfiguration(environment: [
                "REDIS_URL": "redis://h:1", "TRITON_URL": "h:1", "CANARY_FRACTION": "2"
            ])
        }
        let c = try? GatewayConfiguration(environment: [
            "REDIS_URL": "redis://h:1", "TRITON_URL": "h:1", "GATEWAY_API_KEYS": "a, b,,", "SCORE_TIMEOUT_MS": "15"
        ])
        #expect(c?.apiKeys.entries.count == 2)
        #expect(c?.apiKeys.clients == ["default"])
        #expect(c?.scoreTimeoutMs == 15)
        #expect(c?.hedgeAfter == 6)
    }
}

/// A failed batched call counts once against its endpoint, however many requests rode in it.
@Suite struct BatchFailureCountingTests {
    @Test func oneRiderReportsTheCallsFailure() {
        let failures = InferenceBatcher.riderFailures(
            InferenceFailure(.timeout, "deadline exceeded"), riders: 4, reporter: 1)
        #expect(failures.count == 4)
        #expect(failures.map(\.countsAgainstEndpoint) == [false, true, false, false])
        #expect(failures.allSatisfy { $0.kind == .timeout && $0.message == "deadline exceeded" })
    }

    @Test func modelErrorsNeverCountEvenForTheReporter() {
        let failures = InferenceBatcher.riderFailures(
            InferenceFailure(.modelError, "bad shape"), riders: 2, reporter: 0)
        #expect(failures.map(\.countsAgainstEndpoint) == [false, false])
    }

    @Test func breakerOpensOnlyAfterFiveFailedCallsNotFiveRiders() {
        var breaker = CircuitBreaker(failureThreshold: 5, openDuration: .milliseconds(100))
        let t0 = ContinuousClock.now
        // One call with 32 riders failed: one counted failure, 31 abandoned.
        for f in InferenceBatcher.riderFailures(InferenceFailure(.timeout, "late"), riders: 32, reporter: 0) {
            if f.countsAgainstEndpoint {
                breaker.recordFailure(now: t0)
            } else {
                breaker.recordAbandoned(permission: .allowed)
            }
        }
        #expect(breaker.state == .closed(consecutiveFailures: 1))
    }
}
