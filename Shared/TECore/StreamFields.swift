/// The fields of one stream entry as bytes. A Redis reply's entries share one buffer holding every field
/// name and value of the reply and one table of where each ends, so reading a batch costs a few
/// allocations however many fields it has; an entry is that storage plus its place in it.
///
/// As a collection it yields `(name, value)` text pairs, made on each access (tools, tests, low-rate
/// callers); hot readers borrow the bytes with `withView` instead.
public struct StreamFields: Sendable, RandomAccessCollection {
    /// Names and values of the whole reply, back to back.
    private let bytes: [UInt8]
    /// `ends[k]`: where string k of the reply ends in `bytes` (it starts where string k - 1 ends).
    private let ends: [Int]
    /// This entry's first name in `ends` (always even: names and values alternate).
    private let first: Int

    public let count: Int

    /// Storage shared by several entries: entry `j` of a reply is `first: 2 * (its first pair)`.
    package init(bytes: [UInt8], ends: [Int], first: Int, count: Int) {
        precondition(first >= 0 && first + 2 * count <= ends.count, "fields past the reply's strings")
        self.bytes = bytes
        self.ends = ends
        self.first = first
        self.count = count
    }

    public init(_ pairs: [(String, String)]) {
        var bytes: [UInt8] = []
        var ends: [Int] = []
        ends.reserveCapacity(2 * pairs.count)
        for (name, value) in pairs {
            bytes.append(contentsOf: name.utf8)
            ends.append(bytes.count)
            bytes.append(contentsOf: value.utf8)
            ends.append(bytes.count)
        }
        self.init(bytes: bytes, ends: ends, first: 0, count: pairs.count)
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> (String, String) {
        precondition(position >= 0 && position < count, "field index out of range")
        return (text(first + 2 * position), text(first + 2 * position + 1))
    }

    /// The value of the last field named `name` (later fields win, as in a hash of them).
    public func value(_ name: String) -> String? {
        withView { view in
            var i = view.count - 1
            while i >= 0 {
                if view.name(i).equals(name) { return view.value(i).string }
                i -= 1
            }
            return nil
        }
    }

    /// The fields by name; a repeated name counts with its last value.
    public var dictionary: [String: String] {
        var out: [String: String] = [:]
        out.reserveCapacity(count)
        for (name, value) in self { out[name] = value }
        return out
    }

    /// Lends the entry's bytes to `body`; the view and every `FieldBytes` from it are valid only inside.
    public func withView<R, E: Error>(_ body: (StreamFieldsView) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = bytes.withUnsafeBufferPointer { storage in
            ends.withUnsafeBufferPointer { ends in
                Result { () throws(E) -> R in
                    try body(StreamFieldsView(storage: storage, ends: ends, first: first, count: count))
                }
            }
        }
        return try result.get()
    }

    private func text(_ k: Int) -> String {
        let start = k == 0 ? 0 : ends[k - 1]
        return bytes.withUnsafeBufferPointer {
            String(decoding: UnsafeBufferPointer(rebasing: $0[start..<ends[k]]), as: UTF8.self)
        }
    }
}

extension StreamFields: Equatable {
    public static func == (a: StreamFields, b: StreamFields) -> Bool {
        guard a.count == b.count else { return false }
        return a.withView { va in
            b.withView { vb in
                for i in 0..<va.count where !(va.name(i) == vb.name(i) && va.value(i) == vb.value(i)) {
                    return false
                }
                return true
            }
        }
    }
}

/// One entry's fields, borrowed from its `StreamFields` for the duration of `withView`'s closure.
public struct StreamFieldsView {
    private let storage: UnsafeBufferPointer<UInt8>
    private let ends: UnsafeBufferPointer<Int>
    private let first: Int
    public let count: Int

    fileprivate init(storage: UnsafeBufferPointer<UInt8>, ends: UnsafeBufferPointer<Int>, first: Int, count: Int) {
        self.storage = storage
        self.ends = ends
        self.first = first
        self.count = count
    }

    public func name(_ i: Int) -> FieldBytes { bytes(first + 2 * i) }
    public func value(_ i: Int) -> FieldBytes { bytes(first + 2 * i + 1) }

    private func bytes(_ k: Int) -> FieldBytes {
        let start = k == 0 ? 0 : ends[k - 1]
        return FieldBytes(UnsafeBufferPointer(rebasing: storage[start..<ends[k]]))
    }
}

/// A field name or value as bytes, borrowed like the view it came from.
public struct FieldBytes {
    public let buffer: UnsafeBufferPointer<UInt8>

    public init(_ buffer: UnsafeBufferPointer<UInt8>) { self.buffer = buffer }

    public var count: Int { buffer.count }
    public var isEmpty: Bool { buffer.isEmpty }
    public subscript(i: Int) -> UInt8 { buffer[i] }

    /// The bytes as text (a copy; no allocation up to 15 bytes).
    public var string: String { String(decoding: buffer, as: UTF8.self) }

    public func equals(_ text: StaticString) -> Bool {
        text.withUTF8Buffer { Self.same(buffer, $0) }
    }

    public func equals(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { Self.same(buffer, $0) }
    }

    public static func == (a: FieldBytes, b: FieldBytes) -> Bool { same(a.buffer, b.buffer) }

    private static func same(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a[i] != b[i] { return false }
        return true
    }

    /// `case "symbol":` in a `switch` over a field name.
    public static func ~= (pattern: StaticString, value: FieldBytes) -> Bool { value.equals(pattern) }
}
