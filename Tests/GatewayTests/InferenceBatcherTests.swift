import GatewayHTTP
import ServiceKit
import Synchronization
import TEModels
import TestSupport
import Testing

@testable import GatewayEngine

/// The real Triton endpoint, recording the size of every call the batcher makes through it.
final class CallSizeRecorder: InferenceEndpoint {
    let base: TritonEndpoint
    let sizes = Mutex<[Int]>([])
    var label: String { base.label }

    init(_ base: TritonEndpoint) { self.base = base }

    func infer(version: String, rows: [Float], rowCount: Int, deadline: ContinuousClock.Instant)
        async throws(InferenceFailure)
        -> [Float]
    {
        sizes.withLock { $0.append(rowCount) }
        return try await base.infer(version: version, rows: rows, rowCount: rowCount, deadline: deadline)
    }

    func identity(version: String) async throws(InferenceFailure) -> ModelIdentity {
        try await base.identity(version: version)
    }
    func isReady(version: String) async -> Bool { await base.isReady(version: version) }
}

/// Coalescing against the real Triton (`make dev-up`).
@Suite(.serialized, .timeLimit(.minutes(2))) struct InferenceBatcherTests {
    static let clients = 8
    static let rounds = 25

    /// `clients` closed-loop callers, `rounds` requests each: every request is answered with the model's
    /// score, and the calls the batcher made carry exactly the requests, each in one call.
    @Test func concurrentCallersCoalesceAndEveryRequestIsAnsweredOnce() async throws {
        let endpoint = CallSizeRecorder(
            try TritonEndpoint(label: "primary", url: try GatewayTestEnv.tritonURL(), modelName: "trade_eligibility"))
        let calls = BackgroundTasks()
        let batcher = InferenceBatcher(endpoint: endpoint, version: "1", maxRows: 64, maxInFlight: 1, tasks: calls)
        let vector = try FeatureVector(GatewayTestEnv.sampleFeatures)
        let expected = try await endpoint.infer(
            version: "1", rows: vector.values.map(Float.init), rowCount: 1, deadline: .now + .seconds(5))[0]
        endpoint.sizes.withLock { $0.removeAll() }
        try await withThrowingTaskGroup(of: Void.self) { running in
            // The batches no caller carries inline run here, as in the gateway's `calls` service.
            running.addTask { await calls.run() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<Self.clients {
                    group.addTask {
                        for _ in 0..<Self.rounds {
                            let score = try await batcher.score(vector, deadline: .now + .seconds(5), inline: true)
                            #expect(abs(score - Double(expected)) < 1e-6)
                        }
                    }
                }
                try await group.waitForAll()
            }
            running.cancelAll()
        }
        let sizes = endpoint.sizes.withLock { $0 }
        #expect(sizes.reduce(0, +) == Self.clients * Self.rounds)
        #expect(sizes.allSatisfy { (1...Self.clients).contains($0) })
        // With one call in flight, callers that arrive meanwhile share the next call.
        #expect(sizes.count < Self.clients * Self.rounds, "call sizes \(sizes)")
    }
}
