import Foundation
import HTTPTypes
import NIOCore
import Testing

@testable import GatewayEngine
@testable import GatewayHTTP

/// When the answer to a request the decoder could not frame goes out: after the answers of every complete
/// request before it, then nothing more.
@Suite struct FramingErrorStateTests {
    let error = RequestError(.malformedHTTP, "bad")

    @Test func answersAtOnceWhenNothingIsOutstanding() {
        var s = FramingErrorState()
        #expect(s.framingFailed(error) == .answer(error))
        #expect(s.dropsTraffic)
        #expect(s.responseEnded() == .none)
        #expect(s.framingFailed(error) == .none, "one answer")
    }

    @Test func waitsForTheAnswersOfEarlierRequests() {
        var s = FramingErrorState()
        s.requestEnded()
        s.requestEnded()
        #expect(s.framingFailed(error) == .none)
        #expect(!s.dropsTraffic)
        #expect(s.responseEnded() == .none)
        #expect(s.responseEnded() == .answer(error))
        #expect(s.dropsTraffic)
    }

    @Test func aResponseBeforeItsRequestEndedCounts() {
        // A 401 goes out before the request's body is read; its body then fails to frame.
        var s = FramingErrorState()
        #expect(s.responseEnded() == .none)
        #expect(s.framingFailed(error) == .answer(error))
    }
}

