import ArgumentParser
import Foundation
import Logging
import TECore
import TritonClient

/// `te triton`: operator checks against the Triton gRPC endpoint in TRITON_URL.
struct TritonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "triton",
        abstract: "Talk to Triton over gRPC (TRITON_URL): health, model metadata and hashes, one inference.",
        subcommands: [Health.self, Metadata.self, Infer.self])

    struct Options: ParsableArguments {
        @Option(help: "Triton gRPC endpoint host:port. Default: $TRITON_URL.")
        var url: String?

        @Option(help: "Model name. Default: $MODEL_NAME or trade_eligibility.")
        var model: String?

        @Option(help: "Per-call timeout in milliseconds.")
        var timeoutMs: Int = 2000

        func client() throws -> TritonClient {
            guard let url = url ?? Env.optional("TRITON_URL") else {
                throw ValidationError("TRITON_URL is not set (or pass --url host:port)")
            }
            // Connection trouble reaches the operator as the command's error line, not as log lines.
            var logger = Logger(label: "te-triton")
            logger.logLevel = .critical
            return try TritonClient(url: url, logger: logger)
        }
        var modelName: String { model ?? Env.optional("MODEL_NAME") ?? "trade_eligibility" }
        var deadline: ContinuousClock.Instant { .now + .milliseconds(timeoutMs) }
    }

    struct Health: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Server live/ready and model readiness per version.")
        @OptionGroup var options: Options
        @OptionGroup var format: OutputOptions
        @Option(help: "Versions to check.") var versions: [String] = ["1", "2"]

        func run() async throws {
            let client = try options.client()
            defer { client.close() }
            let live = try await client.serverLive(deadline: options.deadline)
            let ready = try await client.serverReady(deadline: options.deadline)
            var healthy = live && ready
            var models: [(version: String, ready: Bool, error: String?)] = []
            for version in versions {
                do {
                    let modelReady = try await client.modelReady(
                        model: options.modelName, version: version, deadline: options.deadline)
                    models.append((version, modelReady, nil))
                    healthy = healthy && modelReady
                } catch let error as TritonError {
                    models.append((version, false, error.message))
                    healthy = false
                }
            }
            if format.json {
                try format.printJSON([
                    "server": ["live": live, "ready": ready], "model": options.modelName, "healthy": healthy,
                    "versions": models.map {
                        ["version": $0.version, "ready": $0.ready, "error": $0.error ?? NSNull()] as [String: Any]
                    }
                ])
            } else {
                print("server live=\(live) ready=\(ready)\n")
                print(
                    Inspect.table(
                        ["MODEL", "VERSION", "READY", "ERROR"],
                        models.map {
                            [options.modelName, $0.version, $0.ready ? "true" : Inspect.warn("false"), $0.error ?? ""]
                        }))
            }
            if !healthy { throw ExitCode(1) }
        }
    }

    struct Metadata: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Model metadata, version policy and each version's artefact hash (sha256 of its weights).")
        @OptionGroup var options: Options
        @OptionGroup var format: OutputOptions

        func run() async throws {
            let client = try options.client()
            defer { client.close() }
            let metadata = try await client.modelMetadata(model: options.modelName, deadline: options.deadline)
            let config = try await client.modelConfig(model: options.modelName, deadline: options.deadline)
            if format.json {
                func tensors(_ list: [TensorMetadata]) -> [[String: Any]] {
                    list.map { ["name": $0.name, "datatype": $0.datatype, "shape": $0.shape] }
                }
                try format.printJSON([
                    "name": metadata.name, "platform": metadata.platform, "backend": config.backend,
                    "versions": metadata.versions.sorted(), "max_batch_size": config.maxBatchSize,
                    "version_policy": "\(config.versionPolicy)", "inputs": tensors(metadata.inputs),
                    "outputs": tensors(metadata.outputs),
                    "artefact_sha256": Dictionary(
                        uniqueKeysWithValues: metadata.versions.map {
                            ($0, config.artefactHash(version: $0).map { $0 as Any } ?? NSNull())
                        })
                ])
                return
            }
            print(
                "model \(metadata.name) platform=\(metadata.platform) backend=\(config.backend) versions=\(metadata.versions.joined(separator: ","))"
            )
            print("max_batch_size \(config.maxBatchSize) version_policy \(config.versionPolicy)")
            for t in metadata.inputs { print("input  \(t.name) \(t.datatype) \(t.shape)") }
            for t in metadata.outputs { print("output \(t.name) \(t.datatype) \(t.shape)") }
            for version in metadata.versions.sorted() {
                print("version \(version) artefact_sha256 \(config.artefactHash(version: version) ?? "(missing)")")
            }
        }
    }

    struct Infer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Score one feature vector.")
        @OptionGroup var options: Options
        @OptionGroup var format: OutputOptions
        @Option(help: "Model version.") var version: String = "1"
        @Option(help: "The 8 features in model order, comma-separated.") var features: String

        func run() async throws {
            let values = features.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
            guard values.count == 8, values.allSatisfy({ $0 != nil && $0!.isFinite }) else {
                throw ValidationError("--features needs 8 finite comma-separated numbers, got '\(features)'")
            }
            let client = try options.client()
            defer { client.close() }
            let start = ContinuousClock.now
            let scores = try await client.infer(
                model: options.modelName, version: version, rows: values.map { $0! }, rowCount: 1,
                deadline: options.deadline)
            let elapsed = ContinuousClock.now - start
            if format.json {
                let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
                try format.printJSON([
                    "model": options.modelName, "version": version, "score": Double(scores[0]), "latency_us": micros
                ])
                return
            }
            print("score \(scores[0]) (model \(options.modelName) version \(version), \(elapsed))")
        }
    }
}
