import NIOCore
import NIOPosix
import Testing
import TritonClient

/// Runs its methods on one NIO event loop, like a gateway request handler on the loop that serves it.
private actor EventLoopCaller {
    let loop: any EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.executor.asUnownedSerialExecutor() }

    init(loop: any EventLoop) { self.loop = loop }

    /// Scores `row`; also says whether the code before and after the call ran on `loop`.
    func infer(_ client: TritonClient, row: [Float]) async throws -> (
        onLoopBefore: Bool, scores: [Float], onLoopAfter: Bool
    ) {
        let before = loop.inEventLoop
        let scores = try await client.infer(
            model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.seconds(10)))
        return (before, scores, loop.inEventLoop)
    }
}

/// A call the test model holds for a second (`delay_ms`), so it is still in flight when the test acts on it.
private func slowCall(_ client: TritonClient) -> Task<[Float], any Error> {
    Task {
        try await client.infer(
            model: modelName, version: "1", rows: [Float](repeating: 0, count: 8), rowCount: 1,
            deadline: deadline(.seconds(30)), parameters: [("delay_ms", .int64(1000))])
    }
}

/// Waits (polling) until `condition` holds or `limit` passes; the condition's last value.
private func eventually(within limit: Duration = .seconds(5), _ condition: () -> Bool) async throws -> Bool {
    let giveUp = ContinuousClock.now + limit
    while !condition() {
        if ContinuousClock.now >= giveUp { return false }
        try await Task.sleep(for: .milliseconds(10))
    }
    return true
}

@Suite(.timeLimit(.minutes(2)))
struct EventLoopTests {
    @Test func callFromAnEventLoopUsesThatLoopsConnectionWithoutAHop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var configuration = try TritonClientConfiguration(url: try tritonURL())
        configuration.eventLoopGroup = group
        let client = TritonClient(configuration: configuration)
        let loops = Array(group.makeIterator())
        let statistics = client.connectionStatistics
        #expect(statistics.count == 2, "one connection per event loop of the group")
        #expect(statistics.map { ObjectIdentifier($0.eventLoop) } == loops.map { ObjectIdentifier($0) })

        let weights = try ModelWeights.load(version: "1")
        let row = sampleRows(1, seed: 21, weights: weights)
        let caller = EventLoopCaller(loop: loops[1])
        let result = try await caller.infer(client, row: row)
        try expectScores(result.scores, rows: row, weights: weights)
        #expect(result.onLoopBefore && result.onLoopAfter, "the call started and resumed on the caller's loop")
        var after = client.connectionStatistics
        #expect(after[1].callsStartedOnLoop == 1 && after[1].callsHandedOver == 0)
        #expect(after[0].callsStartedOnLoop == 0 && after[0].callsHandedOver == 0)
        #expect(after[1].connectsStarted == 1 && after[0].connectsStarted == 0)

        // A caller that is on no loop of the group is handed over to one.
        let scores = try await client.infer(
            model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.seconds(10)))
        try expectScores(scores, rows: row, weights: weights)
        after = client.connectionStatistics
        #expect(after.map(\.callsHandedOver).reduce(0, +) == 1)
        #expect(after.map(\.callsStartedOnLoop).reduce(0, +) == 1)

        client.close()
        try await group.shutdownGracefully()
    }

    @Test func cancellingTheCallingTaskResetsItsStreamAndTheConnectionStaysUsable() async throws {
        let client = try TritonClient(url: try tritonURL(), connections: 1)
        #expect(try await client.serverLive())  // connected, so the next call's stream opens at once
        let task = slowCall(client)
        // The call is submitted once it is counted; give the stream a moment to reach the server.
        #expect(try await eventually { client.connectionStatistics[0].callsHandedOver == 2 })
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        let result = await task.result
        if case .failure(let error as TritonError) = result {
            #expect(error.code == .cancelled, "got \(error)")
        } else {
            Issue.record("cancelled call ended with \(result)")
        }
        #expect(try await eventually { client.connectionStatistics[0].streamsReset == 1 })

        let weights = try ModelWeights.load(version: "1")
        let next = sampleRows(1, seed: 5, weights: weights)
        let scores = try await client.infer(
            model: modelName, version: "1", rows: next, rowCount: 1, deadline: deadline(.seconds(10)))
        try expectScores(scores, rows: next, weights: weights)
        #expect(client.connectionStatistics[0].connectsStarted == 1, "the same connection served the next call")
        client.close()
    }

    @Test func closeFailsCallsInFlightWithCancelled() async throws {
        let client = try TritonClient(url: try tritonURL(), connections: 1)
        #expect(try await client.serverLive())
        let calls = (0..<2).map { _ in slowCall(client) }
        #expect(try await eventually { client.connectionStatistics[0].callsHandedOver == 3 })
        try await Task.sleep(for: .milliseconds(50))
        client.close()
        for call in calls {
            let result = await call.result
            if case .failure(let error as TritonError) = result {
                #expect(error.code == .cancelled, "got \(error)")
            } else {
                Issue.record("call in flight at close() ended with \(result)")
            }
        }
        do {
            _ = try await client.serverLive()
            Issue.record("a call after close() succeeded")
        } catch let error as TritonError {
            #expect(error.code == .cancelled)
        }
        client.close()  // idempotent
    }
}
