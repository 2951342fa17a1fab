import Foundation
import Hummingbird
import Logging
import Synchronization

/// An OTLP/HTTP trace receiver in the test process: what a service's OTLP exporter sends to
/// `endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`, with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) to
/// `POST /v1/traces`, decoded to the span fields the tests check.
public final class OTLPReceiver: Sendable {
    public struct Span: Sendable, CustomStringConvertible {
        public let service: String
        public let name: String
        /// Lower-case hex, as in `traceparent`.
        public let traceID: String
        public let spanID: String
        /// nil for a root span.
        public let parentSpanID: String?
        public let attributes: [String: String]

        public var description: String {
            "\(service) \(name) trace=\(traceID) span=\(spanID) parent=\(parentSpanID ?? "-") \(attributes)"
        }
    }

    public let port: Int
    private final class Received: Sendable {
        let spans = Mutex<[Span]>([])
    }
    private let received = Received()
    private let server = Mutex<Task<Void, any Error>?>(nil)

    public init() async throws {
        port = try TestEnv.freePort()
        let router = Router()
        router.post("/v1/traces") { [received] request, _ -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            let spans = Self.decode(Data(buffer: body))
            received.spans.withLock { $0.append(contentsOf: spans) }
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
        var logger = Logger(label: "otlp-receiver")
        logger.logLevel = .warning
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        server.withLock { $0 = Task { try await app.runService(gracefulShutdownSignals: []) } }
        let port = port
        let up = await TestEnv.eventually(timeout: .seconds(10)) { TestEnv.accepts(port: port) }
        guard up else { throw ChildProcessError(description: "the OTLP receiver did not listen on \(port)") }
    }

    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    public var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Every span received so far.
    public var spans: [Span] { received.spans.withLock { $0 } }

    public func stop() {
        server.withLock { $0?.cancel() }
    }

    /// OTLP JSON (`ExportTraceServiceRequest`) as swift-otel writes it: ids are the protobuf JSON
    /// mapping of bytes (base64), attribute values `{"stringValue"|"intValue"|"doubleValue"|"boolValue": …}`.
    static func decode(_ data: Data) -> [Span] {
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [] }
        var out: [Span] = []
        for resourceSpans in root["resourceSpans"] as? [[String: Any]] ?? [] {
            let resource = attributes((resourceSpans["resource"] as? [String: Any])?["attributes"])
            for scope in resourceSpans["scopeSpans"] as? [[String: Any]] ?? [] {
                for span in scope["spans"] as? [[String: Any]] ?? [] {
                    out.append(
                        Span(
                            service: resource["service.name"] ?? "", name: span["name"] as? String ?? "",
                            traceID: hex(span["traceId"]) ?? "", spanID: hex(span["spanId"]) ?? "",
                            parentSpanID: hex(span["parentSpanId"]), attributes: attributes(span["attributes"])))
                }
            }
        }
        return out
    }

    private static func hex(_ value: Any?) -> String? {
        guard let text = value as? String, !text.isEmpty else { return nil }
        let bytes = Data(base64Encoded: text) ?? Data()
        let hex = bytes.map { String(format: "%02x", $0) }.joined()
        return hex.isEmpty ? nil : hex
    }

    private static func attributes(_ value: Any?) -> [String: String] {
        var out: [String: String] = [:]
        for attribute in value as? [[String: Any]] ?? [] {
            guard let key = attribute["key"] as? String, let v = attribute["value"] as? [String: Any],
                let first = v.first
            else { continue }
            out[key] = "\(first.value)"
        }
        return out
    }
}
