import Foundation
import TEModels

/// One recorded venue message: what `te replay` publishes to Kafka (key, timestamp, header `ts_ns`).
public struct RecordedMessage: Sendable, Equatable {
    /// The recorded receive time, ns since epoch.
    public var tsNs: Int64
    /// The symbol (the Kafka key), when the recording names one.
    public var key: String?
    public var payload: [UInt8]

    public init(tsNs: Int64, key: String?, payload: [UInt8]) {
        self.tsNs = tsNs
        self.key = key
        self.payload = payload
    }
}

public struct RecordingError: Error, CustomStringConvertible {
    public var path: String
    public var line: Int
    public var reason: String
    public var description: String { "\(path):\(line): \(reason)" }
}

/// Reads the recordings of `../shared/data` and plain Tick JSON lines, one message at a time:
/// - Binance captures: `<ts_ns> <json>` lines, gzip (`.gz`);
/// - cryptofeed captures: JSON lines `{"t":"recv","ts":<epoch s>,"data":"<raw text>"}`, zstd (`.zst`); its
///   `http` lines that hold a REST depth snapshot are replayed too, keyed by the URL's `symbol=`;
/// - normalized Tick JSON lines (`.jsonl`/`.json`, optionally compressed), keyed by their symbol.
/// Compressed files are read through `gzip -dc` / `zstd -dc`. Reading blocks: callers run it off the
/// cooperative pool.
public final class RecordingReader {
    public let path: String
    private let handle: FileHandle
    private let process: Process?
    private var buffer: [UInt8] = []
    private var start = 0
    private var eof = false
    private var lineNumber = 0
    /// A bare Binance depth snapshot has no symbol: it belongs to the symbol of the messages around it.
    private var lastSymbol: String?

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw RecordingError(path: path, line: 0, reason: "cannot read the file")
        }
        let tool: String? = path.hasSuffix(".gz") ? "gzip" : path.hasSuffix(".zst") ? "zstd" : nil
        if let tool {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [tool, "-dc", path]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
            self.process = process
            self.handle = pipe.fileHandleForReading
        } else {
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw RecordingError(path: path, line: 0, reason: "cannot open the file")
            }
            self.process = nil
            self.handle = handle
        }
    }

    deinit {
        if let process, process.isRunning { process.terminate() }
        try? handle.close()
    }

    /// The next message, or nil at the end. Lines that are no market data (cryptofeed headers, sends) are skipped.
    public func next() throws -> RecordedMessage? {
        while let line = readLine() {
            lineNumber += 1
            if line.isEmpty { continue }
            if let message = try parse(line) { return message }
        }
        if let process {
            process.waitUntilExit()
            if process.terminationStatus != 0 {
                throw RecordingError(
                    path: path, line: lineNumber, reason: "decompression failed (exit \(process.terminationStatus))")
            }
        }
        return nil
    }

    /// Every message, for tests and small files.
    public static func readAll(path: String) throws -> [RecordedMessage] {
        let reader = try RecordingReader(path: path)
        var out: [RecordedMessage] = []
        while let m = try reader.next() { out.append(m) }
        return out
    }

    private func parse(_ line: ArraySlice<UInt8>) throws -> RecordedMessage? {
        let first = line.first!
        if first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") {
            // Binance: "<ts_ns> <json>"
            guard let space = line.firstIndex(of: UInt8(ascii: " ")),
                let ts = Int64(String(decoding: line[line.startIndex..<space], as: UTF8.self))
            else { throw RecordingError(path: path, line: lineNumber, reason: "expected '<ts_ns> <json>'") }
            let payload = Array(line[(space + 1)...])
            if let symbol = Self.scanSymbol(payload) { lastSymbol = symbol }
            return RecordedMessage(tsNs: ts, key: Self.scanSymbol(payload) ?? lastSymbol, payload: payload)
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
            throw RecordingError(path: path, line: lineNumber, reason: "not a JSON object")
        }
        if let kind = object["t"] as? String, object["kind"] == nil {
            // cryptofeed
            guard let ts = object["ts"] as? Double, let data = object["data"] as? String else { return nil }
            guard let tsNs = MarketNormalizer.nanoseconds(seconds: ts) else {
                throw RecordingError(path: path, line: lineNumber, reason: "ts \(ts) is out of range")
            }
            switch kind {
            case "recv":
                let payload = Array(data.utf8)
                return RecordedMessage(
                    tsNs: tsNs, key: Self.scanSymbol(payload) ?? Self.scanKrakenPair(payload), payload: payload)
            case "http":
                guard let url = object["url"] as? String, url.contains("/depth"),
                    let symbol = URLComponents(string: url)?.queryItems?.first(where: { $0.name == "symbol" })?.value
                else { return nil }
                return RecordedMessage(tsNs: tsNs, key: symbol, payload: Array(data.utf8))
            default:
                return nil
            }
        }
        // A normalized Tick
        guard let symbol = object["symbol"] as? String, let ts = (object["ts_ns"] as? NSNumber)?.int64Value else {
            throw RecordingError(
                path: path, line: lineNumber, reason: "a JSON line that is no Tick (needs symbol and ts_ns)")
        }
        return RecordedMessage(tsNs: ts, key: symbol, payload: Array(line))
    }

    /// The value of the first `"s":"…"` (Binance's symbol field) without parsing the whole message.
    static func scanSymbol(_ payload: [UInt8]) -> String? {
        let needle: [UInt8] = Array(#""s":""#.utf8)
        guard payload.count > needle.count else { return nil }
        var i = 0
        let end = payload.count - needle.count
        while i < end {
            if payload[i] == needle[0], payload[i + 1] == needle[1], payload[i + 2] == needle[2],
                payload[i + 3] == needle[3],
                payload[i + 4] == needle[4]
            {
                let start = i + needle.count
                guard let close = payload[start...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
                return String(decoding: payload[start..<close], as: UTF8.self)
            }
            i += 1
        }
        return nil
    }

    /// A Kraken v1 array ends with the pair: `…,"book-1000","XBT/USD"]`.
    static func scanKrakenPair(_ payload: [UInt8]) -> String? {
        guard payload.last == UInt8(ascii: "]"), payload.count > 3, payload[payload.count - 2] == UInt8(ascii: "\"")
        else { return nil }
        let close = payload.count - 2
        guard let open = payload[..<close].lastIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: payload[(open + 1)..<close], as: UTF8.self)
    }

    private func readLine() -> ArraySlice<UInt8>? {
        while true {
            if let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer[start..<newline]
                start = newline + 1
                return line
            }
            if eof {
                guard start < buffer.count else { return nil }
                let line = buffer[start...]
                start = buffer.count
                return line
            }
            if start > 0 {
                buffer.removeFirst(start)
                start = 0
            }
            let chunk = handle.readData(ofLength: 1 << 20)
            if chunk.isEmpty { eof = true } else { buffer.append(contentsOf: chunk) }
        }
    }
}
