import Foundation

/// Runs the built `te` with `environment` (added to the test's own) and returns its exit status and output
/// (stdout + stderr), colour off.
public func runTe(_ arguments: [String], environment: [String: String] = [:]) async throws -> (
    status: Int32, output: String
) {
    let te = try ChildProcess.built(
        "te", arguments: arguments, environment: environment.merging(["NO_COLOR": "1"]) { $1 })
    let status = try await te.waitForExit(timeout: .seconds(30))
    return (status, te.output())
}

/// The output parsed as JSON (the `-o json` document), or nil.
public func jsonOutput(_ output: String) -> Any? {
    try? JSONSerialization.jsonObject(with: Data(output.utf8))
}
