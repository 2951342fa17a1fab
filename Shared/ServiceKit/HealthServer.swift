import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Synchronization

/// Named readiness checks (a dependency reachable, a model loaded). `/readyz` is 200 when every
/// check passes within its timeout, else 503 naming the failing ones.
public final class ReadinessChecks: Sendable {
    public typealias Check = @Sendable () async throws -> Void
    private let checks = Mutex<[(name: String, check: Check)]>([])
    /// Per check. Default: 2 s.
    public let timeout: Duration

    public init(timeout: Duration = .seconds(2)) {
        self.timeout = timeout
    }

    /// Adds (or replaces) the check called `name`; it passes when it returns without throwing.
    public func add(_ name: String, _ check: @escaping Check) {
        checks.withLock { list in
            list.removeAll { $0.name == name }
            list.append((name, check))
        }
    }

    public var names: [String] { checks.withLock { $0.map(\.name) } }

    /// The failing checks and why; empty when ready.
    public func failures() async -> [(name: String, reason: String)] {
        let list = checks.withLock { $0 }
        let timeout = self.timeout
        return await withTaskGroup(of: (Int, String?).self) { group in
            for (i, entry) in list.enumerated() {
                group.addTask {
                    await withTaskGroup(of: String?.self) { race in
                        race.addTask {
                            do {
                                try await entry.check()
                                return nil
                            } catch {
                                return "\(error)"
                            }
                        }
                        race.addTask {
                            try? await Task.sleep(for: timeout)
                            return "no answer within \(timeout)"
                        }
                        let first = await race.next()!
                        race.cancelAll()
                        return (i, first)
                    }
                }
            }
            var out: [(Int, String, String)] = []
            for await (i, reason) in group {
                if let reason { out.append((i, list[i].name, reason)) }
            }
            return out.sorted { $0.0 < $1.0 }.map { ($0.1, $0.2) }
        }
    }
}

/// `/metrics`, `/healthz` and `/readyz` on any Hummingbird router (the gateway mounts them on its
/// API router; other services get them from `HealthServer`).
public enum HealthRoutes {
    public static func add<Context: RequestContext>(
        to router: Router<Context>, registry: PrometheusCollectorRegistry, readiness: ReadinessChecks
    ) {
        router.get("/metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16 * 1024)
            registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        router.get("/healthz") { _, _ -> Response in
            json(.ok, "{\"status\":\"alive\"}")
        }
        router.get("/readyz") { _, _ -> Response in
            let failures = await readiness.failures()
            if failures.isEmpty {
                let names = readiness.names.map { "\(JSONText.quoted($0)):\"ok\"" }.joined(separator: ",")
                return json(.ok, "{\"status\":\"ready\",\"checks\":{\(names)}}")
            }
            var down = "{"
            for (i, f) in failures.enumerated() {
                if i > 0 { down += "," }
                down += "\(JSONText.quoted(f.name)):\(JSONText.quoted(f.reason))"
            }
            down += "}"
            return json(.serviceUnavailable, "{\"status\":\"not_ready\",\"down\":\(down)}")
        }
    }

    private static func json(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}

/// The HTTP server of `/metrics`, `/healthz`, `/readyz` on `METRICS_PORT`, as a `Service`.
public struct HealthServer: Service {
    public let host: String
    public let port: Int
    public let registry: PrometheusCollectorRegistry
    public let readiness: ReadinessChecks
    public let logger: Logger
    private let onListening: @Sendable (Int) async -> Void

    /// `port` 0 picks a free port, reported to `onListening`.
    public init(
        host: String = "0.0.0.0", port: Int, registry: PrometheusCollectorRegistry = ServiceBootstrap.registry,
        readiness: ReadinessChecks, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.registry = registry
        self.readiness = readiness
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let router = Router()
        HealthRoutes.add(to: router, registry: registry, readiness: readiness)
        let logger = self.logger
        let onListening = self.onListening
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("health server listening", metadata: ["port": "\(port)"])
                await onListening(port)
            },
            logger: logger)
        try await app.run()
    }
}
