import CLibPQ
import Dispatch
import Foundation
import Logging
import TECore

/// One row of a result: column names shared with its result, values in text format, nil for NULL.
public struct PostgresRow: Sendable {
    public let columns: [String]
    public let values: [String?]

    /// The value of column `name` (nil when NULL or when there is no such column).
    public subscript(_ name: String) -> String? {
        guard let index = columns.firstIndex(of: name) else { return nil }
        return values[index]
    }

    public subscript(_ index: Int) -> String? { values[index] }
}

/// The payload of a `COPY … FROM STDIN`, written piece by piece on the connection's thread while the
/// pieces before it are on their way: the server parses and inserts one piece while the next is made.
public protocol CopyProducer: Sendable {
    /// Appends the next piece of the payload to `buffer` (empty on each call); false when there is none.
    mutating func next(into buffer: inout [UInt8]) -> Bool
}

/// A payload made already, sent in 1 MiB pieces.
struct CopyBytes: CopyProducer {
    let data: [UInt8]
    var offset = 0

    mutating func next(into buffer: inout [UInt8]) -> Bool {
        guard offset < data.count else { return false }
        let end = min(offset + (1 << 20), data.count)
        buffer.append(contentsOf: data[offset..<end])
        offset = end
        return true
    }
}

public struct PostgresQueryResult: Sendable {
    public let columns: [String]
    public let rows: [PostgresRow]
    /// Rows inserted/updated/deleted/copied, from the command tag (`PQcmdTuples`); 0 when none apply.
    public let affectedRows: Int
}

/// One PostgreSQL connection over libpq. Every libpq call runs on the connection's own thread
/// (libpq blocks); the async API bridges with continuations. Statements are parameterised
/// (`PQexecParams`, text format): SQL is never built from values.
///
/// Connects lazily on first use; when the connection is lost, the next operation reconnects
/// (`PQreset`) after a backoff (100 ms doubling to 5 s, jittered, while attempts fail). A transaction never
/// spans a reconnect: its later statements fail with `.connectionLost`.
public final class PostgresConnection: Sendable {
    public let configuration: PostgresConfiguration
    /// libpq blocks (network I/O, `PQreset`, COPY back-pressure): its calls run on this thread alone.
    private let thread: BlockingExecutor
    private let session: Session

