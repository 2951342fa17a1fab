import TEModels
import TritonClient

/// `InferenceEndpoint` over the project's `TritonClient` (nghttp2 gRPC).
public final class TritonEndpoint: InferenceEndpoint {
    public let label: String
    public let url: String
    public let modelName: String
    let client: TritonClient

    /// `connections`: HTTP/2 connections multiplexed by the client (streams spread over them). Default:
    /// one per event loop, so a request served on a loop calls Triton from that loop without a thread hop.
    /// `keepalive`: PING interval (nil: off) and timeout of each connection (`TritonClientConfiguration`).
    public init(
        label: String, url: String, modelName: String, connections: Int? = nil,
        keepalive: (interval: Duration?, timeout: Duration)? = nil
    ) throws {
        self.label = label
        self.url = url
        self.modelName = modelName
        var configuration = try TritonClientConfiguration(url: url)
        configuration.connections = connections
        if let keepalive {
            configuration.keepaliveInterval = keepalive.interval
            configuration.keepaliveTimeout = keepalive.timeout
        }
        client = TritonClient(configuration: configuration)
    }

    deinit { client.close() }

    public func infer(version: String, rows: [Float], rowCount: Int, deadline: ContinuousClock.Instant)
        async throws(InferenceFailure) -> [Float]
    {
        do {
            return try await client.infer(
                model: modelName, version: version, rows: rows, rowCount: rowCount, featureCount: FeatureVector.count,
                deadline: deadline)
        } catch {
            throw Self.failure(error)
        }
    }

    public func identity(version: String) async throws(InferenceFailure) -> ModelIdentity {
        do {
            let hash = try await client.artefactHash(model: modelName, version: version, deadline: .now + .seconds(1))
            return ModelIdentity(name: modelName, version: version, hash: hash)
        } catch {
            throw Self.failure(error)
        }
    }

    public func isReady(version: String) async -> Bool {
        (try? await client.modelReady(model: modelName, version: version, deadline: .now + .seconds(1))) ?? false
    }

    static func failure(_ error: any Error) -> InferenceFailure {
        guard let error = error as? TritonError else {
            if error is CancellationError { return InferenceFailure(.cancelled, "cancelled") }
            return InferenceFailure(.unavailable, "\(error)")
        }
        switch error.code {
        case .deadlineExceeded: return InferenceFailure(.timeout, error.message)
        case .cancelled: return InferenceFailure(.cancelled, error.message)
        case .unavailable, .connection, .resourceExhausted, .aborted, .protocolViolation:
            return InferenceFailure(.unavailable, error.message)
        default: return InferenceFailure(.modelError, "\(error.code): \(error.message)")
        }
    }
}
