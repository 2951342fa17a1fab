import Foundation
import TEModels
import TERedis
import TestSupport
import Testing

@testable import Strategies

/// What the service must produce for `signals` read in order: the pure state machine, with duplicate ids
/// (anywhere in the sequence) ignored and every window closed at the end. One symbol, so the per-batch
/// close tick cannot change the order.
func referenceOpportunities(_ signals: [Signal], _ configuration: OpportunityAggregator.Configuration) -> [Opportunity]
{
    var aggregator = OpportunityAggregator(configuration: configuration)
    var seen = Set<String>()
    var out: [Opportunity] = []
    for signal in signals where seen.insert(signal.id).inserted {
        out += aggregator.apply(signal).emissions.map(\.opportunity)
    }
    return out + aggregator.tick(now: .max).map(\.opportunity)
}

/// A reproducible signal sequence for one symbol: runs of one direction, gaps of 50–1550 ms, confidences
/// 0.4–1.0 (some below MIN_CONFIDENCE 0.55), about 5% repeats of an earlier signal (upstream redelivery)
/// and 3% late signals 2.5–7.5 s behind (stale at MAX_SIGNAL_AGE_MS 2000).
func signalSequence(count: Int, seed: UInt64) -> [Signal] {
    var state = seed
    func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
    let strategies = ["rise", "fall", "ofi", "book"]
    var atMs: Int64 = 0
    var direction = Direction.buy
    var out: [Signal] = []
    while out.count < count {
        let roll = unit()
        if roll < 0.05, !out.isEmpty {
            out.append(out[Int(next() % UInt64(out.count))])
            continue
        }
        atMs += 50 + Int64(next() % 1500)
        if unit() < 0.2 { direction = direction == .buy ? .sell : .buy }
        let late = roll > 0.97 ? 2500 + Int64(next() % 5000) : 0
        let confidence = ((0.4 + 0.6 * unit()) * 1000).rounded() / 1000
        out.append(signal(strategies[Int(next() % 4)], direction, confidence, atMs: atMs - late))
    }
    return out
}

@Suite("opportunity-aggregator service (real binary, real Redis)", .timeLimit(.minutes(4)))
struct AggregatorServiceTests {
    let configuration = OpportunityAggregator.Configuration(
        cooldownNs: 5000 * ms, minConfidence: 0.55, maxSignalAgeNs: 2000 * ms)

    func environment(_ streams: TestStreams, idleCloseMs: Int, extra: [String: String] = [:]) -> [String: String] {
        var env = [
            "SIGNALS_STREAM": streams.signals, "OPPORTUNITIES_STREAM": streams.opportunities,
            "AGG_STATE_PREFIX": streams.statePrefix, "CONSUMER_NAME": streams.consumer,
            "COOLDOWN_MS": "5000", "MIN_CONFIDENCE": "0.55", "MAX_SIGNAL_AGE_MS": "2000", "CLOSE_GRACE_MS": "1000",
            "IDLE_CLOSE_MS": String(idleCloseMs)
        ]
        for (k, v) in extra { env[k] = v }
        return env
    }

    /// A redis-server of the test's own with this checkout's ACL users (the aggregator's grant as it is in the
    /// tree, `test:*` names allowed), so the shared server's users (rendered when it started) do not matter.
    func privateRedis() async throws -> (PrivateRedisServer, RedisClient) {
        let server = try await PrivateRedisServer(aclFile: try await StoreUsers.renderStrictACL(testKeys: true))
        return (server, RedisClient(configuration: try RedisConfiguration(url: server.url), name: "test"))
    }

    /// Waits until the output has `count` entries and then a little longer, to catch extra ones.
    func output(_ redis: RedisClient, _ streams: TestStreams, count: Int, process: ChildProcess) async throws
        -> [Opportunity]
    {
        let reached = try await TestEnv.eventually(timeout: .seconds(60)) {
            try await redis.xlen(streams.opportunities) >= count
        }
        if !reached {
            throw TestFailure(
                "only \(try await redis.xlen(streams.opportunities)) of \(count) opportunities; output:\n\(process.output())"
            )
        }
        try await Task.sleep(for: .milliseconds(800))
        return try await redis.messages(Opportunity.self, in: streams.opportunities)
    }

