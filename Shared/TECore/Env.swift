import Foundation

/// A missing or malformed configuration variable. `description` is one line naming the variable,
/// printed by `ServiceRunner` before it exits 1.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let variable: String
    public let problem: String

    public init(variable: String, problem: String) {
        self.variable = variable
        self.problem = problem
    }

    public var description: String { "configuration error: \(variable) \(problem)" }
}

/// Typed access to environment variables: the one configuration reader (services, the gateway, the Kafka
/// configuration, `te`). `Env()` reads the process environment; tests pass a dictionary. The static
/// functions read the process environment. Errors name the variable (`ConfigurationError`).
public struct Env: Sendable {
    public let values: [String: String]

    public init(_ values: [String: String] = ProcessInfo.processInfo.environment) {
        self.values = values
    }

    /// The value, or nil when unset or empty.
    public func optional(_ name: String) -> String? {
        guard let v = values[name]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
        return v
    }

    /// `read(name)` when the variable is set, else nil: an optional setting with no default.
    public func ifSet<T>(_ name: String, _ read: (String) throws(ConfigurationError) -> T) throws(ConfigurationError)
        -> T?
    {
        guard optional(name) != nil else { return nil }
        return try read(name)
    }

    /// A required string; `hint` describes the expected form in the error.
    public func string(_ name: String, default defaultValue: String? = nil, hint: String? = nil)
        throws(ConfigurationError) -> String
    {
        if let v = optional(name) { return v }
        if let defaultValue { return defaultValue }
        throw ConfigurationError(variable: name, problem: "is required" + (hint.map { " (\($0))" } ?? ""))
    }

    public func int(_ name: String, default defaultValue: Int? = nil, range: ClosedRange<Int>? = nil)
        throws(ConfigurationError) -> Int
    {
        guard let text = optional(name) else {
            if let defaultValue { return defaultValue }
            throw ConfigurationError(variable: name, problem: "is required (an integer)")
        }
        guard let value = Int(text) else {
            throw ConfigurationError(variable: name, problem: "must be an integer, got \"\(text)\"")
        }
        if let range, !range.contains(value) {
            throw ConfigurationError(
                variable: name, problem: "must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        return value
    }

    public func double(_ name: String, default defaultValue: Double? = nil, range: ClosedRange<Double>? = nil)
        throws(ConfigurationError) -> Double
    {
        guard let text = optional(name) else {
            if let defaultValue { return defaultValue }
            throw ConfigurationError(variable: name, problem: "is required (a number)")
        }
        guard let value = Double(text), value.isFinite else {
            throw ConfigurationError(variable: name, problem: "must be a number, got \"\(text)\"")
        }
        if let range, !range.contains(value) {
            throw ConfigurationError(
                variable: name, problem: "must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        return value
    }

    /// `true/false`, `1/0`, `yes/no`, `on/off` (any case).
    public func bool(_ name: String, default defaultValue: Bool? = nil) throws(ConfigurationError) -> Bool {
        guard let text = optional(name) else {
            if let defaultValue { return defaultValue }
            throw ConfigurationError(variable: name, problem: "is required (true or false)")
        }
        switch text.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw ConfigurationError(variable: name, problem: "must be true or false, got \"\(text)\"")
        }
    }

    /// A duration given in milliseconds (`*_MS` variables); must not be negative.
    public func milliseconds(_ name: String, default defaultValue: Duration? = nil) throws(ConfigurationError)
        -> Duration
    {
        guard optional(name) != nil else {
            if let defaultValue { return defaultValue }
            throw ConfigurationError(variable: name, problem: "is required (milliseconds)")
        }
        return .milliseconds(try int(name, range: 0...Int.max))
    }

    /// A duration given in seconds (`*_SEC` variables); must not be negative.
    public func seconds(_ name: String, default defaultValue: Duration? = nil) throws(ConfigurationError) -> Duration {
        guard optional(name) != nil else {
            if let defaultValue { return defaultValue }
            throw ConfigurationError(variable: name, problem: "is required (seconds)")
        }
        return .seconds(try int(name, range: 0...Int.max))
    }

    /// `STREAM_SHARDS` (DESIGN.md "Shards"): how many shards each per-symbol stream has; default 1.
    public func streamShards() throws(ConfigurationError) -> Int {
        try int("STREAM_SHARDS", default: 1, range: 1...4096)
    }

    // MARK: The process environment

    public static func optional(_ name: String) -> String? { Env().optional(name) }
    public static func string(_ name: String, default d: String? = nil, hint: String? = nil) throws(ConfigurationError)
        -> String
    {
        try Env().string(name, default: d, hint: hint)
    }
    public static func int(_ name: String, default d: Int? = nil, range: ClosedRange<Int>? = nil)
        throws(ConfigurationError) -> Int
    {
        try Env().int(name, default: d, range: range)
    }
    public static func double(_ name: String, default d: Double? = nil, range: ClosedRange<Double>? = nil)
        throws(ConfigurationError) -> Double
    {
        try Env().double(name, default: d, range: range)
    }
    public static func bool(_ name: String, default d: Bool? = nil) throws(ConfigurationError) -> Bool {
        try Env().bool(name, default: d)
    }
    public static func milliseconds(_ name: String, default d: Duration? = nil) throws(ConfigurationError) -> Duration {
        try Env().milliseconds(name, default: d)
    }
    public static func seconds(_ name: String, default d: Duration? = nil) throws(ConfigurationError) -> Duration {
        try Env().seconds(name, default: d)
    }
}
