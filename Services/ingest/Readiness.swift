import Synchronization
import TEKafka

/// ingest's `/readyz` checks (DESIGN.md "Health": ingest covers Redis and the Kafka brokers). Each answers
/// within `deadline` whatever its dependency does: a check that has not finished by then fails, and is left
/// to finish in the background instead of being awaited (a Redis client reconnecting, or librdkafka
/// waiting on a dead broker, must not hold `/readyz` past the 100 ms a probe gets).
enum IngestReadiness {
    static let deadline = Duration.milliseconds(80)

    struct TimedOut: Error, CustomStringConvertible {
        let after: Duration
        var description: String { "no answer within \(after)" }
    }

    /// Runs `check` unstructured and returns when it finished or `timeout` passed, whichever is first.
    static func within(_ timeout: Duration, _ check: @escaping @Sendable () async throws -> Void) async throws {
        let outcome = FirstOutcome()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            outcome.wait(continuation)
            let work = Task {
                do {
                    try await check()
                    outcome.finish(.success(()))
                } catch {
                    outcome.finish(.failure(error))
                }
            }
            Task {
                try? await Task.sleep(for: timeout)
                outcome.finish(.failure(TimedOut(after: timeout)))
                work.cancel()
            }
        }
    }

    /// Resumes a continuation with the first result it is given; later ones are dropped.
    private final class FirstOutcome: Sendable {
        private let continuation = Mutex<CheckedContinuation<Void, any Error>?>(nil)
        func wait(_ c: CheckedContinuation<Void, any Error>) { continuation.withLock { $0 = c } }
        func finish(_ result: Result<Void, any Error>) {
            continuation.withLock { c in
                c?.resume(with: result)
                c = nil
            }
        }
    }
}

/// The consumer, once the service created it: Kafka readiness asks it whether a broker answers.
final class KafkaReadiness: Sendable {
    private let consumer = Mutex<KafkaConsumer?>(nil)

    struct NotStarted: Error, CustomStringConvertible {
        var description: String { "the Kafka consumer is not created yet" }
    }

    func set(_ consumer: KafkaConsumer) { self.consumer.withLock { $0 = consumer } }

    func check() async throws {
        guard let consumer = consumer.withLock({ $0 }) else { throw NotStarted() }
        try await consumer.brokersReachable(timeout: IngestReadiness.deadline)
    }
}
