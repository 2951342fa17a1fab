import Foundation
import GatewayEngine
import GatewayHTTP
import ServiceKit

let onEventLoops = GatewayRuntime.installEventLoopExecutor(environment: ProcessInfo.processInfo.environment)

// Configuration errors print one line naming the variable and exit 1 (ServiceRunner). The gateway
// serves /metrics, /healthz and /readyz on its API port, so no separate health server.
await ServiceRunner.run(service: "gateway", defaultMetricsPort: nil) { resources in
    let config = try GatewayConfiguration(environment: resources.env.values)
    let dependencies = try buildDependencies(config, registry: resources.registry, logger: resources.logger)
    resources.logger.info(
        "gateway configured",
        metadata: [
            "http_port": "\(config.httpPort)", "triton": "\(config.tritonURL)",
            "triton_secondary": "\(config.tritonSecondaryURL ?? "-")", "model_version": "\(config.modelVersion)",
            "canary": "\(config.canaryEnabled ? "\(config.canaryVersion)@\(config.canaryFraction)" : "off")",
            "shadow": "\(config.shadowEnabled)", "score_timeout_ms": "\(config.scoreTimeoutMs)",
            "api_clients": "\(dependencies.keys.table.clients.joined(separator: ","))",
            "api_keys_file": "\(config.apiKeysFile ?? "-")",
            "rate_limit": "\(config.rateLimit.map { "\($0)/s" } ?? "off")",
            "event_loop_executor": "\(onEventLoops)"
        ])
    return [buildApplication(dependencies)]
}
