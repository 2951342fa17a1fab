import TEModels

/// What the gateway needs from one Triton endpoint. `TritonEndpoint` implements it with `TritonClient`;
/// the protocol keeps the decision logic independent of the transport.
public protocol InferenceEndpoint: Sendable {
    /// `primary` or `secondary`: the `endpoint` label of metrics.
    var label: String { get }
    /// Scores `rowCount` rows of `FeatureVector.count` FP32 values; one score per row.
    func infer(version: String, rows: [Float], rowCount: Int, deadline: ContinuousClock.Instant)
        async throws(InferenceFailure)
        -> [Float]
    /// Name, version and artefact hash as Triton reports them.
    func identity(version: String) async throws(InferenceFailure) -> ModelIdentity
    /// Server live and the model version ready.
    func isReady(version: String) async -> Bool
}

/// Why an inference call failed. `countsAgainstEndpoint` separates a sick endpoint (the breaker's
/// business) from a sick model version (the canary monitor's business).
public struct InferenceFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case timeout
        case unavailable
        case modelError = "model_error"
        case cancelled
    }

    public var kind: Kind
    public var message: String
    /// This request rode in a batch whose call failed, and another rider of the same call carries the
    /// failure to the breaker. One slow call must count once: counted per rider, a single batch of 32
    /// that missed its deadline opened the breaker at once (5 failures) and the gateway answered from
    /// cache for most of a benchmark run under load.
    public var sharedWithBatch = false

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var countsAgainstEndpoint: Bool { !sharedWithBatch && (kind == .timeout || kind == .unavailable) }
    public var description: String { "\(kind.rawValue): \(message)" }
}
