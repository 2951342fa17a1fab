import Foundation
import TECore

/// A message carried on a Redis stream: its fields are `v` (schema version) plus the model's own
/// fields as text — scalars as they read, nested values as JSON text — so `redis-cli XRANGE` shows it.
public protocol StreamMessage: Codable, Sendable {
    static var schemaVersion: Int { get }
}

/// A field of a message could not be decoded. `field` is the wire name (`bid`, `features[3]`).
public struct MessageDecodingError: Error, Equatable, CustomStringConvertible {
    public var field: String
    public var reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { "field '\(field)': \(reason)" }

    /// Names the field and the reason of a `DecodingError` thrown by `JSONDecoder`.
    public init(_ error: any Error) {
        if let error = error as? MessageDecodingError {
            self = error
            return
        }
        guard let error = error as? DecodingError else {
            self.init(field: "", reason: "\(error)")
            return
        }
        func path(_ codingPath: [any CodingKey]) -> String {
            var out = ""
            for key in codingPath {
                if let index = key.intValue {
                    out += "[\(index)]"
                } else {
                    out += out.isEmpty ? key.stringValue : ".\(key.stringValue)"
                }
            }
            return out
        }
        switch error {
        case .keyNotFound(let key, let context):
            self.init(field: path(context.codingPath + [key]), reason: "missing")
        case .typeMismatch(let type, let context):
            self.init(field: path(context.codingPath), reason: "expected \(Self.typeName(type))")
        case .valueNotFound(let type, let context):
            self.init(field: path(context.codingPath), reason: "expected \(Self.typeName(type)), got null")
        case .dataCorrupted(let context):
            let underlying = (context.underlyingError as? MessageDecodingError)?.reason
            self.init(
                field: path(context.codingPath),
                reason: underlying ?? (context.codingPath.isEmpty ? "malformed JSON" : context.debugDescription))
        @unknown default:
            self.init(field: "", reason: "\(error)")
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Double.Type, is Float.Type: return "a number"
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt64.Type: return "an integer"
        case is Bool.Type: return "a boolean"
        default:
            let name = "\(type)"
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return name
        }
    }
}

/// Stream keys and consumer groups of DESIGN.md "Executables".
public enum StreamKey {
    public static let ticks = "te:ticks"
    public static let features = "te:features"
    public static let signals = "te:signals"
    public static let opportunities = "te:opportunities"
    public static let audit = "te:audit"
    public static let outcomes = "te:outcomes"
    public static let rollout = "te:rollout"
    public static let dlq = "te:dlq"

    public static func spread(_ symbol: String) -> String { "te:spread_bps:\(symbol)" }
    public static func online(_ symbol: String) -> String { "te:online:\(symbol)" }
}

// MARK: - Encoding

/// Encodes a `StreamMessage` into ordered stream fields, `v` first: the message's own codec
/// (`StreamFieldEncodable`) when it has one, the Codable encoder for the low-rate rest.
public enum StreamFieldEncoder {
    public static func encode<M: StreamMessage>(_ message: M) throws -> [(String, String)] {
        if let typed = message as? any StreamFieldEncodable { return try typed.streamFields().pairs }
        return try encodeCodable(message)
    }

    /// The Codable encoder alone: the reference the codecs are tested against.
    public static func encodeCodable<M: StreamMessage>(_ message: M) throws -> [(String, String)] {
        let encoder = FieldsEncoder()
        encoder.fields.append(("v", String(M.schemaVersion)))
        try message.encode(to: encoder)
        return encoder.fields
    }
}

private final class FieldsEncoder: Encoder {
    var fields: [(String, String)] = []
    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(FieldsKeyedEncoder<Key>(encoder: self))
    }
    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        preconditionFailure("a stream message is a keyed value")
    }
    func singleValueContainer() -> any SingleValueEncodingContainer {
        preconditionFailure("a stream message is a keyed value")
    }
}

private struct FieldsKeyedEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let encoder: FieldsEncoder
    var codingPath: [any CodingKey] { [] }

    mutating func encodeNil(forKey key: Key) throws {}
    mutating func encode(_ value: String, forKey key: Key) throws { encoder.fields.append((key.stringValue, value)) }
    mutating func encode(_ value: Bool, forKey key: Key) throws {
        encoder.fields.append((key.stringValue, value ? "true" : "false"))
    }
    mutating func encode(_ value: Double, forKey key: Key) throws {
        encoder.fields.append((key.stringValue, FieldText.double(value)))
    }
    mutating func encode(_ value: Float, forKey key: Key) throws { try encode(Double(value), forKey: key) }
    mutating func encode(_ value: Int, forKey key: Key) throws {
        encoder.fields.append((key.stringValue, String(value)))
    }
    mutating func encode(_ value: Int64, forKey key: Key) throws {
        encoder.fields.append((key.stringValue, String(value)))
    }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        switch value {
        case let v as String: try encode(v, forKey: key)
        case let v as Double: try encode(v, forKey: key)
        case let v as Int64: try encode(v, forKey: key)
        case let v as Int: try encode(v, forKey: key)
        case let v as Bool: try encode(v, forKey: key)
        case let v as any RawRepresentable<String>: try encode(v.rawValue, forKey: key)
        default:
            let data = try FieldText.jsonEncoder.encode(value)
            encoder.fields.append((key.stringValue, String(decoding: data, as: UTF8.self)))
        }
    }
    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        preconditionFailure("nested values are encoded as JSON text")
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        preconditionFailure("nested values are encoded as JSON text")
    }
    mutating func superEncoder() -> any Encoder { encoder }
    mutating func superEncoder(forKey key: Key) -> any Encoder { encoder }
}