    @Test func sameOpportunitiesAsTheStateMachineAndRedeliveredSignalsAreIgnored() async throws {
        let (server, redis) = try await privateRedis()
        defer {
            redis.close()
            Task { try? await server.kill() }
        }
        let streams = TestStreams()
        let signals = signalSequence(count: 400, seed: 7)
        let expected = referenceOpportunities(signals, configuration)
        #expect(expected.count > 40)
        #expect(Set(expected.map(\.emitReason)) == ["first", "upgrade", "close"])
        try await redis.add(signals, to: streams.signals)

        let service = try RunningService.start(
            "opportunity-aggregator",
            environment: environment(streams, idleCloseMs: 2000, extra: ["STREAM_BATCH_SIZE": "16"]),
            redisURL: server.url)
        let got = try await output(redis, streams, count: expected.count, process: service.process)
        #expect(got == expected)

        // The same signals again (an upstream replay): all remembered, nothing new.
        let duplicatesBefore = await service.metric("te_signals_duplicate_total") ?? 0
        try await redis.add(Array(signals[0..<100]), to: streams.signals)
        let drained = try await TestEnv.eventually(timeout: .seconds(30)) {
            try await redis.drained(streams.signals, group: "opportunity-aggregator")
        }
        #expect(drained)
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await redis.xlen(streams.opportunities) == expected.count)
        let duplicatesAfter = await service.metric("te_signals_duplicate_total") ?? 0
        #expect(duplicatesAfter - duplicatesBefore == 100)
        let firsts = expected.filter { $0.emitReason == "first" }.count
        #expect(await service.metric("te_opportunities_emitted_total", labels: ["reason=\"first\""]) == Double(firsts))
        #expect((await service.metric("te_signals_stale_total") ?? 0) > 0)
        #expect((await service.metric("te_signals_low_confidence_total") ?? 0) > 0)
        #expect(try await service.stop() == 0)
    }

    @Test func restartInTheMiddleOfAWindowNeitherLosesNorDuplicates() async throws {
        let (server, redis) = try await privateRedis()
        defer {
            redis.close()
            Task { try? await server.kill() }
        }
        let streams = TestStreams()
        let a = signal("rise", .buy, 0.6, atMs: 0)
        let b = signal("ofi", .buy, 0.7, atMs: 1000)
        let c = signal("book", .buy, 0.65, atMs: 2000)
        let d = signal("rise", .buy, 0.8, atMs: 3000)
        try await redis.add([a, b], to: streams.signals)

        // Never closes on idleness: the window is open when the process dies.
        let first = try RunningService.start(
            "opportunity-aggregator", environment: environment(streams, idleCloseMs: 600_000), redisURL: server.url)
        let before = try await output(redis, streams, count: 2, process: first.process)
        #expect(before.map(\.emitReason) == ["first", "upgrade"])
        first.process.kill9()
        try await first.process.waitForExit()

        // While it is down: the rest of the window, and `b` again (an upstream redelivery).
        try await redis.add([c, b, d], to: streams.signals)
        let second = try RunningService.start(
            "opportunity-aggregator", environment: environment(streams, idleCloseMs: 2000), redisURL: server.url)
        let all = try await output(redis, streams, count: 4, process: second.process)
        #expect(all.map(\.emitReason) == ["first", "upgrade", "upgrade", "close"])
        #expect(Set(all.map(\.id)) == ["BTCUSDT:buy:\(ts(0)):rise"])
        #expect(all[3].signalIds == [a.id, b.id, c.id, d.id])
        #expect(all[3].count == 4)
        #expect(all[3].confidence == 0.8)
        #expect(all[3].strategies == ["rise", "ofi", "book"])
        #expect(all == referenceOpportunities([a, b, c, b, d], configuration))
        #expect(try await second.stop() == 0)
    }

    @Test func repeatedSIGKILLsAtRandomPointsGiveExactlyTheUninterruptedOutput() async throws {
        let (server, redis) = try await privateRedis()
        defer {
            redis.close()
            Task { try? await server.kill() }
        }
        let streams = TestStreams()
        let signals = signalSequence(count: 4000, seed: 42)
        let expected = referenceOpportunities(signals, configuration)
        try await redis.add(signals, to: streams.signals)

        // Small batches, killed every 30–200 ms until everything is acknowledged. MAX_DELIVERIES is raised
        // so that a batch caught by several kills is not dead-lettered (not what this test is about).
        let extra = ["STREAM_BATCH_SIZE": "2", "MAX_DELIVERIES": "1000"]
        var kills = 0
        var last: ChildProcess?
        let deadline = ContinuousClock.now + .seconds(150)
        while try await !redis.drained(streams.signals, group: "opportunity-aggregator") {
            guard ContinuousClock.now < deadline else { throw TestFailure("input not drained after \(kills) kills") }
            let service = try RunningService.start(
                "opportunity-aggregator", environment: environment(streams, idleCloseMs: 600_000, extra: extra),
                redisURL: server.url)
            try await Task.sleep(for: .milliseconds(30 + Int.random(in: 0...170)))
            service.process.kill9()
            try await service.process.waitForExit()
            last = service.process
            kills += 1
        }
        #expect(kills >= 3, "the input drained before a second kill: the test did not exercise restarts")

        // A last, clean run closes the open windows on idleness.
        let final = try RunningService.start(
            "opportunity-aggregator", environment: environment(streams, idleCloseMs: 2000, extra: extra),
            redisURL: server.url)
        let got = try await output(redis, streams, count: expected.count, process: final.process)
        #expect(got.count == expected.count, "last killed run's output:\n\(last?.output() ?? "")")
        #expect(got == expected)
        #expect(try await final.stop() == 0)
    }

    /// STREAM_SHARDS = 2: one replica owns both `te:signals:{k}`, each shard with its own state in its own
    /// slot; each symbol's opportunities are the state machine's over its shard's signals alone.
    @Test func withShardsEachShardIsAggregatedOnItsOwn() async throws {
        let (server, redis) = try await privateRedis()
        defer {
            redis.close()
            Task { try? await server.kill() }
        }
        let streams = TestStreams()
        let shards = 2
        // Two symbols in different shards.
        let candidates = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT"]
        let first = candidates[0]
        let second = try #require(
            candidates.first {
                StreamKey.shard(of: $0, shards: shards) != StreamKey.shard(of: first, shards: shards)
            })
        var expected: [String: [Opportunity]] = [:]
        var ids: [String] = []
        for (i, symbol) in [first, second].enumerated() {
            let signals = signalSequence(count: 300, seed: 21 + UInt64(i)).map { s in
                let ts = s.tsNs
                return Signal(
                    id: Signal.makeID(symbol: symbol, strategy: s.strategy, tsNs: ts), symbol: symbol,
                    strategy: s.strategy, direction: s.direction, confidence: s.confidence, tsNs: ts,
                    features: s.features)
            }
            expected[symbol] = referenceOpportunities(signals, configuration)
            ids += signals.map(\.id)
            let k = StreamKey.shard(of: symbol, shards: shards)
            try await redis.add(signals, to: StreamKey.sharded(streams.signals, shard: k, of: shards))
        }
        #expect(expected.values.allSatisfy { $0.count > 20 })

        let service = try RunningService.start(
            "opportunity-aggregator",
            environment: environment(
                streams, idleCloseMs: 2000, extra: ["STREAM_SHARDS": String(shards), "STREAM_BATCH_SIZE": "16"]),
            redisURL: server.url)
        let total = expected.values.map(\.count).reduce(0, +)
        let got = try await output(redis, streams, count: total, process: service.process)
        #expect(got.count == total)
        for symbol in [first, second] {
            #expect(got.filter { $0.symbol == symbol } == expected[symbol])
        }
        // Each shard's state lives under its own tagged prefix, and its open windows are its own gauge.
        for k in 0..<shards {
            #expect(try await !redis.hgetall("\(streams.statePrefix):{\(k)}:state").isEmpty)
            #expect(await service.metric("te_opportunities_open_windows", labels: ["shard=\"\(k)\""]) != nil)
        }
        #expect(try await service.stop() == 0)
    }

    /// Four symbols, one per shard of 4, each with its own signal sequence, written to its shard's stream.
    static func shardedSignals(shards: Int, signals: String) -> (
        bySymbol: [String: [Signal]], streams: [String: [Signal]]
    ) {
        let candidates = [
            "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "BNBUSDT", "LTCUSDT", "DOTUSDT",
            "AVAXUSDT", "LINKUSDT", "TRXUSDT"
        ]
        var chosen: [Int: String] = [:]
        for symbol in candidates where chosen[StreamKey.shard(of: symbol, shards: shards)] == nil {
            chosen[StreamKey.shard(of: symbol, shards: shards)] = symbol
        }
        var bySymbol: [String: [Signal]] = [:]
        var streams: [String: [Signal]] = [:]
        for (k, symbol) in chosen.sorted(by: { $0.key < $1.key }) {
            let sequence = signalSequence(count: 1500, seed: 100 + UInt64(k)).map { s in
                Signal(
                    id: Signal.makeID(symbol: symbol, strategy: s.strategy, tsNs: s.tsNs), symbol: symbol,
                    strategy: s.strategy, direction: s.direction, confidence: s.confidence, tsNs: s.tsNs,
                    features: s.features)
            }
            bySymbol[symbol] = sequence
            streams[StreamKey.sharded(signals, shard: k, of: shards)] = sequence
        }
        return (bySymbol, streams)
    }

    enum Disruption {
        case none
        /// The first replica is SIGKILLed once some opportunities are out.
        case kill
        /// The first replica is SIGSTOPped once some opportunities are out, until the second owns every shard,
        /// then resumed.
        case pause
    }

    /// `replicas` aggregators on STREAM_SHARDS = 4 over the same signals on a server of their own, the first
    /// one disrupted as `disrupt` says. Returns the output stream.
    func shardedRun(replicas: Int, disrupt: Disruption = .none) async throws -> (
        got: [Opportunity], expected: [String: [Opportunity]]
    ) {
        let (server, redis) = try await privateRedis()
        defer {
            redis.close()
            Task { try? await server.kill() }
        }
        let streams = TestStreams()
        let shards = 4
        let input = Self.shardedSignals(shards: shards, signals: streams.signals)
        #expect(input.bySymbol.count == shards)
        var expected: [String: [Opportunity]] = [:]
        for (symbol, signals) in input.bySymbol { expected[symbol] = referenceOpportunities(signals, configuration) }
        let total = expected.values.map(\.count).reduce(0, +)

        // Small batches so the run lasts long enough to kill a replica in the middle of it.
        let services = try (0..<replicas).map { i in
            try RunningService.start(
                "opportunity-aggregator",
                environment: environment(
                    streams, idleCloseMs: 2000,
                    extra: [
                        "STREAM_SHARDS": String(shards), "STREAM_BATCH_SIZE": "4", "SHARD_LEASE_MS": "1000",
                        "CONSUMER_NAME": "\(streams.consumer)-\(i)"
                    ]),
                redisURL: server.url)
        }
        // Every replica owns shards before the input comes (each of two holds two).
        let balanced = try await TestEnv.eventually(timeout: .seconds(30), every: .milliseconds(100)) {
            var owned: [Double] = []
            for service in services { owned.append(await service.metric("te_shards_owned") ?? 0) }
            return owned.reduce(0, +) == Double(shards) && owned.allSatisfy { $0 >= Double(shards / replicas) }
        }
        #expect(balanced, "shards not balanced: \(services.map { $0.process.output().suffix(800) })")
        for (stream, signals) in input.streams.sorted(by: { $0.key < $1.key }) {
            try await redis.add(signals, to: stream)
        }

        if disrupt != .none {
            let started = try await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(20)) {
                try await redis.xlen(streams.opportunities) >= total / 5
            }
            #expect(started)
            let before = try await redis.xlen(streams.opportunities)
            if disrupt == .kill {
                services[0].process.kill9()
                _ = try await services[0].process.waitForExit()
            } else {
                services[0].process.signal(SIGSTOP)
                let taken = try await TestEnv.eventually(timeout: .seconds(30), every: .milliseconds(50)) {
                    await services[1].metric("te_shards_owned") == Double(shards)
                }
                #expect(taken, "the paused replica's shards did not move: \(services[1].process.output().suffix(1500))")
                services[0].process.signal(SIGCONT)
            }
            #expect(before < total, "the run ended before the disruption: nothing was taken over")
        }
        let survivor = services[disrupt == .none ? 0 : 1]
        let got = try await output(redis, streams, count: total, process: survivor.process)
        if disrupt == .pause {
            // The resumed replica dropped its shards (it learnt from its round or a refused step; it may take
            // some back for balance afterwards);
            // what it still tried to read, claim or write was refused by Redis (reported: how much it had in
            // flight when paused depends on the moment).
            let paused = services[0]
            let lost = await TestEnv.eventually(timeout: .seconds(20)) {
                (await paused.metric("te_shard_changes_total", labels: ["change=\"lost\""]) ?? 0) >= 1
            }
            #expect(lost, "\(paused.process.output().suffix(3000))")
            let reads = await paused.metric("te_stream_fenced_reads_total") ?? -1
            let writes = await paused.metric("te_stream_fenced_writes_total") ?? -1
            #expect(reads >= 0 && writes >= 0, "the refusal counters are exported")
            print(
                "aggregator: the resumed replica had \(Int(reads)) read(s)/claim(s) and \(Int(writes)) write(s) refused"
            )
        }
        if disrupt == .kill {
            // The survivor took the killed replica's shards.
            #expect(await survivor.metric("te_shards_owned") == Double(shards))
            #expect((await survivor.metric("te_shard_changes_total", labels: ["change=\"acquired\""]) ?? 0) >= 4)
        }
        for (i, service) in services.enumerated() where !(disrupt == .kill && i == 0) {
            #expect(try await service.stop() == 0)
        }
        return (got, expected)
    }

    /// Two replicas on 4 shards give each symbol exactly the opportunities of one replica (the state machine
    /// over its signals), in order, none twice; so does a run where one of the two is SIGKILLed in the
    /// middle (the other takes its shards, claims what it left pending and rebuilds the state from Redis).
    @Test func twoReplicasOnShardsGiveOneReplicasOpportunitiesEvenWhenOneIsKilled() async throws {
        async let oneRun = shardedRun(replicas: 1)
        async let twoRun = shardedRun(replicas: 2)
        async let killedRun = shardedRun(replicas: 2, disrupt: .kill)
        let (one, two, killed) = try await (oneRun, twoRun, killedRun)
        for run in [one, two, killed] {
            #expect(run.got.count == run.expected.values.map(\.count).reduce(0, +))
            for (symbol, opportunities) in run.expected {
                #expect(run.got.filter { $0.symbol == symbol } == opportunities, "\(symbol)")
            }
        }
        for symbol in one.expected.keys {
            #expect(two.got.filter { $0.symbol == symbol } == one.got.filter { $0.symbol == symbol })
            #expect(killed.got.filter { $0.symbol == symbol } == one.got.filter { $0.symbol == symbol })
        }
    }

    /// Two replicas on 4 shards, one SIGSTOPped past its lease in the middle of the run and then resumed: each
    /// symbol still gets exactly the state machine's opportunities, in order, none twice. The paused replica's
    /// reads, claims and writes are fenced at the store, so on waking it takes no entry from the new owner.
    @Test func twoReplicasOnShardsWithOnePausedPastItsLeaseGiveOneReplicasOpportunities() async throws {
        let run = try await shardedRun(replicas: 2, disrupt: .pause)
        #expect(run.got.count == run.expected.values.map(\.count).reduce(0, +))
        for (symbol, opportunities) in run.expected {
            #expect(run.got.filter { $0.symbol == symbol } == opportunities, "\(symbol)")
        }
    }
}
