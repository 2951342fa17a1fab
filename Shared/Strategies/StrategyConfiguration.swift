import Foundation

/// A strategy file (`STRATEGIES_FILE`) could not be used. The description is one line naming the file,
/// the key path inside it (`strategies[2].min_change_bps`) and the reason.
public struct StrategyConfigurationError: Error, Equatable, CustomStringConvertible {
    public var file: String
    /// Empty when the problem is the whole file (unreadable, malformed JSON).
    public var keyPath: String
    public var reason: String

    public init(file: String, keyPath: String, reason: String) {
        self.file = file
        self.keyPath = keyPath
        self.reason = reason
    }

    public var description: String {
        keyPath.isEmpty ? "strategy file \(file): \(reason)" : "strategy file \(file): \(keyPath): \(reason)"
    }
}

extension StrategySet {
    /// Reads and validates a strategy file. Format (`deploy/strategies/README.md`):
    /// `{"strategies": [{"name": "…", "kind": "rapid_rise", "min_change_bps": 8, "min_volume": 20}, …]}`.
    /// Unknown keys, unknown kinds, missing, negative or non-numeric parameters and duplicate names are errors.
    public static func load(file: String) throws(StrategyConfigurationError) -> StrategySet {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: file))
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? (error as NSError).localizedDescription
            throw StrategyConfigurationError(file: file, keyPath: "", reason: "cannot read: \(reason)")
        }
        return try parse(data, file: file)
    }

    /// Parses the content of a strategy file; `file` only names it in errors.
    public static func parse(_ data: Data, file: String) throws(StrategyConfigurationError) -> StrategySet {
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw StrategyConfigurationError(
                file: file, keyPath: "", reason: "malformed JSON: \(Self.jsonErrorText(error))")
        }
        var reader = ConfigReader(file: file)
        return try reader.strategySet(root)
    }

    private static func jsonErrorText(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            if let underlying = context.underlyingError as NSError?,
                let detail = underlying.userInfo[NSDebugDescriptionErrorKey] as? String
            {
                return detail
            }
            return context.debugDescription
        }
        return "\(error)"
    }
}

