// Local Kafka for development and tests: librdkafka's mock cluster, hosted until SIGTERM/SIGINT.
// Mock brokers bind ephemeral ports, so the bootstrap servers are written to --bootstrap-file.
import ArgumentParser
import Foundation
import TEKafka

@main
struct DevBroker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev-broker", abstract: "Hosts librdkafka's mock Kafka cluster for local development.")

    @Option(help: "Number of mock brokers.") var brokers = 1
    @Option(help: "Topics to create, as name or name:partitions (repeatable).") var topic: [String] = ["ticks"]
    @Option(help: "Partitions of topics given without a count.") var partitions = 3
    @Option(help: "Write the bootstrap servers to this file (written atomically once ready).")
    var bootstrapFile: String?

    func run() async throws {
        let cluster = try KafkaMockCluster(brokers: brokers)
        for spec in topic {
            let parts = spec.split(separator: ":", maxSplits: 1)
            let count = parts.count == 2 ? Int(parts[1]) ?? partitions : partitions
            try cluster.createTopic(String(parts[0]), partitions: count)
        }
        if let bootstrapFile {
            let tmp = bootstrapFile + ".tmp"
            try Data((cluster.bootstrapServers + "\n").utf8).write(to: URL(fileURLWithPath: tmp))
            _ = rename(tmp, bootstrapFile)
        }
        log("dev-broker: \(brokers) broker(s) at \(cluster.bootstrapServers), topics \(topic.joined(separator: ","))")

        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let signals = [SIGTERM, SIGINT].map { DispatchSource.makeSignalSource(signal: $0, queue: .main) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let once = OnceFlag()
            for source in signals {
                source.setEventHandler { if once.claim() { continuation.resume() } }
                source.resume()
            }
        }
        if let bootstrapFile { try? FileManager.default.removeItem(atPath: bootstrapFile) }
        log("dev-broker: stopping")
        withExtendedLifetime(cluster) {}
    }
}

/// Resumes the continuation once, whichever signal comes first (handlers run on the main queue).
final class OnceFlag: @unchecked Sendable {
    // Only touched from DispatchQueue.main, which is serial.
    private var done = false
    func claim() -> Bool {
        if done { return false }
        done = true
        return true
    }
}

private func log(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
