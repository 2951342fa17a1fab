import Foundation

/// The recordings of ../shared/data: `TE_DATA_DIR`, else the first `shared/data` found above this file
/// (the repository's sibling, for a clone or a worktree). One lookup for every suite, so no test names a
/// machine's absolute path.
public enum RecordedData {
    public static func file(_ relative: String) throws -> String {
        if let dir = ProcessInfo.processInfo.environment["TE_DATA_DIR"] {
            return URL(fileURLWithPath: dir).appendingPathComponent(relative).path
        }
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent("shared/data").appendingPathComponent(relative)
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        throw RecordingNotFound(relative: relative)
    }

    /// `file(relative)` for a suite's constant: when the recording is missing, the relative name itself, so
    /// the first read fails naming it.
    public static func path(_ relative: String) -> String {
        (try? file(relative)) ?? relative
    }
}

public struct RecordingNotFound: Error, CustomStringConvertible {
    public let relative: String
    public var description: String { "recording \(relative) not found: set TE_DATA_DIR to ../shared/data" }
}
