import ArgumentParser
import Dispatch
import Foundation
import TECore
import TEModels
import TERedis

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `te top`: a live view of every stage — input and output rates, lag, pending, dead letters, p99 — and the
/// gateway's sources, breakers and canary, redrawn in place until `q`.
struct TopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top", abstract: "Live view of the pipeline: rates, lag, pending, DLQ, p99, gateway state.",
        discussion: """
            Reads each service's /metrics (default ports of DESIGN.md on 127.0.0.1, or --targets / $TE_TOP_TARGETS as \
            name=host:port,…) and, with REDIS_URL set, the streams' consumer groups (lag and pending come from \
            Redis, so a stage that is down still shows its backlog growing). q or Ctrl-C quits. Without a \
            terminal, or with --once, it prints one frame (rates over one --interval) and exits.
            """)

    @Option(help: "Seconds between refreshes.") var interval: Double = 1
    @Option(help: "Where each service's /metrics is: name=host:port,… (default $TE_TOP_TARGETS, else DESIGN's ports).")
    var targets: String?
    @Flag(help: "Print one frame and exit.") var once = false
    @Option(help: "Seconds to wait for a service's /metrics before showing it down.") var timeout: Double = 2

    func validate() throws {
        guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 s") }
    }

    func run() async throws {
        let stages = try TopStage.all(overrides: targets ?? Env.optional("TE_TOP_TARGETS"))
        let redis = Env.optional("REDIS_URL").map { _ in try? Inspect.redis() } ?? nil
        defer { redis?.close() }
        let sampler = TopSampler(stages: stages, redis: redis, timeout: timeout)
        let period = Duration.milliseconds(Int64(interval * 1000))
        if once || isatty(STDOUT_FILENO) != 1 || isatty(STDIN_FILENO) != 1 {
            let first = await sampler.sample()
            try await Task.sleep(for: period)
            print(
                TopFrame(stages: stages, previous: first, current: await sampler.sample(), colour: Inspect.colour).text)
            return
        }
        let terminal = RawTerminal()
        defer { terminal.restore() }
        enum Event { case tick, quit }
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        terminal.onKey { key in
            // q, Q, Ctrl-C (raw mode delivers it as a byte), Ctrl-D
            if key == UInt8(ascii: "q") || key == UInt8(ascii: "Q") || key == 3 || key == 4 {
                continuation.yield(.quit)
            }
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    continuation.yield(.tick)
                    try? await Task.sleep(for: period)
                }
            }
            var previous: TopSample?
            for await event in events {
                guard case .tick = event else { break }
                let current = await sampler.sample()
                terminal.draw(TopFrame(stages: stages, previous: previous, current: current, colour: true).text)
                previous = current
            }
            group.cancelAll()
        }
    }
}

/// A service `te top` watches: where its metrics are, which stream and group it reads, which stream it writes.
struct TopStage: Sendable {
    enum Kind: Sendable { case ingest, stream, gateway }
    let name: String
    let kind: Kind
    var target: String
    let input: (stream: String, group: String)?
    let output: String?

    static func all(overrides: String?) throws -> [TopStage] {
        var stages = [
            TopStage(name: "ingest", kind: .ingest, target: "127.0.0.1:9101", input: nil, output: StreamKey.ticks),
            TopStage(
                name: "feature-pipeline", kind: .stream, target: "127.0.0.1:9102",
                input: (StreamKey.ticks, "feature-pipeline"),
                output: StreamKey.features),
            TopStage(
                name: "strategy-engine", kind: .stream, target: "127.0.0.1:9103",
                input: (StreamKey.features, "strategy-engine"),
                output: StreamKey.signals),
            TopStage(
                name: "opportunity-aggregator", kind: .stream, target: "127.0.0.1:9104",
                input: (StreamKey.signals, "opportunity-aggregator"), output: StreamKey.opportunities),
            TopStage(
                name: "outcome-tracker", kind: .stream, target: "127.0.0.1:9105",
                input: (StreamKey.audit, "outcome-tracker"),
                output: "te:outcomes"),
            TopStage(
                name: "audit-writer", kind: .stream, target: "127.0.0.1:9106", input: (StreamKey.audit, "audit-writer"),
                output: nil),
            TopStage(name: "gateway", kind: .gateway, target: "127.0.0.1:8080", input: nil, output: StreamKey.audit)
        ]
        for item in (overrides ?? "").split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, let i = stages.firstIndex(where: { $0.name == parts[0] }), parts[1].contains(":")
            else {
                throw ValidationError(
                    "--targets: '\(item)' is not name=host:port with name one of \(stages.map(\.name).joined(separator: ", "))"
                )
            }
            stages[i].target = parts[1]
        }
        return stages
    }
}

