import Foundation
import FuzzTargets
import GatewayEngine
import GatewayHTTP
import TEModels

/// The score request parser over an arbitrary body (fuzz/corpus/score-request). Apart from the light
/// targets of FuzzTargets because GatewayHTTP brings Hummingbird and NIO into the sanitized build.
///
/// Invariants: an accepted request has a valid symbol, a non-negative `ts_ns`, `freshness_ms` in range and
/// either no features or exactly 8 finite ones that stay finite as Float (the model input); the body is a
/// JSON object by JSONSerialization too; the request re-encoded by JSONEncoder parses back to the same request.
public enum ScoreRequestFuzz {
    public static let name = "score-request"

    public static func run(_ bytes: [UInt8]) throws(FuzzViolation) {
        guard
            case .success(let request) = Result(catching: { () throws(RequestError) in
                try ScoreRequestParser.parse(bytes)
            })
        else {
            return
        }
        guard Symbol.isValid(request.symbol) else { throw FuzzViolation("accepted the symbol \(request.symbol)") }
        if let tsNs = request.tsNs, tsNs < 0 { throw FuzzViolation("accepted ts_ns \(tsNs)") }
        if let freshness = request.freshnessMs, !(0...86_400_000).contains(freshness) {
            throw FuzzViolation("accepted freshness_ms \(freshness)")
        }
        if let features = request.features {
            guard features.count == FeatureVector.count,
                features.allSatisfy({ $0.isFinite && Float($0).isFinite })
            else { throw FuzzViolation("accepted features \(features)") }
        }
        guard (try? JSONSerialization.jsonObject(with: Data(bytes))) is [String: Any] else {
            throw FuzzViolation("accepted a body JSONSerialization does not read as an object")
        }
        let again: ScoreRequest
        do {
            again = try ScoreRequestParser.parse(Array(try JSONEncoder().encode(request)))
        } catch {
            throw FuzzViolation("\(request) re-encoded does not parse: \(error)")
        }
        guard again == request else { throw FuzzViolation("\(request) re-encoded parses as \(again)") }
    }

    public static func fuzz(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
        fuzzCallback(name, start, count, run)
    }
}
