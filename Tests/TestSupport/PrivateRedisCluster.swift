import Foundation
import TERedis

/// A Redis Cluster of a test's own (3 masters, 1 replica each, on free ports, the services' ACL users from
/// `aclFile`), for tests that kill a master: the shared cluster of `make test` is never failed over.
/// `cluster-node-timeout` 1 s, so a replica takes over a killed master within a few seconds.
public final class PrivateRedisCluster: Sendable {
    public let ports: [Int]
    private let nodes: [ChildProcess]
    private let directory: URL

    public init(aclFile: String? = nil) async throws {
        guard let aclFile = aclFile ?? ProcessInfo.processInfo.environment["REDIS_ACL_FILE_STRICT"], !aclFile.isEmpty
        else {
            throw MissingServerError(variable: "REDIS_ACL_FILE_STRICT")
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-cluster-\(UUID().uuidString)")
        var ports: [Int] = []
        var nodes: [ChildProcess] = []
        for _ in 0..<6 {
            let port = try Self.freeClusterPort(excluding: ports)
            let dir = directory.appendingPathComponent("\(port)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            nodes.append(
                try ChildProcess(
                    "redis-server",
                    arguments: [
                        "--port", String(port), "--bind", "127.0.0.1", "--dir", dir.path, "--save", "", "--appendonly",
                        "no",
                        "--daemonize", "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0", "--aclfile", aclFile
                    ]))
            ports.append(port)
        }
        self.ports = ports
        self.nodes = nodes
        for port in ports {
            let up = await TestEnv.eventually(timeout: .seconds(10)) { TestEnv.accepts(port: port) }
            guard up else { throw ChildProcessError(description: "cluster node \(port) did not start") }
        }
        let create = try ChildProcess(
            "redis-cli",
            arguments: ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + [
                "--cluster-replicas", "1", "--cluster-yes"
            ])
        guard try await create.waitForExit(timeout: .seconds(60)) == 0 else {
            throw ChildProcessError(description: "redis-cli --cluster create failed: \(create.output())")
        }
        let configuration = try RedisConfiguration(url: url)
        let ready = await TestEnv.eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            for port in ports {
                let node = RedisClient(
                    configuration: (try? RedisConfiguration(url: "redis://127.0.0.1:\(port)/0"))!, name: "node")
                defer { node.close() }
                guard let info = try? await node.send("CLUSTER", "INFO").string, info.contains("cluster_state:ok")
                else { return false }
            }
            // Ready once every master has its replica online (synced): before that a write is on the master
            // only, and a test that kills the master would lose it.
            // (A new client each time: a client re-reads a complete map only when it is known to be stale.)
            let client = RedisClient(configuration: configuration, name: "private-cluster")
            defer { client.close() }
            guard let map = try? await client.clusterSlotMap(), map.coversAllSlots, map.masters.count == 3 else {
                return false
            }
            return map.masters.allSatisfy { map.replicas(of: $0) == 1 }
        }
        guard ready else { throw ChildProcessError(description: "private cluster did not become ready") }
    }

    /// A port whose cluster bus port (port + 10000) is free too; Redis refuses ports above 55535.
    static func freeClusterPort(excluding taken: [Int]) throws -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: 20_000...45_000)
            if !taken.contains(port), !taken.contains(port - 10_000), isFree(port), isFree(port + 10_000) {
                return port
            }
        }
        throw ChildProcessError(description: "no free port pair for a cluster node")
    }

    static func isFree(_ port: Int) -> Bool {
        guard let (fd, _) = try? TestEnv.boundLoopbackSocket(port: port) else { return false }
        close(fd)
        return true
    }

    /// `redis+cluster://` over every node.
    public var url: String { "redis+cluster://" + ports.map { "127.0.0.1:\($0)" }.joined(separator: ",") + "/0" }

    /// SIGKILLs the node on `port` (a master: its replica takes over after the node timeout).
    public func kill(port: Int) async throws {
        guard let i = ports.firstIndex(of: port) else { return }
        nodes[i].kill9()
        _ = try await nodes[i].waitForExit(timeout: .seconds(10))
    }

    public func shutdown() async {
        for node in nodes where node.isRunning {
            node.kill9()
            _ = try? await node.waitForExit(timeout: .seconds(10))
        }
        try? FileManager.default.removeItem(at: directory)
    }
}
