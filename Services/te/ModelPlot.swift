import FeatureEngine
import Foundation
import TECore

/// `te model --plot FILE.png`: te computes each version's reliability table and score histogram (the
/// numbers of its own table) and hands them as JSON to `deploy/triton/plot_quality.py`, run by the
/// project's Python: `TE_PYTHON`, else the train venv `.dev/venv-train` (`make train-venv`, matplotlib)
/// of the checkout te runs in or was built in.
enum ModelPlot {
    static let histogramBins = 20

    static func draw(
        _ summaries: [(String, QualitySummary)], scores: [String: [Double]], title: String, to output: String
    )
        throws
    {
        let (python, script) = try locate()
        let versions = summaries.map { version, q -> [String: Any] in
            var counts = [Int](repeating: 0, count: histogramBins)
            for s in scores[version] ?? [] where s.isFinite {
                counts[min(max(Int((s * Double(histogramBins)).rounded(.down)), 0), histogramBins - 1)] += 1
            }
            return [
                "version": version, "outcomes": q.outcomes, "base_rate": q.baseRate, "constant_brier": q.constantBrier,
                "brier": q.brier as Any? ?? NSNull(), "ece": q.ece as Any? ?? NSNull(),
                "reliability": q.reliability.map {
                    ["mean_score": $0.meanScore, "eligible_rate": $0.eligibleRate, "count": $0.count] as [String: Any]
                },
                "histogram": ["edges": (0...histogramBins).map { Double($0) / Double(histogramBins) }, "counts": counts]
            ]
        }
        let data = FileManager.default.temporaryDirectory.appendingPathComponent(
            "te-model-plot-\(UUID().uuidString).json")
        try JSONSerialization.data(withJSONObject: ["title": title, "versions": versions]).write(to: data)
        defer { try? FileManager.default.removeItem(at: data) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script, data.path, output]
        let stderr = Pipe()
        process.standardError = stderr
        try process.run()
        let message = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let last = String(decoding: message, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
            throw CLIError("--plot: \(script) failed (exit \(process.terminationStatus)): \(last)")
        }
    }

    /// The interpreter and the script. The checkout: the first directory holding deploy/triton/plot_quality.py
    /// above the working directory or above te's own executable (.build/debug/te).
    static func locate() throws -> (python: String, script: String) {
        let fm = FileManager.default
        var starts = [URL(fileURLWithPath: fm.currentDirectoryPath)]
        starts.append(
            URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent())
        var root: URL?
        search: for start in starts {
            var dir = start.standardizedFileURL
            while true {
                if fm.fileExists(atPath: dir.appendingPathComponent("deploy/triton/plot_quality.py").path) {
                    root = dir
                    break search
                }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        guard let root else {
            throw CLIError("--plot needs deploy/triton/plot_quality.py: run te from the repository (or from its build)")
        }
        let python =
            Env.optional("TE_PYTHON")
            ?? root.appendingPathComponent(".dev/venv-train/bin/python").path
        guard fm.isExecutableFile(atPath: python) else {
            throw CLIError(
                "--plot needs a Python with matplotlib: `make train-venv` (makes .dev/venv-train) or set TE_PYTHON (not found: \(python))"
            )
        }
        return (python, root.appendingPathComponent("deploy/triton/plot_quality.py").path)
    }
}