    public init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.thread = BlockingExecutor(name: "postgres")
        self.session = Session(configuration: configuration, logger: logger)
    }

    deinit {
        let session = self.session
        thread.submit { session.finish() }
        thread.shutdown()
    }

    // MARK: Operations

    /// Connects now if not connected (otherwise a no-op).
    public func connect() async throws(PostgresError) {
        _ = try await run(pin: nil) { (_, _) throws(PostgresError) in () }
    }

    /// Runs one parameterised statement (`$1`, `$2`, … ; nil is NULL) and returns its rows.
    public func query(_ sql: String, _ parameters: [String?] = []) async throws(PostgresError) -> PostgresQueryResult {
        try await query(sql, parameters, pin: nil)
    }

    /// Runs one parameterised statement and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [String?] = []) async throws(PostgresError) -> Int {
        try await query(sql, parameters, pin: nil).affectedRows
    }

    /// Runs a fixed SQL script (several statements, no parameters) with the simple query protocol.
    /// `StaticString`: the script is source text, so no value can ever be spliced into it.
    public func execute(script: StaticString) async throws(PostgresError) {
        try await execute(script: script, pin: nil)
    }

    /// `COPY … FROM STDIN` (text format) with `data` as the payload (see `CopyTextEncoder`);
    /// returns the rows copied.
    public func copyFrom(_ sql: String, data: [UInt8]) async throws(PostgresError) -> Int {
        try await copyFrom(sql, producer: CopyBytes(data: data), pin: nil).rows
    }

    /// `COPY … FROM STDIN` with the payload `producer` writes as it is sent; returns the rows copied and the
    /// producer as it ended (what it computed on the way).
    public func copyFrom<P: CopyProducer>(_ sql: String, producer: P) async throws(PostgresError) -> (
        rows: Int, producer: P
    ) {
        try await copyFrom(sql, producer: producer, pin: nil)
    }

    /// Runs `body` inside BEGIN … COMMIT; any error thrown by `body` (or by COMMIT) rolls back and
    /// is rethrown. Statements must go through the `PostgresTransaction` handed to `body`.
    @discardableResult
    public func withTransaction<T>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresTransaction) async throws -> T
    ) async throws -> T {
        let generation = try await run(pin: nil) { (conn, generation) throws(PostgresError) in
            _ = try Session.check(PQexec(conn, "BEGIN"), conn: conn, expect: PGRES_COMMAND_OK, session: self.session)
            return generation
        }
        let transaction = PostgresTransaction(connection: self, generation: generation)
        do {
            let value = try await body(transaction)
            try await execute(simple: "COMMIT", pin: generation)
            return value
        } catch {
            // Best effort: if the session is gone the server has already rolled back.
            try? await execute(simple: "ROLLBACK", pin: generation)
            throw error
        }
    }

    /// `CREATE DATABASE name` with the identifier quoted by libpq (`PQescapeIdentifier`).
    public func createDatabase(_ name: String) async throws(PostgresError) {
        try await identifierCommand(prefix: "CREATE DATABASE ", name: name, suffix: "")
    }

    /// `DROP DATABASE IF EXISTS name WITH (FORCE)`, identifier quoted by libpq.
    public func dropDatabase(_ name: String) async throws(PostgresError) {
        try await identifierCommand(prefix: "DROP DATABASE IF EXISTS ", name: name, suffix: " WITH (FORCE)")
    }

    /// Closes the connection; later operations fail with `.closed`.
    public func close() async {
        let session = self.session
        _ = await thread.run { session.close() }
    }

    // MARK: Internals shared with PostgresTransaction

    func query(_ sql: String, _ parameters: [String?], pin: UInt64?) async throws(PostgresError) -> PostgresQueryResult
    {
        try await run(pin: pin) { (conn, _) throws(PostgresError) in
            let result = Session.execParams(conn, sql, parameters)
            return try Session.check(result, conn: conn, expect: nil, session: self.session)
        }
    }

    func execute(script: StaticString, pin: UInt64?) async throws(PostgresError) {
        let text = script.description
        _ = try await run(pin: pin) { (conn, _) throws(PostgresError) in
            try Session.check(PQexec(conn, text), conn: conn, expect: nil, session: self.session)
        }
    }

    private func execute(simple sql: String, pin: UInt64) async throws(PostgresError) {
        _ = try await run(pin: pin) { (conn, _) throws(PostgresError) in
            try Session.check(PQexec(conn, sql), conn: conn, expect: PGRES_COMMAND_OK, session: self.session)
        }
    }

    func copyFrom<P: CopyProducer>(_ sql: String, producer: P, pin: UInt64?) async throws(PostgresError) -> (
        rows: Int, producer: P
    ) {
        try await run(pin: pin) { (conn, _) throws(PostgresError) in
            var producer = producer
            let rows = try self.session.copy(conn, sql, &producer)
            return (rows, producer)
        }
    }

    private func identifierCommand(prefix: String, name: String, suffix: String) async throws(PostgresError) {
        _ = try await run(pin: nil) { (conn, _) throws(PostgresError) in
            guard let quoted = PQescapeIdentifier(conn, name, name.utf8.count) else {
                throw PostgresError(.server, message: self.session.connectionMessage(conn))
            }
            let sql = prefix + String(cString: quoted) + suffix
            PQfreemem(quoted)
            return try Session.check(PQexec(conn, sql), conn: conn, expect: PGRES_COMMAND_OK, session: self.session)
        }
    }

    /// Runs `body` on the connection's thread with a live connection of session `pin` (any when nil).
    private func run<T: Sendable>(
        pin: UInt64?, _ body: @escaping @Sendable (OpaquePointer, UInt64) throws(PostgresError) -> T
    ) async throws(PostgresError) -> T {
        let session = self.session
        let outcome = await thread.run {
            Result { () throws(PostgresError) -> T in
                let (conn, generation) = try session.prepare(pin: pin)
                return try body(conn, generation)
            }
        }
        // Only `deinit` shuts the thread down, and nothing runs after it.
        return try outcome!.get()
    }
}

/// Statements inside `withTransaction`: all run on the session the transaction began on.
public struct PostgresTransaction: Sendable {
    let connection: PostgresConnection
    let generation: UInt64

    public func query(_ sql: String, _ parameters: [String?] = []) async throws(PostgresError) -> PostgresQueryResult {
        try await connection.query(sql, parameters, pin: generation)
    }

    @discardableResult
    public func execute(_ sql: String, _ parameters: [String?] = []) async throws(PostgresError) -> Int {
        try await connection.query(sql, parameters, pin: generation).affectedRows
    }