enum FieldText {
    /// Shortest text that reads back to the same Double, so stream values round-trip exactly.
    static func double(_ value: Double) -> String {
        var bytes: [UInt8] = []
        StreamFieldWriter.appendScalar(value, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    static let jsonEncoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()
}

// MARK: - Decoding

/// Decodes a `StreamMessage` from stream fields; the error names the field and the reason.
public enum StreamFieldDecoder {
    public static func decode<M: StreamMessage>(_ type: M.Type, from fields: [String: String])
        throws(MessageDecodingError)
        -> M
    {
        guard let rawVersion = fields["v"] else { throw MessageDecodingError(field: "v", reason: "missing") }
        guard let version = Int(rawVersion) else {
            throw MessageDecodingError(field: "v", reason: "expected an integer, got \"\(rawVersion)\"")
        }
        guard version <= M.schemaVersion else {
            throw MessageDecodingError(field: "v", reason: "schema version \(version) is newer than \(M.schemaVersion)")
        }
        do {
            return try M(from: FieldsDecoder(fields: fields))
        } catch {
            throw MessageDecodingError(error)
        }
    }

    /// Stream entries as read: a `StreamFieldDecodable` type's hand-written reader over the entry's bytes
    /// first (the hot path), the Codable decoder when it declines.
    public static func decode<M: StreamMessage>(_ type: M.Type, from fields: StreamFields)
        throws(MessageDecodingError) -> M
    {
        if let fast = M.self as? any StreamFieldDecodable.Type,
            let message = fields.withView({ fast.decodeFast($0) }) as? M
        {
            return message
        }
        return try decode(type, from: fields.dictionary)
    }

    /// Fields as text pairs (tools and tests), read as `decode(_:from:)` reads stream entries.
    public static func decode<M: StreamMessage>(_ type: M.Type, from fields: [(String, String)])
        throws(MessageDecodingError) -> M
    {
        try decode(type, from: StreamFields(fields))
    }

    /// The Codable decoder alone (the reference the fast readers are tested against).
    public static func decodeCodable<M: StreamMessage>(_ type: M.Type, from fields: [(String, String)])
        throws(MessageDecodingError) -> M
    {
        var dict: [String: String] = [:]
        dict.reserveCapacity(fields.count)
        for (k, v) in fields { dict[k] = v }
        return try decode(type, from: dict)
    }
}

private struct FieldsDecoder: Decoder {
    let fields: [String: String]
    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(FieldsKeyedDecoder<Key>(fields: fields))
    }
    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        throw MessageDecodingError(field: "", reason: "a stream message is a keyed value")
    }
    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        throw MessageDecodingError(field: "", reason: "a stream message is a keyed value")
    }
}

private struct FieldsKeyedDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let fields: [String: String]
    var codingPath: [any CodingKey] { [] }
    var allKeys: [Key] { fields.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { fields[key.stringValue] != nil }

    func raw(_ key: Key) throws(MessageDecodingError) -> String {
        guard let value = fields[key.stringValue] else {
            throw MessageDecodingError(field: key.stringValue, reason: "missing")
        }
        return value
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        guard let value = fields[key.stringValue] else { return true }
        return value == "null"
    }

    func decode(_ type: String.Type, forKey key: Key) throws -> String { try raw(key) }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
        switch try raw(key) {
        case "true", "1": return true
        case "false", "0": return false
        case let other:
            throw MessageDecodingError(field: key.stringValue, reason: "expected true or false, got \"\(other)\"")
        }
    }

    func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
        let text = try raw(key)
        guard let value = Double(text) else {
            throw MessageDecodingError(field: key.stringValue, reason: "expected a number, got \"\(text)\"")
        }
        guard value.isFinite else { throw MessageDecodingError(field: key.stringValue, reason: "not a finite number") }
        return value
    }

    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { Float(try decode(Double.self, forKey: key)) }

    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 {
        let text = try raw(key)
        guard let value = Int64(text) else {
            throw MessageDecodingError(field: key.stringValue, reason: "expected an integer, got \"\(text)\"")
        }
        return value
    }

    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { Int(try decode(Int64.self, forKey: key)) }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        switch type {
        case is String.Type: return try decode(String.self, forKey: key) as! T
        case is Double.Type: return try decode(Double.self, forKey: key) as! T
        case is Int64.Type: return try decode(Int64.self, forKey: key) as! T
        case is Int.Type: return try decode(Int.self, forKey: key) as! T
        case is Bool.Type: return try decode(Bool.self, forKey: key) as! T
        default: break
        }
        let text = try raw(key)
        if let raw = type as? any (RawRepresentable<String> & Decodable).Type {
            guard let value = raw.init(rawValue: text) else {
                throw MessageDecodingError(field: key.stringValue, reason: "unknown value \"\(text)\"")
            }
            return value as! T
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(text.utf8))
        } catch {
            var inner = MessageDecodingError(error)
            inner.field = inner.field.isEmpty ? key.stringValue : "\(key.stringValue).\(inner.field)"
            if inner.reason == "malformed JSON" { inner.reason = "malformed JSON text" }
            throw inner
        }
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        throw MessageDecodingError(field: key.stringValue, reason: "nested values are JSON text")
    }
    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        throw MessageDecodingError(field: key.stringValue, reason: "nested values are JSON text")
    }
    func superDecoder() throws -> any Decoder { FieldsDecoder(fields: fields) }
    func superDecoder(forKey key: Key) throws -> any Decoder { FieldsDecoder(fields: fields) }
}
