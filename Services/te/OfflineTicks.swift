import Foundation
import TEModels

/// The ticks of a recording, in file order, for `te features`.
///
/// JSON lines of normalized Tick are read here (DESIGN "te replay" formats: the same Codable `Tick`
/// that `ingest` writes, validated the same way). Venue recordings (Binance `<ts_ns> <json>` gzip,
/// cryptofeed zstd) need the MarketData normaliser that `ingest` runs; see `venueRecording`.
enum OfflineTicks {
    struct ReadError: Error, CustomStringConvertible {
        let description: String
    }

    /// Calls `body` with each valid tick of `path`; lines that are not valid ticks are counted and
    /// reported on stderr (as `ingest` would dead-letter them), never fatal.
    static func forEach(in path: String, _ body: (Tick) throws -> Void) throws {
        if path.hasSuffix(".gz") || path.hasSuffix(".zst") {
            throw ReadError(description: venueRecording(path))
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ReadError(description: "cannot read \(path)")
        }
        let decoder = JSONDecoder()
        var invalid = 0
        var lineNumber = 0
        var firstProblem: String?
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            lineNumber += 1
            do {
                let tick = try decoder.decode(Tick.self, from: Data(line)).validated()
                try body(tick)
            } catch let error as DecodingError {
                invalid += 1
                if firstProblem == nil { firstProblem = "line \(lineNumber): \(MessageDecodingError(error))" }
            } catch let error as MessageDecodingError {
                invalid += 1
                if firstProblem == nil { firstProblem = "line \(lineNumber): \(error)" }
            }
        }
        if invalid > 0 {
            FileHandle.standardError.write(
                Data("te features: \(path): \(invalid) lines skipped (first: \(firstProblem ?? ""))\n".utf8))
        }
    }

    static func venueRecording(_ path: String) -> String {
        "\(path): venue recordings are normalised by the MarketData module (the code ingest runs), which this build does not have yet; give JSON lines of Tick"
    }
}
