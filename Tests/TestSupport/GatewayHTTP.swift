import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A built gateway's score API over a real socket, for the tests that run the `gateway` binary.
public enum GatewayHTTP {
    /// POST /v1/score with a fixed feature vector; the status and the decoded JSON body.
    public static func score(port: Int, requestID: String) async throws -> (status: Int, body: [String: Any]) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/score")!)
        request.httpMethod = "POST"
        request.timeoutInterval = 5
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue(requestID, forHTTPHeaderField: "X-Request-Id")
        request.httpBody = Data(#"{"symbol":"BTCUSDT","features":[0.5,0.3,0.2,1,2,0.1,10,0.05]}"#.utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        return (status, (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:])
    }
}
