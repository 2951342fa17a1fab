/// A Redis stream entry id (`<ms>-<seq>`), ordered as Redis orders them. A bare `<ms>` reads as `<ms>-0`.
public struct StreamID: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var milliseconds: UInt64
    public var sequence: UInt64

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard let ms = parts.first.flatMap({ UInt64($0) }) else { return nil }
        milliseconds = ms
        if parts.count == 2 {
            guard let seq = UInt64(parts[1]) else { return nil }
            sequence = seq
        } else {
            sequence = 0
        }
    }

    public static func < (a: StreamID, b: StreamID) -> Bool {
        (a.milliseconds, a.sequence) < (b.milliseconds, b.sequence)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }
}
