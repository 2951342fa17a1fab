import Foundation
import TERedis

/// A server an integration test needs is not configured: the test fails (never skips).
public struct MissingServerError: Error, CustomStringConvertible {
    public let variable: String
    public var description: String {
        "\(variable) is not set: run the tests through `make test` (or `source .dev/env`), which starts the servers"
    }
}

public enum TestEnv {
    /// Whether something listens on 127.0.0.1:`port` (a TCP connect succeeds).
    public static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        } == 0
    }

    /// `REDIS_URL`, or an error that fails the test.
    public static func redisURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["REDIS_URL"], !url.isEmpty else {
            throw MissingServerError(variable: "REDIS_URL")
        }
        return url
    }

    /// `REDIS_CLUSTER_URL` (the shared 3-master cluster `make test` starts), or an error that fails the test.
    public static func redisClusterURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"], !url.isEmpty else {
            throw MissingServerError(variable: "REDIS_CLUSTER_URL")
        }
        return url
    }

    public static func redisConfiguration() throws -> RedisConfiguration {
        try RedisConfiguration(url: redisURL())
    }

    /// A key / stream / group name no other test (or run) uses: `test:<prefix>:<pid>:<random>`.
    public static func uniqueName(_ prefix: String) -> String {
        let random = UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF
        return "test:\(prefix):\(ProcessInfo.processInfo.processIdentifier):\(String(random, radix: 36))"
    }

    /// Where built executables are: `TE_BIN_DIR`, default `.build/debug`.
    public static var binDirectory: URL {
        URL(fileURLWithPath: ProcessInfo.processInfo.environment["TE_BIN_DIR"] ?? ".build/debug")
    }

    /// A TCP port that was free a moment ago (bound to port 0 and released).
    public static func freePort() throws -> Int {
        let (fd, port) = try boundLoopbackSocket()
        close(fd)
        return port
    }

    /// A TCP socket bound to 127.0.0.1 on `port` (0: a free one), and that port; the caller closes it.
    static func boundLoopbackSocket(port: Int = 0) throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// Polls `condition` until it holds or `timeout` passes; false on timeout.
    public static func eventually(
        timeout: Duration = .seconds(10), every interval: Duration = .milliseconds(50),
        _ condition: () async throws -> Bool
    ) async rethrows -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: interval)
        }
        return try await condition()
    }
}

/// A TCP port on loopback that accepts connections (the kernel completes the handshake into the backlog)
/// and never answers: a hung server, for deadline tests.
public final class SilentTCPListener: Sendable {
    public let port: Int
    private let fd: Int32

    public init() throws {
        (fd, port) = try TestEnv.boundLoopbackSocket()
        guard listen(fd, 128) == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
    }

    deinit { close(fd) }
}