    public func execute(script: StaticString) async throws(PostgresError) {
        try await connection.execute(script: script, pin: generation)
    }

    public func copyFrom(_ sql: String, data: [UInt8]) async throws(PostgresError) -> Int {
        try await connection.copyFrom(sql, producer: CopyBytes(data: data), pin: generation).rows
    }

    public func copyFrom<P: CopyProducer>(_ sql: String, producer: P) async throws(PostgresError) -> (
        rows: Int, producer: P
    ) {
        try await connection.copyFrom(sql, producer: producer, pin: generation)
    }
}

/// The PGconn and its state machine.
// @unchecked Sendable: every member is used only on the owning connection's BlockingExecutor (all
// access goes through `PostgresConnection.run`, `close` or `deinit`, which submit to that thread),
// and libpq allows a PGconn to be used from any one thread at a time.
final class Session: @unchecked Sendable {
    private var conn: OpaquePointer?
    private var machine = ConnectionStateMachine()
    let configuration: PostgresConfiguration
    let logger: Logger

    init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    private static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    func prepare(pin: UInt64?) throws(PostgresError) -> (OpaquePointer, UInt64) {
        switch machine.operationRequested(now: Self.now(), session: pin) {
        case .run(let generation):
            guard let conn else { preconditionFailure("connected state without a PGconn") }
            return (conn, generation)
        case .connect(let delayNanos):
            if delayNanos > 0 { Thread.sleep(forTimeInterval: Double(delayNanos) / 1e9) }
            return try connect()
        case .failSessionLost:
            throw PostgresError(.connectionLost, message: "the connection was lost; the transaction was rolled back")
        case .failClosed:
            throw PostgresError(.closed, message: "the connection is closed")
        }
    }

    private func connect() throws(PostgresError) -> (OpaquePointer, UInt64) {
        if let conn {
            PQreset(conn)
        } else {
            let parameters = configuration.connectParameters
            let keywords = parameters.map { strdup($0.0) }
            let values = parameters.map { strdup($0.1) }
            defer {
                keywords.forEach { free($0) }
                values.forEach { free($0) }
            }
            let keywordPointers = keywords.map { UnsafePointer($0) } + [nil]
            let valuePointers = values.map { UnsafePointer($0) } + [nil]
            conn = PQconnectdbParams(keywordPointers, valuePointers, 0)
        }
        guard let conn else {
            machine.connectFailed(now: Self.now(), jitter: Double.random(in: 0..<1))
            throw PostgresError(.connection, message: "libpq could not allocate a connection")
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = connectionMessage(conn)
            machine.connectFailed(now: Self.now(), jitter: Double.random(in: 0..<1))
            logger.warning(
                "postgres connect failed",
                metadata: ["target": "\(configuration)", "error": "\(message)"])
            throw PostgresError(.connection, message: message)
        }
        // Notices ("relation already exists, skipping") would otherwise go to stderr as plain text.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        let generation = machine.connectSucceeded()
        logger.info("postgres connected", metadata: ["target": "\(configuration)", "session": "\(generation)"])
        return (conn, generation)
    }

    func connectionMessage(_ conn: OpaquePointer) -> String {
        configuration.scrub(String(cString: PQerrorMessage(conn)).trimmingTrailingNewlines())
    }

    func close() {
        if machine.closeRequested() == .finish { finish() }
    }

    func finish() {
        if let conn { PQfinish(conn) }
        conn = nil
    }

    /// Reports a failed operation: a dead connection becomes `.connectionLost` and is reset next time.
    func failure(_ result: OpaquePointer?, conn: OpaquePointer) -> PostgresError {
        if PQstatus(conn) == CONNECTION_BAD {
            machine.connectionLost(now: Self.now())
            let message = result.map { String(cString: PQresultErrorMessage($0)) } ?? connectionMessage(conn)
            return PostgresError(
                .connectionLost, message: configuration.scrub(message.trimmingTrailingNewlines()),
                sqlState: result.flatMap { Self.field($0, "C") })
        }
        guard let result else { return PostgresError(.protocolViolation, message: connectionMessage(conn)) }
        let message =
            Self.field(result, "M") ?? String(cString: PQresultErrorMessage(result)).trimmingTrailingNewlines()
        return PostgresError(
            .server, message: configuration.scrub(message), sqlState: Self.field(result, "C"),
            detail: Self.field(result, "D").map(configuration.scrub), hint: Self.field(result, "H"))
    }

