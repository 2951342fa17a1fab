import ArgumentParser
import Foundation

/// The operator CLI. Each subcommand lives in its own file.
struct TE: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "te",
        abstract: "Trade Eligibility operator CLI.",
        discussion:
            "Connection settings come from the environment (REDIS_URL, KAFKA_BROKERS, POSTGRES_URL, TRITON_URL); `source .dev/env` after `make dev-up`.",
        subcommands: [
            ReplayCommand.self, StreamsCommand.self, TailCommand.self, PendingCommand.self, DLQCommand.self,
            FeaturesCommand.self, TritonCommand.self, AuditCommand.self, ModelCommand.self, ScoreCommand.self,
            TopCommand.self,
            ExplainCommand.self
        ])
}

// In a main.swift, `TE.main()` resolves to ParsableCommand's synchronous entry point, which never runs an
// async `run()`; parse and run by hand.
func runAsync(_ command: inout some AsyncParsableCommand) async throws { try await command.run() }

let command: any ParsableCommand
do {
    command = try TE.parseAsRoot()
} catch {
    TE.exit(withError: error)  // usage, --help, --generate-completion-script
}
do {
    if var asyncCommand = command as? any AsyncParsableCommand {
        try await runAsync(&asyncCommand)
    } else {
        var syncCommand = command
        try syncCommand.run()
    }
} catch let error
    where error is ExitCode || error is CleanExit || error is ValidationError || TE.exitCode(for: error) == .success
{
    // The last: `--help` parses into ArgumentParser's own help command, whose run() throws its (internal)
    // help request; exit(withError:) prints the help and exits 0 (train.py's `te features --help` needs it).
    TE.exit(withError: error)
} catch {
    // Anything else is a failed operation: one line naming what failed, exit 1.
    FileHandle.standardError.write(Data("te: \(Inspect.message(for: error))\n".utf8))
    TE.exit(withError: ExitCode(1))
}
