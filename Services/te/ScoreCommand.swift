import ArgumentParser
import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
    import TECore
#endif

/// `te score SYMBOL [--features a,b,…] [--freshness-ms N]`: one `POST /v1/score` against a gateway,
/// printing the response body (exit 1 on a non-200 answer).
struct ScoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score", abstract: "Send one score request to the gateway and print the response.")

    @Argument(help: "Symbol, e.g. BTCUSDT.")
    var symbol: String

    @Option(help: "8 comma-separated feature values in model order; without them the gateway uses its own.")
    var features: String?

    @Option(name: .customLong("freshness-ms"), help: "Maximum age of the gateway's own features.")
    var freshnessMs: Int?

    @Option(help: "Gateway base URL (default $GATEWAY_URL, else http://127.0.0.1:8080).")
    var url: String?

    @Option(name: .customLong("api-key"), help: "Bearer key (default: the first of $GATEWAY_API_KEYS).")
    var apiKey: String?

    @Option(name: .customLong("request-id"), help: "X-Request-Id to send.")
    var requestID: String?

    func run() async throws {
        var body: [String: Any] = ["symbol": symbol]
        if let features {
            let values = features.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard values.allSatisfy({ $0 != nil }) else {
                throw ValidationError("--features must be comma-separated numbers")
            }
            body["features"] = values.map { $0! }
        }
        if let freshnessMs { body["freshness_ms"] = freshnessMs }
        let env = Env().values
        let base = url ?? env["GATEWAY_URL"] ?? "http://127.0.0.1:8080"
        guard let endpoint = URL(string: base + "/v1/score") else { throw ValidationError("invalid --url \(base)") }
        var request = URLRequest(url: endpoint)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        // `client:key` or a bare key: the key is what follows the first colon.
        let key =
            apiKey
            ?? env["GATEWAY_API_KEYS"]?.split(separator: ",").first.map {
                String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces)
            }
        if let key, !key.isEmpty { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        if let requestID { request.setValue(requestID, forHTTPHeaderField: "X-Request-Id") }
        request.httpBody = try JSONSerialization.data(withJSONObject: body)
        let (data, response) = try await URLSession.shared.data(for: request)
        print(String(decoding: data, as: UTF8.self))
        if let http = response as? HTTPURLResponse, http.statusCode != 200 {
            FileHandle.standardError.write(Data("te score: HTTP \(http.statusCode)\n".utf8))
            throw ExitCode(1)
        }
    }
}
