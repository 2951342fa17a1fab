import Foundation
import Logging
import Prometheus
import ServiceLifecycle

/// What a service's setup gets from `ServiceRunner`.
public struct ServiceResources: Sendable {
    public let service: String
    public let logger: Logger
    public let env: Env
    public let registry: PrometheusCollectorRegistry
    /// Add the service's dependencies here; `/readyz` reports them.
    public let readiness: ReadinessChecks
}

/// The `main` of every long-running service.
public enum ServiceRunner {
    /// Bootstraps JSON logging, metrics and (with `OTEL_EXPORTER_OTLP_ENDPOINT`) traces, calls `makeServices` (configuration errors thrown there
    /// or by the environment print one line and exit 1), then runs the services and, when
    /// `defaultMetricsPort` is not nil, a `HealthServer` on `METRICS_PORT` (default that port) in
    /// one `ServiceGroup`. SIGTERM/SIGINT shut down gracefully, in reverse order, so the health
    /// server goes last; exits 0 after draining, 1 when a service failed.
    public static func run(
        service: String, defaultMetricsPort: Int?, env: Env = Env(),
        _ makeServices: (ServiceResources) async throws -> [any Service]
    ) async -> Never {
        do {
            try ServiceBootstrap.logging(service: service, env: env)
        } catch {
            exitWithConfigurationError(error)
        }
        let registry = ServiceBootstrap.metrics()
        let logger = Logger(label: service)
        let readiness = ReadinessChecks()
        let resources = ServiceResources(
            service: service, logger: logger, env: env, registry: registry, readiness: readiness)
        var services: [any Service] = []
        do {
            // First in the group, so it stops last and flushes the spans of everything that drained before it.
            if let exporter = try Traces.bootstrap(service: service, env: env, logger: logger) {
                services.append(exporter)
            }
            if let defaultMetricsPort {
                let port = try env.int("METRICS_PORT", default: defaultMetricsPort, range: 0...65535)
                services.append(HealthServer(port: port, registry: registry, readiness: readiness, logger: logger))
            }
            services.append(contentsOf: try await makeServices(resources))
        } catch let error as ConfigurationError {
            exitWithConfigurationError(error)
        } catch {
            logger.critical("startup failed", metadata: ["error": "\(error)"])
            exit(1)
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [],
                logger: logger))
        logger.info("service starting", metadata: ["pid": "\(getpid())"])
        do {
            try await group.run()
            logger.info("service stopped")
            exit(0)
        } catch {
            logger.critical("service failed", metadata: ["error": "\(error)"])
            exit(1)
        }
    }

    /// One line on stderr naming the variable, then exit 1 (no crash trace).
    public static func exitWithConfigurationError(_ error: ConfigurationError) -> Never {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        exit(1)
    }
}
