import GatewayCore
import Synchronization
import TEModels
import TestSupport
import Testing

/// The real Triton endpoint, recording the size of every call the batcher makes through it.
final class CallSizeRecorder: InferenceEndpoint {
    let base: TritonEndpoint
    let sizes = Mutex<[Int]>([])
    var label: String { base.label }

    init(_ base: TritonEndpoint) { self.base = base }

    func infer(version: String, rows: [Float], rowCount: Int, deadline: ContinuousClock.Instant) async throws(InferenceFailure)
        -> [Float]
    {
        sizes.withLock { $0.append(rowCount) }
        return try await base.infer(version: version, rows: rows, rowCount: rowCount, deadline: deadline)
    }

    func identity(version: String) async throws(InferenceFailure) -> ModelIdentity { try await base.identity(version: version) }
    func isReady(version: String) async -> Bool { await base.isReady(version: version) }
}

/// Coalescing against the real Triton (`make dev-up`).
@Suite(.serialized, .timeLimit(.minutes(2))) struct InferenceBatcherTests {
    static let clients = 8
    static let rounds = 25

    /// `clients` closed-loop callers, `rounds` requests each; returns the size of every call made.
    func run(linger: Duration) async throws -> [Int] {
        let endpoint = CallSizeRecorder(try TritonEndpoint(label: "primary", url: try GatewayTestEnv.tritonURL(), modelName: "trade_eligibility"))
        let batcher = InferenceBatcher(endpoint: endpoint, version: "1", maxRows: 64, maxInFlight: 1, linger: linger)
        let vector = try FeatureVector(GatewayTestEnv.sampleFeatures)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<Self.clients {
                group.addTask {
                    for _ in 0..<Self.rounds {
                        let score = try await batcher.score(vector, deadline: .now + .seconds(5), inline: true)
                        #expect(score > 0 && score < 1)
                    }
                }
            }
            try await group.waitForAll()
        }
        return endpoint.sizes.withLock { $0 }
    }

    @Test func everyRequestIsAnsweredOnceWithAndWithoutLinger() async throws {
        for linger in [Duration.zero, .microseconds(200)] {
            let sizes = try await run(linger: linger)
            #expect(sizes.reduce(0, +) == Self.clients * Self.rounds, "linger \(linger)")
            #expect(sizes.allSatisfy { (1...Self.clients).contains($0) })
        }
    }

    /// With a linger far longer than a Triton call, every caller's next request arrives before the
    /// batch leaves: after the first cycles, each call carries all `clients` rows (without linger the
    /// callers split into groups that take turns).
    @Test func lingerGathersEveryCallerIntoOneCall() async throws {
        let sizes = try await run(linger: .seconds(1))
        let steady = sizes.dropFirst(3)
        #expect(!steady.isEmpty)
        #expect(steady.dropLast().allSatisfy { $0 == Self.clients }, "call sizes \(sizes)")
    }
}
