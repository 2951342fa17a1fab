import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Synchronization

/// Named readiness checks (a dependency reachable, a model loaded). `/readyz` is 200 when every
/// check passes, else 503 naming the failing ones, and it answers within `answerWithin` whatever the
/// dependencies do: each call starts a probe per check (one at a time per check: a call finding a probe
/// still running joins it) and waits for them at most `answerWithin`; a probe still running then is a
/// failure ("no answer within …", with how long it has been running). A probe running longer than
/// `timeout` is abandoned (its late result ignored) so the next call probes afresh, so a check that ignores
/// cancellation (a blocking driver call) cannot hold `/readyz`.
///
/// The probes run as child tasks of `run()`: the checks are a `Service` of whoever serves `/readyz`
/// (`HealthServer` runs them beside its HTTP server; the gateway lists them among its services). A probe
/// not running (before `run()`, after shutdown) is a failure like a hung one.
public final class ReadinessChecks: Service, Sendable {
    public typealias Check = @Sendable () async throws -> Void

    struct Probe {
        var name: String
        var check: Check
        /// Incremented per started probe; a result is recorded only by the probe of the current one.
        var generation = 0
        var running: (since: ContinuousClock.Instant, done: Gate)?
        var last: (reason: String?, at: ContinuousClock.Instant)?
    }

    private let probes = Mutex<[Probe]>([])
    private let tasks = BackgroundTasks()
    /// How long a probe may run before it is abandoned. Default: 2 s.
    public let timeout: Duration
    /// How long `/readyz` waits for its probes. Default: 80 ms (answers within 100 ms).
    public let answerWithin: Duration

    public init(timeout: Duration = .seconds(2), answerWithin: Duration = .milliseconds(80)) {
        self.timeout = timeout
        self.answerWithin = answerWithin
    }

    /// Adds (or replaces) the check called `name`; it passes when it returns without throwing.
    public func add(_ name: String, _ check: @escaping Check) {
        probes.withLock { list in
            list.removeAll { $0.name == name }
            list.append(Probe(name: name, check: check))
        }
    }

    public var names: [String] { probes.withLock { $0.map(\.name) } }

    /// Runs the probes until graceful shutdown (then waits for those running).
    public func run() async { await tasks.run() }

    /// The failing checks and why; empty when ready. Returns within `min(answerWithin, timeout)`.
    public func failures() async -> [(name: String, reason: String)] {
        let now = ContinuousClock.now
        let gates = probes.withLock { list in
            list.indices.map { i in start(&list, i, now: now) }
        }
        let all = Gate(count: gates.count)
        for gate in gates { gate.whenOpen { all.arrive() } }
        let wait = min(answerWithin, timeout)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: wait)
                all.open()
            }
            await all.wait()
            group.cancelAll()
        }
        let after = ContinuousClock.now
        return probes.withLock { list in
            list.compactMap { probe -> (String, String)? in
                if let running = probe.running {
                    return (probe.name, "no answer within \(Self.milliseconds(after - running.since)) ms")
                }
                guard let reason = probe.last?.reason else { return nil }
                return (probe.name, reason)
            }
        }
    }

    /// Starts a probe of `list[i]` unless one is running (and not yet abandoned); returns its gate.
    private func start(_ list: inout [Probe], _ i: Int, now: ContinuousClock.Instant) -> Gate {
        if let running = list[i].running, now - running.since < timeout { return running.done }
        list[i].generation += 1
        let generation = list[i].generation
        let check = list[i].check
        let gate = Gate(count: 1)
        list[i].running = (now, gate)
        let name = list[i].name
        let started = tasks.submit { [self] in
            var reason: String?
            do {
                try await check()
            } catch {
                reason = "\(error)"
            }
            probes.withLock { list in
                guard let j = list.firstIndex(where: { $0.name == name }), list[j].generation == generation else {
                    return
                }
                list[j].running = nil
                list[j].last = (reason, .now)
            }
            gate.arrive()
        }
        // Not started (shutting down): it stays "running" until `timeout`, reported as no answer.
        _ = started
        return gate
    }

    static func milliseconds(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }
}

/// Opens after `count` arrivals or one `open()`, whichever comes first; `wait` returns once open.
final class Gate: Sendable {
    private struct State {
        var remaining: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
        var callbacks: [@Sendable () -> Void] = []
    }

    private let state: Mutex<State>

    init(count: Int) { state = Mutex(State(remaining: count)) }

    func arrive() { release { $0.remaining -= 1 } }

    func open() { release { $0.remaining = 0 } }

    private func release(_ change: (inout State) -> Void) {
        let (waiters, callbacks) = state.withLock {
            s -> ([CheckedContinuation<Void, Never>], [@Sendable () -> Void]) in
            change(&s)
            guard s.remaining <= 0 else { return ([], []) }
            defer {
                s.waiters = []
                s.callbacks = []
            }
            return (s.waiters, s.callbacks)
        }
        for w in waiters { w.resume() }
        for c in callbacks { c() }
    }

    /// Calls `callback` once open (at once if it is).
    func whenOpen(_ callback: @escaping @Sendable () -> Void) {
        let openNow = state.withLock { s in
            if s.remaining <= 0 { return true }
            s.callbacks.append(callback)
            return false
        }
        if openNow { callback() }
    }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let openNow = state.withLock { s in
                if s.remaining <= 0 { return true }
                s.waiters.append(c)
                return false
            }
            if openNow { c.resume() }
        }
    }
}

/// `/metrics`, `/healthz` and `/readyz` on any Hummingbird router (the gateway mounts them on its
/// API router; other services get them from `HealthServer`).
public enum HealthRoutes {
    public static func add<Context: RequestContext>(
        to router: Router<Context>, registry: PrometheusCollectorRegistry, readiness: ReadinessChecks
    ) {
        let process = ProcessMetrics(registry: registry)
        router.get("/metrics") { _, _ -> Response in
            process.update()
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
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await readiness.run() }
            // At graceful shutdown both return; when the server fails the group cancels the probes.
            try await serve()
        }
    }

    private func serve() async throws {
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
