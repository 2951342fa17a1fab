import Testing

@testable import TEPostgres

@Suite("COPY text encoding")
struct CopyTextEncoderTests {
    @Test func escapesTheCharactersTheFormatUses() {
        var encoder = CopyTextEncoder()
        encoder.appendRow(["a\tb", "line1\nline2", "back\\slash", nil, "cr\r", ""])
        encoder.appendRow(["é✓", "\\N"])
        let text = String(decoding: encoder.bytes, as: UTF8.self)
        #expect(text == "a\\tb\tline1\\nline2\tback\\\\slash\t\\N\tcr\\r\t\n" + "é✓\t\\\\N\n")
        #expect(encoder.rowCount == 2)
    }
}

@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    @Test func firstOperationConnectsThenRuns() {
        var machine = ConnectionStateMachine()
        #expect(machine.operationRequested(now: 0, session: nil) == .connect(delayNanos: 0))
        let generation = machine.connectSucceeded()
        #expect(generation == 1)
        #expect(machine.operationRequested(now: 5, session: nil) == .run(generation: 1))
        #expect(machine.operationRequested(now: 5, session: 1) == .run(generation: 1))
    }

    @Test func failedConnectsBackOffExponentiallyUpToTheCap() {
        var machine = ConnectionStateMachine()
        machine.connectFailed(now: 1_000, jitter: 0)
        #expect(machine.operationRequested(now: 1_000, session: nil) == .connect(delayNanos: 100_000_000))
        machine.connectFailed(now: 2_000, jitter: 0)
        #expect(machine.operationRequested(now: 2_000, session: nil) == .connect(delayNanos: 200_000_000))
        machine.connectFailed(now: 3_000, jitter: 0)
        #expect(machine.operationRequested(now: 3_000 + 100_000_000, session: nil) == .connect(delayNanos: 300_000_000))
        for _ in 0..<20 { machine.connectFailed(now: 0, jitter: 0) }
        #expect(machine.operationRequested(now: 0, session: nil) == .connect(delayNanos: 5_000_000_000))
        // Past the retry time: connect at once.
        #expect(machine.operationRequested(now: 6_000_000_000, session: nil) == .connect(delayNanos: 0))
    }

    @Test func lostConnectionReconnectsAtOnceButFailsItsTransaction() {
        var machine = ConnectionStateMachine()
        _ = machine.connectSucceeded()
        machine.connectionLost(now: 10)
        #expect(machine.operationRequested(now: 10, session: 1) == .failSessionLost)
        #expect(machine.operationRequested(now: 10, session: nil) == .connect(delayNanos: 0))
        #expect(machine.connectSucceeded() == 2)
        // A transaction begun on session 1 must not continue on session 2.
        #expect(machine.operationRequested(now: 11, session: 1) == .failSessionLost)
        #expect(machine.operationRequested(now: 11, session: 2) == .run(generation: 2))
    }

    @Test func closeIsFinalAndIdempotent() {
        var machine = ConnectionStateMachine()
        _ = machine.connectSucceeded()
        #expect(machine.closeRequested() == .finish)
        #expect(machine.closeRequested() == .nothing)
        #expect(machine.operationRequested(now: 0, session: nil) == .failClosed)
    }

    @Test func aJitteredReconnectWaitsLessButNeverPastTheCap() {
        var machine = ConnectionStateMachine()
        machine.connectFailed(now: 0, jitter: 0.5)
        #expect(machine.operationRequested(now: 0, session: nil) == .connect(delayNanos: 75_000_000))
        for _ in 0..<20 { machine.connectFailed(now: 0, jitter: 0.999) }
        guard case .connect(let delay) = machine.operationRequested(now: 0, session: nil) else {
            Issue.record("expected a connect")
            return
        }
        #expect(delay > 2_500_000_000 && delay < 2_510_000_000)
    }
}

@Suite("Configuration")
struct ConfigurationTests {
    @Test func passesURIParametersThroughToLibpq() throws {
        let configuration = try PostgresConfiguration(
            url: "postgres://alice:s3cret@db.example:6543/audit?sslmode=require&sslrootcert=/etc/ca.pem")
        let parameters = Dictionary(configuration.connectParameters, uniquingKeysWith: { a, _ in a })
        #expect(parameters["sslmode"] == "require")
        #expect(parameters["sslrootcert"] == "/etc/ca.pem")
        #expect(parameters["host"] == "db.example")
        #expect(parameters["port"] == "6543")
        #expect(parameters["dbname"] == "audit")
        #expect(parameters["user"] == "alice")
        #expect(parameters["connect_timeout"] == "5")
        #expect(parameters["application_name"] == "te")
    }

    @Test func databaseOverrideAndDescriptionWithoutPassword() throws {
        var configuration = try PostgresConfiguration(url: "postgresql://alice:s3cret@db.example:6543/audit")
        configuration.database = "other"
        #expect(Dictionary(configuration.connectParameters, uniquingKeysWith: { a, _ in a })["dbname"] == "other")
        #expect(configuration.description == "postgres://alice@db.example:6543/other")
        #expect(!configuration.description.contains("s3cret"))
        #expect(configuration.scrub("oops s3cret here") == "oops *** here")
    }

    @Test func rejectsMalformedURLs() {
        #expect(throws: PostgresError.self) { try PostgresConfiguration(url: "mysql://x@y/z") }
        #expect(throws: PostgresError.self) { try PostgresConfiguration(url: "postgres://x@y/z?nosuchoption=1") }
    }

    @Test func classifiesErrors() {
        #expect(PostgresError(.server, message: "", sqlState: "22P02").isDataError)
        #expect(PostgresError(.server, message: "", sqlState: "23502").isDataError)
        #expect(!PostgresError(.server, message: "", sqlState: "42P01").isDataError)
        #expect(PostgresError(.server, message: "", sqlState: "57P01").isRetriable)
        #expect(PostgresError(.connectionLost, message: "").isRetriable)
        #expect(!PostgresError(.server, message: "", sqlState: "22P02").isRetriable)
    }
}
