import Foundation

/// One recorded venue message, ready to publish: the payload exactly as received, its receive time, and the
/// symbol to use as the Kafka key.
public struct RecordedMessage: Sendable, Equatable {
    public var receiveTsNs: Int64
    public var payload: [UInt8]
    public var symbol: String?
}

/// The line formats of `../shared/data/` and plain JSON lines of Tick.
public enum RecordingFormat: String, Sendable {
    /// `<receive ns> <json>` (hftbacktest's Binance captures).
    case timestampedJSON
    /// cryptofeed's `{"t":"recv","ts":<epoch s>,"data":"<raw text>"}`; other record types are skipped.
    case cryptofeed
    /// One normalized Tick JSON per line; its `ts_ns` is the receive time.
    case tickJSON

    /// Decides from the first non-empty line.
    public static func detect(firstLine: some Collection<UInt8>) -> RecordingFormat {
        guard let first = firstLine.first else { return .tickJSON }
        if first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9") { return .timestampedJSON }
        if firstLine.starts(with: Array(#"{"t":"#.utf8)) { return .cryptofeed }
        return .tickJSON
    }
}

/// Parses recording lines (pure; the caller reads and decompresses the file). Remembers the last symbol so a
/// bare Binance REST depth snapshot (which names no symbol) is keyed like the messages around it.
public struct RecordingParser: Sendable {
    public let format: RecordingFormat
    private var lastSymbol: String?

    public init(format: RecordingFormat) { self.format = format }

    /// nil for a line that carries no market-data message (blank, header, connection records) or that
    /// cannot be read; `malformed` counts the latter.
    public private(set) var malformed = 0

    public mutating func parse(line: ArraySlice<UInt8>) -> RecordedMessage? {
        guard !line.isEmpty else { return nil }
        switch format {
        case .timestampedJSON:
            guard let space = line.firstIndex(of: UInt8(ascii: " ")),
                let ts = Int64(String(decoding: line[line.startIndex..<space], as: UTF8.self))
            else {
                malformed += 1
                return nil
            }
            let payload = Array(line[(space + 1)...])
            let symbol = quotedValue(after: #""s":""#, in: payload) ?? lastSymbol
            lastSymbol = symbol
            return RecordedMessage(receiveTsNs: ts, payload: payload, symbol: symbol)
        case .cryptofeed:
            guard line.starts(with: Array(#"{"t":"recv""#.utf8)) else { return nil }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                let data = object["data"] as? String,
                let ts = exactNanoseconds(afterKey: #""ts":"#, in: Array(line))
            else {
                malformed += 1
                return nil
            }
            let payload = Array(data.utf8)
            var symbol: String?
            if let json = try? JSONSerialization.jsonObject(with: Data(payload)) {
                if let array = json as? [Any] {
                    symbol = array.last as? String
                } else if let o = json as? [String: Any], let d = o["data"] as? [String: Any] {
                    symbol = d["s"] as? String
                }
            }
            return RecordedMessage(receiveTsNs: ts, payload: payload, symbol: symbol)
        case .tickJSON:
            let payload = Array(line)
            guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
                let ts = (object["ts_ns"] as? NSNumber)?.int64Value
            else {
                malformed += 1
                return nil
            }
            return RecordedMessage(receiveTsNs: ts, payload: payload, symbol: object["symbol"] as? String)
        }
    }
}

/// The text of `"key":"value"` found by bytes (no JSON parse: replay reads ~100k lines per second).
private func quotedValue(after key: String, in bytes: [UInt8]) -> String? {
    let pattern = Array(key.utf8)
    guard bytes.count > pattern.count else { return nil }
    var i = 0
    while i + pattern.count < bytes.count {
        if bytes[i] == pattern[0], bytes[i..<(i + pattern.count)].elementsEqual(pattern) {
            let start = i + pattern.count
            guard let end = bytes[start...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
            return String(decoding: bytes[start..<end], as: UTF8.self)
        }
        i += 1
    }
    return nil
}

/// `"ts":1618678132.358447` → 1618678132358447000, exactly (a Double would lose the last digits).
private func exactNanoseconds(afterKey key: String, in bytes: [UInt8]) -> Int64? {
    let pattern = Array(key.utf8)
    guard let start = (0..<max(0, bytes.count - pattern.count)).first(where: {
        bytes[$0..<($0 + pattern.count)].elementsEqual(pattern)
    }) else { return nil }
    var seconds: Int64 = 0
    var fraction: Int64 = 0
    var fractionDigits = 0
    var inFraction = false
    var i = start + pattern.count
    while i < bytes.count {
        let b = bytes[i]
        if b == UInt8(ascii: ".") {
            inFraction = true
        } else if b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") {
            if inFraction {
                if fractionDigits < 9 {
                    fraction = fraction * 10 + Int64(b - UInt8(ascii: "0"))
                    fractionDigits += 1
                }
            } else {
                seconds = seconds * 10 + Int64(b - UInt8(ascii: "0"))
            }
        } else {
            break
        }
        i += 1
    }
    guard i > start + pattern.count else { return nil }
    while fractionDigits < 9 {
        fraction *= 10
        fractionDigits += 1
    }
    return seconds * 1_000_000_000 + fraction
}
