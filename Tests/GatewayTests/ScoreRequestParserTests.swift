import GatewayHTTP
import TEModels
import Testing

@testable import GatewayEngine

@Suite struct ScoreRequestParserTests {
    func parse(_ s: String) throws(RequestError) -> ScoreRequest { try ScoreRequestParser.parse(Array(s.utf8)) }

    func error(_ s: String) -> RequestError? {
        do {
            _ = try parse(s)
            return nil
        } catch {
            return error
        }
    }

    @Test func fullRequest() throws {
        let r = try parse(#"{"symbol":"BTCUSDT","ts_ns":1,"features":[1,2.5,-3e-2,0,0,0,0,1E2],"freshness_ms":10}"#)
        #expect(
            r == ScoreRequest(symbol: "BTCUSDT", tsNs: 1, features: [1, 2.5, -0.03, 0, 0, 0, 0, 100], freshnessMs: 10))
    }

    @Test func minimalAndNulls() throws {
        #expect(try parse(#" { "symbol" : "ETH-USD" } "#) == ScoreRequest(symbol: "ETH-USD"))
        #expect(
            try parse(#"{"symbol":"BTC","features":null,"ts_ns":null,"freshness_ms":null}"#)
                == ScoreRequest(symbol: "BTC"))
        #expect(try parse(#"{"symbol":"X\u0042T"}"#).symbol == "XBT")
    }

    @Test func malformed() {
        for body in [
            "", "   ", "{", "[1]", "{\"symbol\":\"BTC\"", "{\"symbol\":\"BTC\",}", "{\"symbol\":BTC}",
            "{\"symbol\":\"BTC\"} x",
            "{\"symbol\":\"BTC\",\"features\":[1,2,]}", "{\"symbol\":\"BTC\",\"features\":[01,2]}", "nul"
        ] {
            #expect(error(body)?.code == .malformedJSON, "\(body)")
        }
    }

    @Test func wrongTypes() {
        #expect(error(#"{"symbol":5}"#) == RequestError(.invalidType, "expected a string", field: "symbol"))
        #expect(error(#"{"symbol":"BTC","features":"x"}"#)?.field == "features")
        #expect(error(#"{"symbol":"BTC","features":{"a":1}}"#)?.code == .invalidType)
        #expect(
            error(#"{"symbol":"BTC","features":[1,2,3,"4",5,6,7,8]}"#)
                == RequestError(.invalidType, "expected a number", field: "features[3]"))
        #expect(error(#"{"symbol":"BTC","ts_ns":1.5}"#)?.field == "ts_ns")
        #expect(error(#"{"symbol":"BTC","freshness_ms":"10"}"#)?.code == .invalidType)
        #expect(error(#"{"symbol":"BTC","features":[true,2,3,4,5,6,7,8]}"#)?.field == "features[0]")
    }

    @Test func featureCountAndFiniteness() {
        #expect(
            error(#"{"symbol":"BTC","features":[1,2,3]}"#)
                == RequestError(.invalidFeatures, "expected 8 numbers, got 3", field: "features"))
        #expect(error(#"{"symbol":"BTC","features":[]}"#)?.code == .invalidFeatures)
        #expect(error(#"{"symbol":"BTC","features":[1,2,3,4,5,6,7,8,9]}"#)?.code == .invalidFeatures)
        #expect(
            error(#"{"symbol":"BTC","features":[1,2,3,4,5,6,7,1e999]}"#)
                == RequestError(.nonFiniteNumber, "not a finite number", field: "features[7]"))
        #expect(error(#"{"symbol":"BTC","features":[NaN,2,3,4,5,6,7,8]}"#)?.code == .nonFiniteNumber)
        #expect(error(#"{"symbol":"BTC","features":[1,Infinity,3,4,5,6,7,8]}"#)?.field == "features[1]")
    }

    /// Finite as a double, infinite as the model's FP32: rejected with the element named.
    @Test func featuresBeyondFP32Range() throws {
        let fp32 = RequestError(
            .invalidValue, "outside the model's FP32 range (magnitude at most 3.4028235e38)", field: "features[3]")
        #expect(error(#"{"symbol":"BTC","features":[1,2,3,3.4e39,5,6,7,8]}"#) == fp32)
        #expect(error(#"{"symbol":"BTC","features":[1,2,3,-1e300,5,6,7,8]}"#) == fp32)
        #expect(error(#"{"symbol":"BTC","features":[1,2,3,3.4028236e38,5,6,7,8]}"#)?.field == "features[3]")
        // The largest FP32 value and values that round to it or underflow to zero are accepted.
        let edge = try parse(#"{"symbol":"BTC","features":[3.4028235e38,-3.4028235e38,1e-50,-1e-300,0,0,0,0]}"#)
        #expect(edge.features?.map { Float($0).isFinite } == Array(repeating: true, count: 8))
    }

    @Test func symbolAndFields() {
        #expect(error(#"{"features":[1,2,3,4,5,6,7,8]}"#) == RequestError(.missingField, "required", field: "symbol"))
        #expect(error(#"{"symbol":"btc"}"#)?.code == .invalidSymbol)
        #expect(error(#"{"symbol":"B"}"#)?.code == .invalidSymbol)
        #expect(error(#"{"symbol":"BTC USD"}"#)?.code == .invalidSymbol)
        #expect(error(#"{"symbol":"BTC","extra":1}"#)?.code == .unknownField)
        #expect(error(#"{"symbol":"BTC","extra":1}"#)?.field == "extra")
        #expect(error(#"{"symbol":"BTC","symbol":"ETH"}"#)?.code == .duplicateField)
        #expect(error(#"{"symbol":"BTC","freshness_ms":-1}"#)?.code == .invalidValue)
        #expect(error(#"{"symbol":"BTC","ts_ns":-5}"#)?.code == .invalidValue)
    }

    @Test func bodyTooLarge() {
        let big = #"{"symbol":"BTC","pad":""# + String(repeating: "x", count: 70_000) + #""}"#
        #expect(error(big)?.code == .bodyTooLarge)
    }

    @Test func errorJSON() {
        let e = RequestError(.invalidType, "expected \"a\" number", field: "features[3]")
        #expect(e.json == #"{"error":{"code":"invalid_type","message":"expected \"a\" number","field":"features[3]"}}"#)
        #expect(
            RequestError(.malformedJSON, "bad").json
                == #"{"error":{"code":"malformed_json","message":"bad","field":null}}"#)
    }
}