/// A JSON value as written, so the reader can name the key path of anything wrong with it.
enum JSONValue: Decodable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let v = try? c.decode(Bool.self) {
            self = .bool(v)
        } else if let v = try? c.decode(Double.self) {
            self = .number(v)
        } else if let v = try? c.decode(String.self) {
            self = .string(v)
        } else if let v = try? c.decode([JSONValue].self) {
            self = .array(v)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

private struct ConfigReader {
    let file: String

    func fail(_ path: String, _ reason: String) -> StrategyConfigurationError {
        StrategyConfigurationError(file: file, keyPath: path, reason: reason)
    }

    mutating func strategySet(_ root: JSONValue) throws(StrategyConfigurationError) -> StrategySet {
        guard case .object(let top) = root else { throw fail("", "expected an object, got \(root.typeName)") }
        try rejectUnknownKeys(top, allowed: ["strategies"], path: "")
        guard let list = top["strategies"] else { throw fail("strategies", "missing") }
        guard case .array(let items) = list else { throw fail("strategies", "expected an array, got \(list.typeName)") }
        guard !items.isEmpty else { throw fail("strategies", "empty: configure at least one strategy") }
        var strategies: [Strategy] = []
        var firstIndexByName: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            let path = "strategies[\(index)]"
            let strategy = try self.strategy(item, path: path)
            if let earlier = firstIndexByName[strategy.name] {
                throw fail("\(path).name", "duplicate name \"\(strategy.name)\" (also strategies[\(earlier)].name)")
            }
            firstIndexByName[strategy.name] = index
            strategies.append(strategy)
        }
        return StrategySet(strategies)
    }

    func strategy(_ value: JSONValue, path: String) throws(StrategyConfigurationError) -> Strategy {
        guard case .object(let fields) = value else { throw fail(path, "expected an object, got \(value.typeName)") }
        let name = try string(fields, "name", path: path)
        guard Self.isValidName(name) else {
            throw fail(
                "\(path).name",
                "\"\(name)\" is not a valid name: 1–64 characters of a–z, A–Z, 0–9, '_', '-', '.'")
        }
        let kindText = try string(fields, "kind", path: path)
        guard let kind = Strategy.Kind(rawValue: kindText) else {
            let known = Strategy.Kind.allCases.map(\.rawValue).joined(separator: ", ")
            throw fail("\(path).kind", "unknown kind \"\(kindText)\" (known: \(known))")
        }
        let rule: Strategy.Rule
        switch kind {
        case .rapidRise, .rapidFall:
            try rejectUnknownKeys(
                fields, allowed: ["name", "kind", "min_change_bps", "min_volume", "confidence_scale_bps"], path: path)
            let move = Strategy.RapidMove(
                minChangeBps: try number(fields, "min_change_bps", path: path, .positive),
                minVolume: try number(fields, "min_volume", path: path, .nonNegative),
                confidenceScaleBps: try optionalNumber(fields, "confidence_scale_bps", path: path, .positive))
            rule = kind == .rapidRise ? .rapidRise(move) : .rapidFall(move)
        case .imbalancePressure:
            try rejectUnknownKeys(fields, allowed: ["name", "kind", "max_spread_bps", "min_imbalance"], path: path)
            rule = .imbalancePressure(
                .init(
                    maxSpreadBps: try number(fields, "max_spread_bps", path: path, .nonNegative),
                    minImbalance: try number(fields, "min_imbalance", path: path, .unitInterval)))
        case .ofiBreakout:
            try rejectUnknownKeys(
                fields, allowed: ["name", "kind", "k", "min_tick_rate", "confidence_scale"], path: path)
            rule = .ofiBreakout(
                .init(
                    k: try number(fields, "k", path: path, .positive),
                    minTickRate: try number(fields, "min_tick_rate", path: path, .nonNegative),
                    confidenceScale: try optionalNumber(fields, "confidence_scale", path: path, .positive)))
        }
        return Strategy(name: name, rule: rule)
    }

    /// Names go into signal ids (`symbol:strategy:ts_ns`) and metric labels: no ':' or spaces.
    static func isValidName(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.count <= 64 else { return false }
        return utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."):
                true
            default: false
            }
        }
    }

    func rejectUnknownKeys(_ fields: [String: JSONValue], allowed: Set<String>, path: String)
        throws(StrategyConfigurationError)
    {
        // Sorted so the error names the same key every time.
        for key in fields.keys.sorted() where !allowed.contains(key) {
            let allowedList = allowed.sorted().joined(separator: ", ")
            throw fail(path.isEmpty ? key : "\(path).\(key)", "unknown key (allowed here: \(allowedList))")
        }
    }

    func string(_ fields: [String: JSONValue], _ key: String, path: String) throws(StrategyConfigurationError) -> String
    {
        guard let value = fields[key] else { throw fail("\(path).\(key)", "missing") }
        guard case .string(let text) = value else {
            throw fail("\(path).\(key)", "expected a string, got \(value.typeName)")
        }
        return text
    }

    enum Bound {
        case positive, nonNegative, unitInterval

        func check(_ v: Double) -> String? {
            switch self {
            case .positive: v > 0 ? nil : (v < 0 ? "negative" : "must be greater than 0") + ", got \(v)"
            case .nonNegative: v >= 0 ? nil : "negative, got \(v)"
            case .unitInterval: v > 0 && v <= 1 ? nil : (v < 0 ? "negative" : "must be in (0, 1]") + ", got \(v)"
            }
        }
    }

    func number(_ fields: [String: JSONValue], _ key: String, path: String, _ bound: Bound)
        throws(StrategyConfigurationError) -> Double
    {
        guard let value = try optionalNumber(fields, key, path: path, bound) else {
            throw fail("\(path).\(key)", "missing")
        }
        return value
    }

    func optionalNumber(_ fields: [String: JSONValue], _ key: String, path: String, _ bound: Bound)
        throws(StrategyConfigurationError) -> Double?
    {
        guard let value = fields[key] else { return nil }
        guard case .number(let v) = value else {
            throw fail("\(path).\(key)", "expected a number, got \(value.typeName)")
        }
        guard v.isFinite else { throw fail("\(path).\(key)", "not a finite number") }
        if let problem = bound.check(v) { throw fail("\(path).\(key)", problem) }
        return v
    }
}