    private static func field(_ result: OpaquePointer, _ code: Unicode.Scalar) -> String? {
        PQresultErrorField(result, Int32(code.value)).map { String(cString: $0) }
    }

    static func execParams(_ conn: OpaquePointer, _ sql: String, _ parameters: [String?]) -> OpaquePointer? {
        if parameters.isEmpty {
            return PQexecParams(conn, sql, 0, nil, nil, nil, nil, 0)
        }
        let copies = parameters.map { $0.map { strdup($0) } ?? nil }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { $0.map { UnsafePointer($0) } }
        return PQexecParams(conn, sql, Int32(parameters.count), nil, pointers, nil, nil, 0)
    }

    /// Turns a result into rows (or the error it carries) and frees it.
    static func check(
        _ result: OpaquePointer?, conn: OpaquePointer, expect: ExecStatusType?, session: Session
    ) throws(PostgresError) -> PostgresQueryResult {
        guard let result else { throw session.failure(nil, conn: conn) }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK:
            if let expect, expect != status, !(expect == PGRES_COMMAND_OK && status == PGRES_TUPLES_OK) {
                throw PostgresError(
                    .protocolViolation, message: "unexpected result \(String(cString: PQresStatus(status)))")
            }
            return rows(result)
        case PGRES_EMPTY_QUERY:
            return PostgresQueryResult(columns: [], rows: [], affectedRows: 0)
        case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
            throw PostgresError(.protocolViolation, message: "COPY must go through copyFrom")
        default:
            throw session.failure(result, conn: conn)
        }
    }

    private static func rows(_ result: OpaquePointer) -> PostgresQueryResult {
        let fieldCount = PQnfields(result)
        let tupleCount = PQntuples(result)
        var columns: [String] = []
        columns.reserveCapacity(Int(fieldCount))
        for f in 0..<fieldCount { columns.append(String(cString: PQfname(result, f))) }
        var rows: [PostgresRow] = []
        rows.reserveCapacity(Int(tupleCount))
        for t in 0..<tupleCount {
            var values: [String?] = []
            values.reserveCapacity(Int(fieldCount))
            for f in 0..<fieldCount {
                values.append(PQgetisnull(result, t, f) == 1 ? nil : String(cString: PQgetvalue(result, t, f)))
            }
            rows.append(PostgresRow(columns: columns, values: values))
        }
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PostgresQueryResult(columns: columns, rows: rows, affectedRows: affected)
    }

    /// COPY … FROM STDIN: start, send each piece `producer` makes, end, collect the final result.
    func copy<P: CopyProducer>(_ conn: OpaquePointer, _ sql: String, _ producer: inout P) throws(PostgresError) -> Int {
        guard let start = PQexecParams(conn, sql, 0, nil, nil, nil, nil, 0) else { throw failure(nil, conn: conn) }
        guard PQresultStatus(start) == PGRES_COPY_IN else {
            defer { PQclear(start) }
            if PQresultStatus(start) == PGRES_COMMAND_OK || PQresultStatus(start) == PGRES_TUPLES_OK {
                throw PostgresError(.protocolViolation, message: "copyFrom needs a COPY … FROM STDIN statement")
            }
            throw failure(start, conn: conn)
        }
        PQclear(start)
        var sendError: String?
        var piece: [UInt8] = []
        while sendError == nil, producer.next(into: &piece) {
            let sent = piece.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(conn, $0.baseAddress, Int32($0.count)) }
            }
            if sent != 1 { sendError = connectionMessage(conn) }
            piece.removeAll(keepingCapacity: true)
        }
        if PQputCopyEnd(conn, sendError) != 1, sendError == nil { sendError = connectionMessage(conn) }
        // Drain every result so the connection is ready for the next statement.
        var outcome: Result<Int, PostgresError> = .failure(
            PostgresError(.copy, message: sendError ?? "COPY ended without a result"))
        while let result = PQgetResult(conn) {
            if PQresultStatus(result) == PGRES_COMMAND_OK {
                outcome = .success(Int(String(cString: PQcmdTuples(result))) ?? 0)
            } else {
                outcome = .failure(failure(result, conn: conn))
            }
            PQclear(result)
        }
        if PQstatus(conn) == CONNECTION_BAD, case .success = outcome {
            outcome = .failure(failure(nil, conn: conn))
        }
        return try outcome.get()
    }
}