/// Everything one refresh read.
struct TopSample: Sendable {
    struct Group: Sendable {
        let lag: Int?
        let pending: Int
    }
    let at: ContinuousClock.Instant
    let metrics: [String: MetricsText]  // by stage; absent when its /metrics did not answer
    let groups: [String: Group]  // by stage
    let streamsAdded: [String: Int]  // entries-added by stream
    let streamLengths: [String: Int]
}

struct TopSampler: Sendable {
    let stages: [TopStage]
    let redis: RedisClient?
    let timeout: Double

    func sample() async -> TopSample {
        let at = ContinuousClock.now
        let metrics = await withTaskGroup(of: (String, MetricsText?).self) { group in
            for stage in stages { group.addTask { (stage.name, await Self.scrape(stage.target, timeout: timeout)) } }
            var out: [String: MetricsText] = [:]
            for await (name, text) in group { if let text { out[name] = text } }
            return out
        }
        var groups: [String: TopSample.Group] = [:]
        var added: [String: Int] = [:]
        var lengths: [String: Int] = [:]
        if let redis {
            for stage in stages {
                guard let input = stage.input, let infos = try? await redis.xinfoGroups(input.stream),
                    let info = infos.first(where: { $0.name == input.group })
                else { continue }
                groups[stage.name] = .init(lag: info.lag, pending: info.pending)
            }
            let streams = Set(stages.compactMap(\.output) + [StreamKey.dlq]).sorted()
            for stream in streams {
                guard let reply = try? await redis.send(RedisCommand(["XINFO", "STREAM", stream])),
                    let items = reply.array
                else {
                    continue
                }
                var i = 0
                while i + 1 < items.count {
                    switch items[i].string {
                    case "entries-added": added[stream] = items[i + 1].int.map(Int.init)
                    case "length": lengths[stream] = items[i + 1].int.map(Int.init)
                    default: break
                    }
                    i += 2
                }
            }
        }
        return TopSample(at: at, metrics: metrics, groups: groups, streamsAdded: added, streamLengths: lengths)
    }

    static func scrape(_ target: String, timeout: Double) async -> MetricsText? {
        guard let url = URL(string: "http://\(target)/metrics") else { return nil }
        var request = URLRequest(url: url)
        request.timeoutInterval = timeout
        guard let (data, response) = try? await URLSession.shared.data(for: request),
            (response as? HTTPURLResponse)?.statusCode == 200
        else { return nil }
        return MetricsText(String(decoding: data, as: UTF8.self))
    }
}

/// One screen of `te top`, computed from two samples (rates are their difference over the time between).
struct TopFrame {
    let text: String

