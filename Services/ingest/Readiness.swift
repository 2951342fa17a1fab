import Synchronization
import TEKafka

/// The consumer, once the service created it: Kafka readiness (DESIGN.md "Health": ingest covers Redis and
/// the Kafka brokers) asks it whether a broker answers within the time a /readyz probe gets.
final class KafkaReadiness: Sendable {
    private let consumer = Mutex<KafkaConsumer?>(nil)

    struct NotStarted: Error, CustomStringConvertible {
        var description: String { "the Kafka consumer is not created yet" }
    }

    func set(_ consumer: KafkaConsumer) { self.consumer.withLock { $0 = consumer } }

    func check() async throws {
        guard let consumer = consumer.withLock({ $0 }) else { throw NotStarted() }
        try await consumer.brokersReachable(timeout: .milliseconds(80))
    }
}
