import ArgumentParser

// The lead owns this file and lists every subcommand; this branch wires only `features`.
struct TE: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "te", abstract: "Trade Eligibility operator CLI.", subcommands: [FeaturesCommand.self, AuditCommand.self])
}

// main.swift cannot use @main, and here `AsyncParsableCommand.main()` resolves to the synchronous one;
// parse and run by hand instead.
func runAsync<Command: AsyncParsableCommand>(_ command: Command) async throws {
    var command = command
    try await command.run()
}

do {
    var command = try TE.parseAsRoot()
    if let asyncCommand = command as? any AsyncParsableCommand {
        try await runAsync(asyncCommand)
    } else {
        try command.run()
    }
} catch {
    TE.exit(withError: error)
}