    init(stages: [TopStage], previous: TopSample?, current: TopSample, colour: Bool) {
        func paint(_ s: String, _ code: String) -> String { colour ? "\u{1B}[\(code)m\(s)\u{1B}[0m" : s }
        let elapsed = previous.map { $0.at.duration(to: current.at) } ?? .zero
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        func rate(_ stage: String, _ name: String, matching: [String: String] = [:]) -> Double? {
            guard seconds > 0, let now = current.metrics[stage]?.sum(name, matching: matching) else { return nil }
            guard let before = previous?.metrics[stage]?.sum(name, matching: matching) else { return nil }
            return (now >= before ? now - before : now) / seconds
        }
        func streamRate(_ stream: String?) -> Double? {
            guard seconds > 0, let stream, let now = current.streamsAdded[stream],
                let before = previous?.streamsAdded[stream]
            else {
                return nil
            }
            return Double(max(0, now - before)) / seconds
        }
        let clock = Inspect.time(ms: Int64(Date().timeIntervalSince1970 * 1000), utc: false)
        var lines = [paint("te top", "1") + "  \(clock)  " + paint("q quits", "2")]
        var rows: [[String]] = []
        var gatewayLines: [String] = []
        for stage in stages {
            let metrics = current.metrics[stage.name]
            let state = metrics == nil ? paint("down", "31") : paint("up", "32")
            switch stage.kind {
            case .ingest:
                let lag = metrics?.sum("te_ingest_kafka_lag_messages").map { Self.count($0) } ?? "-"
                rows.append([
                    stage.name, state, Self.rate(rate(stage.name, "te_ingest_messages_consumed_total")),
                    Self.rate(rate(stage.name, "te_ingest_ticks_total")), lag, "-",
                    Self.rate(rate(stage.name, "te_ingest_dlq_total")),
                    Self.latency(
                        metrics?.quantile(0.99, of: "te_ingest_latency_seconds", since: previous?.metrics[stage.name]))
                ])
            case .stream:
                let group = current.groups[stage.name]
                let out =
                    stage.output == nil ? rate(stage.name, "te_audit_rows_inserted_total") : streamRate(stage.output)
                rows.append([
                    stage.name, state, Self.rate(rate(stage.name, "te_stream_entries_processed_total")), Self.rate(out),
                    group.map { $0.lag.map { Self.count(Double($0)) } ?? "?" } ?? "-",
                    group.map { Self.count(Double($0.pending)) } ?? "-",
                    Self.rate(rate(stage.name, "te_stream_dlq_total")),
                    Self.latency(
                        metrics?.quantile(
                            0.99, of: "te_stream_batch_duration_seconds", since: previous?.metrics[stage.name]))
                ])
            case .gateway:
                let requests = rate(stage.name, "te_gateway_requests_total")
                rows.append([
                    stage.name, state, Self.rate(requests), Self.rate(streamRate(stage.output)), "-",
                    metrics?.sum("te_gateway_audit_buffer_depth").map { Self.count($0) } ?? "-",
                    "-",
                    Self.latency(
                        metrics?.quantile(
                            0.99, of: "te_gateway_request_duration_seconds", since: previous?.metrics[stage.name]))
                ])
                guard let metrics else { continue }
                let sources = ["model", "cache", "rules", "abstain"].map { source -> String in
                    let r = rate(stage.name, "te_gateway_requests_total", matching: ["source": source]) ?? 0
                    let share = (requests ?? 0) > 0 ? 100 * r / requests! : 0
                    return "\(source) \(String(format: "%.0f", share))%"
                }
                let breakers = metrics.values("te_gateway_breaker_state", by: "endpoint").sorted { $0.key < $1.key }.map
                { endpoint, value in
                    let state = value >= 2 ? paint("open", "31") : value >= 1 ? paint("half-open", "33") : "closed"
                    return "\(endpoint) \(state)"
                }
                let rollbacks = metrics.sum("canary_rollbacks_total") ?? 0
                let disagree = rate(stage.name, "canary_disagree_total")
                gatewayLines = [
                    "gateway  sources " + sources.joined(separator: " · ") + "   breakers "
                        + (breakers.isEmpty ? "-" : breakers.joined(separator: " · ")),
                    "         canary rollbacks \(Self.count(rollbacks))"
                        + (rollbacks > 0 ? paint(" (rolled back)", "33") : "")
                        + "   disagree \(Self.rate(disagree))/s   audit dropped \(Self.count(metrics.sum("te_gateway_audit_dropped_total") ?? 0))"
                ]
            }
        }
        lines.append(Inspect.table(["STAGE", "STATE", "IN/s", "OUT/s", "LAG", "PENDING", "DLQ/s", "P99"], rows))
        lines.append("")
        lines += gatewayLines
        let streams = (stages.compactMap(\.output) + [StreamKey.dlq]).reduce(into: [String]()) {
            if !$0.contains($1) { $0.append($1) }
        }
        let streamText = streams.compactMap { stream -> String? in
            guard let length = current.streamLengths[stream] else { return nil }
            let growth = streamRate(stream).map { " +\(Self.rate($0))/s" } ?? ""
            let text = "\(stream) \(Self.count(Double(length)))\(growth)"
            return stream == StreamKey.dlq && (streamRate(stream) ?? 0) > 0 ? paint(text, "33") : text
        }
        lines.append(
            "streams  "
                + (streamText.isEmpty
                    ? paint("(REDIS_URL not set or unreachable)", "2") : streamText.joined(separator: "  ")))
        text = lines.joined(separator: "\n")
    }

