import Foundation

public struct ChildProcessError: Error, CustomStringConvertible {
    public let description: String
}

/// A child process started by a test (a built service executable, a private redis-server), with
/// signals and bounded waits. Output goes to a temporary log file, shown by `output()`.
public final class ChildProcess: Sendable {
    private let process: Process
    public let logFile: URL
    public let name: String

    /// Starts `executable` (an absolute path, or a name looked up on PATH).
    public init(_ executable: String, arguments: [String] = [], environment: [String: String] = [:]) throws {
        let process = Process()
        if executable.contains("/") {
            process.executableURL = URL(fileURLWithPath: executable)
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        }
        process.arguments = executable.contains("/") ? arguments : [executable] + arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let name = (executable as NSString).lastPathComponent
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        self.logFile = log
        self.name = name
    }

    /// A built executable of this package: `$TE_BIN_DIR/<product>` (default `.build/debug`), run as its
    /// own store users (`StoreUsers`).
    public static func built(_ product: String, arguments: [String] = [], environment: [String: String] = [:]) throws
        -> ChildProcess
    {
        let path = TestEnv.binDirectory.appendingPathComponent(product).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw ChildProcessError(
                description: "\(path) is not built (swift build --product \(product), or set TE_BIN_DIR)")
        }
        let inherited = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        return try ChildProcess(
            path, arguments: arguments, environment: try StoreUsers.environment(for: product, inherited))
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }
    public func terminate() { signal(SIGTERM) }
    public func kill9() { signal(SIGKILL) }

    /// Waits for the process to exit; its exit status, or an error after `timeout` (the process is
    /// then killed).
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(15)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                kill9()
                throw ChildProcessError(description: "\(name) did not exit within \(timeout); output:\n\(output())")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    public func output() -> String {
        (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
    }

    deinit {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}

/// A redis-server of a test's own (for restarts), on a free port, with no persistence.
public final class PrivateRedisServer: Sendable {
    public let port: Int
    private let server: ChildProcess

    /// `aclFile`: default `REDIS_ACL_FILE_STRICT` (from .dev/env, rendered when the servers started);
    /// `StoreUsers.renderStrictACL()` renders this checkout's deploy/redis/users.acl instead.
    public init(port: Int? = nil, aclFile: String? = nil) async throws {
        let port = try port ?? TestEnv.freePort()
        self.port = port
        // The services' ACL users on their real key names.
        guard let aclFile = aclFile ?? ProcessInfo.processInfo.environment["REDIS_ACL_FILE_STRICT"], !aclFile.isEmpty
        else {
            throw MissingServerError(variable: "REDIS_ACL_FILE_STRICT")
        }
        self.server = try ChildProcess(
            "redis-server",
            arguments: [
                "--port", String(port), "--save", "", "--appendonly", "no", "--daemonize", "no", "--bind", "127.0.0.1",
                "--aclfile", aclFile
            ])
        let up = await TestEnv.eventually(timeout: .seconds(10)) { TestEnv.accepts(port: port) }
        guard up else {
            throw ChildProcessError(description: "redis-server on \(port) did not start: \(server.output())")
        }
    }

    public var url: String { "redis://127.0.0.1:\(port)/0" }

    /// SIGSTOP / SIGCONT: a server that keeps its connections but answers nothing, then recovers.
    public func pause() { server.signal(SIGSTOP) }
    public func resume() { server.signal(SIGCONT) }

    public func kill() async throws {
        server.kill9()
        try await server.waitForExit(timeout: .seconds(10))
    }
}
