import ServiceKit

/// The bearer keys the gateway accepts and the client each names: `name:key`, or a bare `key` (client
/// `default`). A pure value: parsed from `GATEWAY_API_KEYS` (comma-separated) and `GATEWAY_API_KEYS_FILE`
/// (one a line, `#` comments and blank lines allowed), looked up in constant time. Errors name the
/// entry by position, never by its key.
public struct APIKeyTable: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var client: String
        var key: [UInt8]
    }

    public private(set) var entries: [Entry] = []

    public init() {}

    public var isEmpty: Bool { entries.isEmpty }
    /// Every client name, once each, in first-seen order.
    public var clients: [String] {
        var seen = Set<String>()
        return entries.map(\.client).filter { seen.insert($0).inserted }
    }

    /// Parses entries separated by `separator` (`,` for the variable, newline for the file).
    public static func parse(_ text: String, separator: Character, source: String) throws(ConfigurationError)
        -> APIKeyTable
    {
        var table = APIKeyTable()
        for (index, rawEntry) in text.split(separator: separator, omittingEmptySubsequences: false).enumerated() {
            let entry = rawEntry.trimmingCharacters(in: .whitespacesAndNewlines)
            if entry.isEmpty || entry.hasPrefix("#") { continue }
            let position = separator == "\n" ? "line \(index + 1)" : "entry \(index + 1)"
            let client: String
            let key: Substring
            if let colon = entry.firstIndex(of: ":") {
                client = entry[..<colon].trimmingCharacters(in: .whitespaces)
                key = Substring(entry[entry.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            } else {
                client = "default"
                key = Substring(entry)
            }
            guard isValidClientName(client) else {
                throw ConfigurationError(
                    variable: source, problem: "\(position): client name must be 1-64 of [A-Za-z0-9._-]")
            }
            guard !key.isEmpty, !key.contains(where: \.isWhitespace) else {
                throw ConfigurationError(
                    variable: source, problem: "\(position): the key is empty or contains whitespace")
            }
            try table.add(client: client, key: Array(key.utf8), position: position, source: source)
        }
        return table
    }

    /// Both tables' entries; a key present in both must name the same client.
    public func merging(_ other: APIKeyTable, source: String) throws(ConfigurationError) -> APIKeyTable {
        var merged = self
        for entry in other.entries where !merged.entries.contains(entry) {
            try merged.add(client: entry.client, key: entry.key, position: "client \(entry.client)", source: source)
        }
        return merged
    }

    private mutating func add(client: String, key: [UInt8], position: String, source: String) throws(ConfigurationError)
    {
        if let existing = entries.first(where: { $0.key == key }) {
            guard existing.client == client else {
                throw ConfigurationError(variable: source, problem: "\(position): the same key is given to two clients")
            }
            return
        }
        entries.append(Entry(client: client, key: key))
    }

    static func isValidClientName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D
                    || b == 0x5F
                    || b == 0x2E
            }
    }

    /// The client whose key an `Authorization: Bearer <key>` value carries, or nil. Every entry is compared
    /// over the whole presented key without an early exit, so the time depends only on the presented
    /// length and the number of entries, never on how much of a key matched or on a key's length.
    public func client(authorization: String?) -> String? {
        guard let authorization, authorization.hasPrefix("Bearer ") else { return nil }
        let presented = Array(authorization.utf8.dropFirst(7))
        let matched = match(presented)
        return matched >= 0 ? entries[matched].client : nil
    }

    private func match(_ presented: [UInt8]) -> Int {
        var matched = -1
        for (index, entry) in entries.enumerated() {
            let key = entry.key
            var diff = UInt(bitPattern: key.count ^ presented.count)
            if !key.isEmpty {
                for i in 0..<presented.count { diff |= UInt(key[i % key.count] ^ presented[i]) }
            }
            // Branch-free select of the first matching index.
            let isMatch = diff == 0 && matched < 0
            matched = isMatch ? index : matched
        }
        return matched
    }
}
