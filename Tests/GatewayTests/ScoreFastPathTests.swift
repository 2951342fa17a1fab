import Foundation
import GatewayHTTP
import HummingbirdTesting
import TEModels
import TestSupport
import Testing

@testable import GatewayEngine

/// The event-loop fast path of `POST /v1/score` on the wire: request order on a pipelined connection
/// shared with Hummingbird's routes, bodies arriving in pieces or chunked, oversized bodies, and
/// `Connection: close`. Real Redis and Triton; answers come from the model or the rules.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ScoreFastPathTests {
    let valid = #"{"symbol":"BTCUSDT","features":[0.5,0.3,0.2,1,2,0.1,10,0.05]}"#

    func scored(_ r: RawResponse, requestID: String) throws -> ScoreResponse {
        #expect(r.status == 200, "\(r.body)")
        #expect(r.headers["content-type"] == "application/json")
        #expect(r.headers["date"]?.hasSuffix(" GMT") == true)
        let response = try JSONDecoder().decode(ScoreResponse.self, from: Data(r.body.utf8))
        #expect(response.requestId == requestID)
        #expect(response.source == .model || response.source == .rules)
        return response
    }

    @Test func pipelinedRequestsAreAnsweredInOrderAcrossBothPaths() async throws {
        let config = try GatewayTestEnv.config("fastpath-order")
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let port = try #require(client.port)
            // One write: score, a Hummingbird route, score, a client error, another route, score + close.
            let pipelined =
                RawHTTP.score(valid, requestID: "req-1") + RawHTTP.get("/healthz")
                + RawHTTP.score(valid, requestID: "req-3")
                + RawHTTP.score(#"{"symbol":"BTCUSDT","features":[1,2]}"#, requestID: "req-4")
                + RawHTTP.get("/v1/opportunities?limit=1")
                + RawHTTP.score(valid, requestID: "req-6", extraHeaders: "Connection: close\r\n")
            let responses = try await RawHTTP.exchange(port: port, [pipelined])
            try #require(responses.count == 6, "\(responses.map(\.status))")
            _ = try scored(responses[0], requestID: "req-1")
            #expect(responses[1].status == 200)
            #expect(responses[1].body == #"{"status":"ok"}"#)
            _ = try scored(responses[2], requestID: "req-3")
            #expect(responses[3].status == 400)
            #expect(responses[3].body.contains(#""code":"invalid_features""#))
            #expect(responses[4].status == 200)
            #expect(responses[4].body.hasPrefix(#"{"opportunities":"#))
            _ = try scored(responses[5], requestID: "req-6")  // and the server closed: `exchange` read to EOF
        }
    }

    @Test func bodiesInPiecesChunkedAndOversized() async throws {
        let config = try GatewayTestEnv.config("fastpath-bodies")
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let port = try #require(client.port)
            let whole = RawHTTP.score(valid, requestID: "split")
            let cut = whole.index(whole.endIndex, offsetBy: -20)
            var chunked =
                "POST /v1/score HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: chunked\r\n"
                + "Transfer-Encoding: chunked\r\n\r\n"
            let half = valid.index(valid.startIndex, offsetBy: 30)
            for piece in [valid[..<half], valid[half...]] {
                chunked += String(piece.utf8.count, radix: 16) + "\r\n" + piece + "\r\n"
            }
            chunked += "0\r\n\r\n"
            let oversized = #"{"symbol":"BTCUSDT","pad":""# + String(repeating: "a", count: 70_000) + #""}"#
            // Declared too large (Content-Length), then too large while chunked (no length): both 400, and
            // the connection stays usable for the next request.
            var oversizedChunked =
                "POST /v1/score HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            for _ in 0..<3 {
                oversizedChunked += String(30_000, radix: 16) + "\r\n" + String(repeating: " ", count: 30_000) + "\r\n"
            }
            oversizedChunked += "0\r\n\r\n"
            let responses = try await RawHTTP.exchange(
                port: port,
                [
                    String(whole[..<cut]), String(whole[cut...]) + chunked, RawHTTP.score(oversized) + oversizedChunked,
                    RawHTTP.score(valid, requestID: "after", extraHeaders: "Connection: close\r\n")
                ])
            try #require(responses.count == 5, "\(responses.map(\.status))")
            _ = try scored(responses[0], requestID: "split")
            _ = try scored(responses[1], requestID: "chunked")
            for r in responses[2...3] {
                #expect(r.status == 400)
                #expect(r.body.contains(#""code":"body_too_large""#))
            }
            _ = try scored(responses[4], requestID: "after")
            #expect(responses[4].headers["connection"] == "close")
        }
    }

    /// A client that pipelines and then shuts its side gets every answer before the server closes (the fast
    /// path holds the half-close from Hummingbird, which would end the connection on it, until its answers
    /// are written).
    @Test func halfClosedClientGetsItsAnswers() async throws {
        let config = try GatewayTestEnv.config("fastpath-half-close")
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let port = try #require(client.port)
            let responses = try await RawHTTP.exchange(
                port: port,
                [
                    RawHTTP.score(valid, requestID: "hc-1") + RawHTTP.get("/healthz")
                        + RawHTTP.score(valid, requestID: "hc-3")
                ],
                halfClose: true)
            try #require(responses.count == 3, "\(responses.map(\.status))")
            _ = try scored(responses[0], requestID: "hc-1")
            #expect(responses[1].body == #"{"status":"ok"}"#)
            _ = try scored(responses[2], requestID: "hc-3")
        }
    }

    @Test func scoreAnswersMatchTheRouterPath() async throws {
        // Same request on both paths: same decision, score and source (features in the request, so the
        // answer is a pure function of the model).
        var answers: [ScoreResponse] = []
        for fastPath in [true, false] {
            let config = try GatewayTestEnv.config("fastpath-same-\(fastPath)") { $0.scoreFastPath = fastPath }
            let r = try await GatewayTestEnv.withGateway(config) { _, client in
                let port = try #require(client.port)
                let responses = try await RawHTTP.exchange(
                    port: port, [RawHTTP.score(valid, requestID: "same", extraHeaders: "Connection: close\r\n")])
                try #require(responses.count == 1)
                return try scored(responses[0], requestID: "same")
            }
            answers.append(r)
        }
        #expect(answers[0].source == .model)
        #expect(answers[0].source == answers[1].source)
        #expect(answers[0].score == answers[1].score)
        #expect(answers[0].decision == answers[1].decision)
        #expect(answers[0].model == answers[1].model)
    }

    /// Graceful shutdown while a score is waiting on the model: the answer still goes out (with
    /// `Connection: close`) before the connection closes, as on Hummingbird's router path.
    @Test func inFlightAnswerSurvivesGracefulShutdown() async throws {
        let silent = try SilentTCPListener()  // a Triton that accepts and never answers: the call runs to its deadline
        let config = try GatewayTestEnv.config("fastpath-drain", triton: silent.url) { $0.scoreTimeoutMs = 1500 }
        let valid = self.valid
        let pending = try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let port = try #require(client.port)
            let exchange = Task { try await RawHTTP.exchange(port: port, [RawHTTP.score(valid, requestID: "drain")]) }
            try await Task.sleep(for: .milliseconds(300))  // the request now waits on the model
            return exchange
        }
        // The server has shut down gracefully by now.
        let responses = try await pending.value
        try #require(responses.count == 1, "the connection closed without the answer")
        let response = try scored(responses[0], requestID: "drain")
        #expect(response.source == .rules)
        #expect(response.reason?.contains("primary_timeout") == true)
        #expect(responses[0].headers["connection"] == "close")
        withExtendedLifetime(silent) {}
    }
}
