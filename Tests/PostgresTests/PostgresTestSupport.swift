import Foundation
import Logging
import TEPostgres
import Testing

/// Integration tests find PostgreSQL through POSTGRES_URL (exported by `make test` from .dev/env);
/// a missing variable fails the test. Each test works in its own database, dropped afterwards.
enum PostgresTestServer {
    static func url() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["POSTGRES_URL"], !url.isEmpty else {
            throw TestSetupError("POSTGRES_URL is not set: run `make dev-up` and `source .dev/env`")
        }
        return url
    }

    static let logger: Logger = {
        var logger = Logger(label: "postgres-tests")
        logger.logLevel = .warning
        return logger
    }()

    static func uniqueName(_ prefix: String = "te_test") -> String {
        "\(prefix)_\(UInt64.random(in: 0..<UInt64.max) % 1_000_000_000_000)"
    }

    /// Runs `body` with a connection to a fresh database (and the database's name).
    static func withDatabase<T>(
        _ body: (PostgresConnection, PostgresConfiguration) async throws -> T
    ) async throws -> T {
        let admin = PostgresConnection(configuration: try PostgresConfiguration(url: url()), logger: logger)
        let name = uniqueName()
        try await admin.createDatabase(name)
        var configuration = try PostgresConfiguration(url: url())
        configuration.database = name
        let connection = PostgresConnection(configuration: configuration, logger: logger)
        do {
            let value = try await body(connection, configuration)
            await connection.close()
            try await admin.dropDatabase(name)
            await admin.close()
            return value
        } catch {
            await connection.close()
            try? await admin.dropDatabase(name)
            await admin.close()
            throw error
        }
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