    static func rate(_ value: Double?) -> String {
        guard let value else { return "-" }
        return count(value)
    }

    static func count(_ value: Double) -> String {
        switch value {
        case ..<10 where value != value.rounded(): return String(format: "%.1f", value)
        case ..<1000: return String(format: "%.0f", value)
        case ..<1_000_000: return String(format: "%.1fk", value / 1000)
        default: return String(format: "%.2fM", value / 1_000_000)
        }
    }

    static func latency(_ seconds: Double?) -> String {
        guard let seconds else { return "-" }
        switch seconds {
        case ..<0.001: return String(format: "%.0fµs", seconds * 1e6)
        case ..<0.01: return String(format: "%.2fms", seconds * 1000)
        case ..<1: return String(format: "%.1fms", seconds * 1000)
        default: return String(format: "%.2fs", seconds)
        }
    }
}

/// The terminal in raw mode on the alternate screen for as long as `te top` runs; `restore()` puts it back.
final class RawTerminal: @unchecked Sendable {
    // @unchecked Sendable: `original` is written once in init and read in restore(); `source` is set once in
    // onKey before the source is resumed and only cancelled in restore(); both run on the command's task, and
    // the read handler touches only the file descriptor and its own closure.
    private var original = termios()
    private var source: (any DispatchSourceRead)?

    init() {
        tcgetattr(STDIN_FILENO, &original)
        var raw = original
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG)
        tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        write("\u{1B}[?1049h\u{1B}[?25l")
    }

    func onKey(_ handler: @escaping @Sendable (UInt8) -> Void) {
        let source = DispatchSource.makeReadSource(
            fileDescriptor: STDIN_FILENO, queue: DispatchQueue(label: "te-top-keys"))
        source.setEventHandler {
            var byte: UInt8 = 0
            if read(STDIN_FILENO, &byte, 1) == 1 { handler(byte) }
        }
        self.source = source
        source.resume()
    }

    func draw(_ frame: String) {
        // Home, then each line cleared to its end, then the rest of the screen: no flicker from a full clear.
        write(
            "\u{1B}[H"
                + frame.split(separator: "\n", omittingEmptySubsequences: false).map { $0 + "\u{1B}[K" }.joined(
                    separator: "\r\n") + "\u{1B}[J")
    }

    func restore() {
        source?.cancel()
        write("\u{1B}[?25h\u{1B}[?1049l")
        tcsetattr(STDIN_FILENO, TCSANOW, &original)
    }

    private func write(_ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes {
                Foundation.write(STDOUT_FILENO, $0.baseAddress! + offset, $0.count - offset)
            }
            if n <= 0 { break }
            offset += n
        }
    }
}