/// What the gateway answers to what is not a well-formed request it serves, on the wire, through the
/// event-loop fast path and through Hummingbird's router alike: framing errors (400), unknown paths (404),
/// wrong methods (405 with `Allow`), bodies that are not JSON (415), each with the error JSON.
@Suite(.serialized, .timeLimit(.minutes(3))) struct HTTPErrorTests {
    let valid = #"{"symbol":"BTCUSDT","features":[0.5,0.3,0.2,1,2,0.1,10,0.05]}"#

    func error(_ r: RawResponse, status: Int, code: String, sourceLocation: SourceLocation = #_sourceLocation) throws
        -> [String: Any]
    {
        #expect(r.status == status, "\(r.body)", sourceLocation: sourceLocation)
        #expect(r.headers["content-type"] == "application/json", sourceLocation: sourceLocation)
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any], sourceLocation: sourceLocation)
        let error = try #require(json["error"] as? [String: Any], "\(r.body)", sourceLocation: sourceLocation)
        #expect(error["code"] as? String == code, "\(r.body)", sourceLocation: sourceLocation)
        #expect((error["message"] as? String)?.isEmpty == false, sourceLocation: sourceLocation)
        #expect(error.keys.contains("field"), sourceLocation: sourceLocation)
        return error
    }

    @Test(arguments: [true, false]) func framingErrorsAre400WithTheErrorJSON(fastPath: Bool) async throws {
        let config = try GatewayTestEnv.config("framing") { $0.scoreFastPath = fastPath }
        let head = "POST /v1/score HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        let cases: [(name: String, request: String, field: String?)] = [
            ("bad Content-Length", head + "Content-Length: 12x\r\n\r\n" + valid, "Content-Length"),
            (
                "conflicting Content-Length", head + "Content-Length: 3\r\nContent-Length: 4\r\n\r\n" + valid,
                "Content-Length"
            ),
            ("bad chunk size", head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + valid + "\r\n0\r\n\r\n", nil),
            (
                "Transfer-Encoding with Content-Length",
                head + "Transfer-Encoding: chunked\r\nContent-Length: \(valid.utf8.count)\r\n\r\n" + valid,
                "Content-Length"
            )
        ]
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let port = try #require(client.port)
            for c in cases {
                // The server answers and closes: `exchange` reads to EOF.
                let responses = try await RawHTTP.exchange(port: port, [c.request])
                try #require(responses.count == 1, "\(c.name): \(responses.map(\.status))")
                let e = try error(responses[0], status: 400, code: "malformed_http")
                #expect(e["field"] as? String == c.field, "\(c.name)")
                #expect(responses[0].headers["connection"] == "close", "\(c.name)")
            }
            // Behind complete requests on the same connection (one of each path): their answers first, in order.
            let pipelined =
                RawHTTP.score(valid, requestID: "first") + RawHTTP.get("/healthz") + head
                + "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"sym\r\nq\r\n"
            let responses = try await RawHTTP.exchange(port: port, [pipelined])
            try #require(responses.count == 3, "\(responses.map(\.status))")
            #expect(responses[0].status == 200)
            #expect(responses[0].body.contains(#""request_id":"first""#))
            #expect(responses[1].body == #"{"status":"ok"}"#)
            _ = try error(responses[2], status: 400, code: "malformed_http")
        }
    }

    @Test(arguments: [true, false]) func unknownPathWrongMethodAndNotJSON(fastPath: Bool) async throws {
        let config = try GatewayTestEnv.config("http-errors") { $0.scoreFastPath = fastPath }
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let port = try #require(client.port)
            let close = "Connection: close\r\n"
            func one(_ request: String) async throws -> RawResponse {
                let responses = try await RawHTTP.exchange(port: port, [request])
                try #require(responses.count == 1, "\(responses.map(\.status))")
                return responses[0]
            }
            _ = try error(try await one(RawHTTP.get("/nope", extraHeaders: close)), status: 404, code: "not_found")
            _ = try error(try await one(RawHTTP.get("/v1/scores", extraHeaders: close)), status: 404, code: "not_found")

            let get = try await one(RawHTTP.get("/v1/score", extraHeaders: close))
            _ = try error(get, status: 405, code: "method_not_allowed")
            #expect(get.headers["allow"] == "POST")
            let post = try await one("POST /healthz HTTP/1.1\r\nHost: gw\r\n\(close)Content-Length: 0\r\n\r\n")
            _ = try error(post, status: 405, code: "method_not_allowed")
            #expect(post.headers["allow"] == "GET")
            let delete = try await one("DELETE /v1/opportunities HTTP/1.1\r\nHost: gw\r\n\(close)\r\n")
            #expect(delete.headers["allow"] == "GET")

            func score(contentType: String?) -> String {
                let type = contentType.map { "Content-Type: \($0)\r\n" } ?? ""
                return
                    "POST /v1/score HTTP/1.1\r\nHost: gw\r\n\(type)\(close)Content-Length: \(valid.utf8.count)\r\n\r\n\(valid)"
            }
            for type in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", nil] {
                let e = try error(try await one(score(contentType: type)), status: 415, code: "unsupported_media_type")
                #expect(e["field"] as? String == "Content-Type")
            }
            for type in ["application/json; charset=utf-8", "Application/JSON", " application/json "] {
                #expect(try await one(score(contentType: type)).status == 200, "\(type)")
            }
        }
    }

    /// The 405 answers' table names exactly the paths and methods deploy/openapi.yaml documents.
    @Test func routeMethodsMatchTheOpenAPIDocument() {
        var documented: [String: [String]] = [:]
        var path: String?
        for line in OpenAPIDocument.yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  /"), line.hasSuffix(":") {
                path = String(line.dropFirst(2).dropLast())
            } else if let p = path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = line.trimmingCharacters(in: .whitespaces).dropLast().uppercased()
                if ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(method) {
                    documented[p, default: []].append(method)
                }
            } else if !line.hasPrefix(" ") {
                path = nil
            }
        }
        let served = GatewayAPI.routeMethods.mapValues { $0.map(\.rawValue) }
        #expect(documented == served)
    }

    /// Every error code the gateway answers with is one the Error schema lists, and the schema lists no other.
    @Test func errorCodesMatchTheOpenAPIDocument() throws {
        let yaml = OpenAPIDocument.yaml
        let start = try #require(yaml.range(of: "enum: [malformed_json"))
        let end = try #require(yaml[start.lowerBound...].firstIndex(of: "]"))
        let documented = Set(
            yaml[yaml.index(start.lowerBound, offsetBy: 7)..<end].split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespacesAndNewlines)
            })
        // Answered outside RequestError.Code: the bearer check, the rate limit, /debug/features, Redis outages,
        // sync audit, the push streams' client limit.
        let others: Set = [
            "unauthorized", "rate_limited", "no_features", "redis_unavailable", "audit_unavailable", "too_many_streams"
        ]
        #expect(documented == Set(RequestError.Code.allCases.map(\.rawValue)).union(others))
    }

    @Test func contentTypeIsJSON() {
        for yes in [
            "application/json", "application/json;charset=utf-8", "APPLICATION/JSON ; q=1", "\tapplication/json"
        ] {
            #expect(GatewayAPI.isJSON(contentType: yes), "\(yes)")
        }
        for no in [
            nil, "", "application/jso", "application/json-seq", "text/json", "application/xml", "application/ json"
        ] {
            #expect(!GatewayAPI.isJSON(contentType: no), "\(no ?? "nil")")
        }
    }
}
