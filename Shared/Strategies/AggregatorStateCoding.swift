import Foundation
import TEModels

/// How the aggregator's state lives in one Redis hash (`{prefix}:state`), readable with `redis-cli HGETALL`:
/// `version` → batches committed so far; `t:{SYMBOL}` → the symbol's event clock (ns);
/// `w:{SYMBOL}:{buy|sell}` → the open window as Opportunity JSON. The service writes the changed fields in the
/// same MULTI/EXEC as the batch's output and acknowledgement, so state, output and ack move together.
public enum AggregatorStateCoding {
    public static let versionField = "version"

    public static func windowField(_ key: OpportunityAggregator.WindowKey) -> String {
        "w:\(key.symbol):\(key.direction.rawValue)"
    }

    public static func clockField(_ symbol: String) -> String { "t:\(symbol)" }

    /// Fields to set and fields to delete for `changes`, plus the new version.
    public static func encode(_ changes: OpportunityAggregator.Changes, version: Int64) throws
        -> (set: [(String, String)], delete: [String])
    {
        var set: [(String, String)] = [(versionField, String(version))]
        set.reserveCapacity(1 + changes.upserted.count + changes.clocks.count)
        for (symbol, tsNs) in changes.clocks {
            set.append((clockField(symbol), String(tsNs)))
        }
        for opportunity in changes.upserted {
            let key = OpportunityAggregator.WindowKey(symbol: opportunity.symbol, direction: opportunity.direction)
            set.append((windowField(key), String(decoding: try encoder.encode(opportunity), as: UTF8.self)))
        }
        return (set, changes.closed.map(windowField))
    }

    public struct Decoded: Sendable {
        public var version: Int64
        public var openWindows: [Opportunity]
        public var clocks: [String: Int64]
    }

    public struct CorruptState: Error, CustomStringConvertible {
        public var field: String
        public var reason: String
        public var description: String { "aggregator state field '\(field)': \(reason)" }
    }

    /// From the hash's fields (HGETALL); an empty hash is the initial state.
    public static func decode(_ fields: [(String, String)]) throws(CorruptState) -> Decoded {
        var decoded = Decoded(version: 0, openWindows: [], clocks: [:])
        for (field, value) in fields {
            if field == versionField {
                guard let v = Int64(value) else { throw CorruptState(field: field, reason: "not an integer") }
                decoded.version = v
            } else if field.hasPrefix("t:") {
                guard let v = Int64(value) else { throw CorruptState(field: field, reason: "not an integer") }
                decoded.clocks[String(field.dropFirst(2))] = v
            } else if field.hasPrefix("w:") {
                do {
                    decoded.openWindows.append(try JSONDecoder().decode(Opportunity.self, from: Data(value.utf8)))
                } catch {
                    throw CorruptState(field: field, reason: MessageDecodingError(error).description)
                }
            } else {
                throw CorruptState(field: field, reason: "unknown field")
            }
        }
        return decoded
    }

    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()
}
