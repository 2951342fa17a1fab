import Foundation
import Testing
import TritonClient

/// A private tritonserver (own ports, own state dir, optionally its own model repository) that a test stops,
/// restarts or feeds a tampered artefact, so the shared server is never disturbed. Started through
/// scripts/dev-triton.sh, the same path `make dev-up` uses.
struct PrivateTriton {
    let grpcPort: Int
    let httpPort: Int
    let metricsPort: Int
    let state: URL
    /// TRITON_MODEL_REPOSITORY for dev-triton.sh; nil: the checkout's deploy/triton/model_repository.
    var modelRepository: URL?

    init(modelRepository: URL? = nil) throws {
        self.modelRepository = modelRepository
        grpcPort = try freePort()
        httpPort = try freePort()
        metricsPort = try freePort()
        state = FileManager.default.temporaryDirectory.appendingPathComponent("triton-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
    }

    /// Runs scripts/dev-triton.sh for this server. posix_spawn + waitpid rather than Foundation's Process:
    /// Process notices the child's exit through a descriptor that the backgrounded tritonserver inherits, so it
    /// would wait for the server to exit too.
    func start() async throws {
        let status = try await runScript()
        try #require(status == 0, "dev-triton.sh failed (\(status)); see \(state.path)/logs/triton.log")
    }

    /// dev-triton.sh's exit status: 0 once versions 1 and 2 are READY.
    func runScript() async throws -> Int32 {
        var env = ProcessInfo.processInfo.environment
        env["TRITON_STATE"] = state.path
        if let modelRepository { env["TRITON_MODEL_REPOSITORY"] = modelRepository.path }
        if env["TRITON_VENV"] == nil { env["TRITON_VENV"] = repositoryRoot.appendingPathComponent(".dev/venv").path }
        let script = repositoryRoot.appendingPathComponent("scripts/dev-triton.sh").path
        let arguments: [String] = [script, String(grpcPort), String(httpPort), String(metricsPort)]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        var envp: [UnsafeMutablePointer<CChar>?] = env.map { (key: String, value: String) in strdup(key + "=" + value) }
        envp.append(nil)
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        // The test process's threads block signals; without a reset the server would inherit the mask and
        // never see SIGTERM.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, script, nil, &attributes, argv, envp)
        try #require(rc == 0, "posix_spawn dev-triton.sh: \(rc)")
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 { try await Task.sleep(for: .milliseconds(50)) }
        return status
    }

    /// The server's log (dev-triton.sh writes it under the state dir).
    func log() -> String {
        (try? String(contentsOf: state.appendingPathComponent("logs/triton.log"), encoding: .utf8)) ?? ""
    }

    /// The server's process group, recorded by dev-triton.sh.
    func processGroup() throws -> Int32? {
        guard FileManager.default.fileExists(atPath: state.appendingPathComponent("run/triton.pgid").path) else {
            return nil
        }
        let text = try String(contentsOf: state.appendingPathComponent("run/triton.pgid"), encoding: .utf8)
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// SIGTERM to the server's process group (the server and its Python stubs; dev-triton.sh starts it with
    /// setsid), then waits until the group is gone (SIGKILL after 20 s). Also the test's cleanup.
    func stop() throws {
        guard let group = try processGroup() else { return }
        kill(-group, SIGTERM)
        for _ in 0..<200 where kill(-group, 0) == 0 { usleep(100_000) }
        if kill(-group, 0) == 0 {
            kill(-group, SIGKILL)
            usleep(200_000)
        }
    }
}

@Suite(.timeLimit(.minutes(3)))
struct RestartTests {
    @Test func stoppedServerFailsFastAndRestartedServerServesTheSameClient() async throws {
        _ = try tritonURL()  // the shared dev server must exist too: its venv is the one we reuse
        let server = try PrivateTriton()
        try await server.start()
        defer {
            try? server.stop()
            try? FileManager.default.removeItem(at: server.state)
        }
        let client = try TritonClient(url: "127.0.0.1:\(server.grpcPort)")
        let weights = try ModelWeights.load(version: "1")
        let row = sampleRows(1, seed: 11, weights: weights)
        let before = try await client.infer(
            model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.seconds(10)))
        try expectScores(before, rows: row, weights: weights)

        let group = try #require(try server.processGroup())
        #expect(kill(-group, 0) == 0)
        try server.stop()
        #expect(kill(-group, 0) != 0, "processes of the server's group (its Python stubs) outlived it")
        do {
            _ = try await client.infer(
                model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.seconds(10)))
            Issue.record("inference succeeded on a stopped server")
        } catch let error as TritonError {
            // A connection error, not deadlineExceeded: the lost server is noticed, not waited out.
            #expect(error.code == .connection, "got \(error)")
        }

        try await server.start()
        var after: [Float] = []
        let giveUp = ContinuousClock.now + .seconds(60)
        while after.isEmpty && ContinuousClock.now < giveUp {
            do {
                after = try await client.infer(
                    model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.seconds(10)))
            } catch let error as TritonError where error.code == .connection || error.code == .unavailable {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        try expectScores(after, rows: row, weights: weights)
        #expect(after.count == 1)
    }
}
