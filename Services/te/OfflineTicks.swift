import Foundation
import MarketData
import TEModels

/// The ticks of recordings, normalised by MarketData exactly as `ingest` normalises what `te replay`
/// publishes: each recorded message with its recorded receive time as `ts_ns` (the replayed `ts_ns`
/// header) and its key, through ONE `MarketNormalizer` over all files in order (it keeps the books).
struct OfflineTicks {
    private var normalizer = MarketNormalizer()
    private(set) var messages = 0
    private(set) var ignored = 0
    private(set) var rejected: [String: Int] = [:]

    /// Calls `body` with each tick of `path`, in order. What the normaliser rejects is counted by
    /// reason (ingest would dead-letter it), never fatal.
    mutating func forEach(in path: String, _ body: (Tick) throws -> Void) throws {
        let reader = try RecordingReader(path: path)
        while let message = try reader.next() {
            messages += 1
            switch normalizer.normalize(payload: message.payload, receiveTsNs: message.tsNs, key: message.key) {
            case .ticks(let ticks):
                for tick in ticks { try body(tick) }
            case .ignored:
                ignored += 1
            case .rejected(let rejection):
                rejected[rejection.code, default: 0] += 1
            }
        }
    }

    var summary: String {
        let reasons = rejected.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return
            "\(messages) messages, \(ignored) ignored, \(rejected.values.reduce(0, +)) rejected\(reasons.isEmpty ? "" : " (\(reasons))")"
    }
}
