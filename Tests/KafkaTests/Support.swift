import Foundation
import MarketData

enum Recordings {
    static let dataDirectory: String = {
        if let dir = ProcessInfo.processInfo.environment["TE_DATA_DIR"] { return dir }
        // Tests/KafkaTests/Support.swift → repository root → ../shared/data
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        for candidate in [root.appendingPathComponent("../shared/data"), URL(fileURLWithPath: "/work/shared/data")] {
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("binance").path) {
                return candidate.standardizedFileURL.path
            }
        }
        return "/work/shared/data"
    }()

    static func path(_ name: String) -> String { dataDirectory + "/" + name }

    /// The decompressed lines of a recording (gzip / zstd through their command-line tools).
    static func lines(_ name: String) throws -> [ArraySlice<UInt8>] {
        let file = path(name)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [file.hasSuffix(".zst") ? "zstd" : "gzip", "-dc", file]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: file])
        }
        let bytes = [UInt8](data)
        return bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true)
    }

    static func messages(_ name: String) throws -> [RecordedMessage] {
        let lines = try lines(name)
        var parser = RecordingParser(format: RecordingFormat.detect(firstLine: lines.first ?? []))
        return lines.compactMap { parser.parse(line: $0) }
    }
}
