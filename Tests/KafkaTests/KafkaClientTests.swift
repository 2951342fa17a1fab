import Foundation
import Logging
import TECore
import TEKafka
import Testing

@Suite("TEKafka against librdkafka's mock cluster", .timeLimit(.minutes(2)))
struct KafkaClientTests {
    @Test("produce → consume round trip keeps key, value, timestamp and headers; commits resume the group")
    func roundTrip() async throws {
        let cluster = try KafkaMockCluster(brokers: 1)
        let topic = "roundtrip"
        try cluster.createTopic(topic, partitions: 2)
        let config = KafkaConfiguration(brokers: cluster.bootstrapServers)
        let producer = try KafkaProducer(configuration: config, logger: Logger(label: "test"))
        var deliveries: [KafkaDelivery] = []
        for i in 0..<10 {
            deliveries.append(
                try await producer.send(
                    KafkaOutgoingMessage(
                        topic: topic, key: Array("SYM\(i % 2)".utf8), value: Array("value-\(i)".utf8),
                        timestampMs: 1_723_161_254_087 + Int64(i),
                        headers: [KafkaHeader(key: "ts_ns", string: "\(1_723_161_254_087_891_268 + Int64(i))")])))
        }
        #expect(deliveries.allSatisfy { $0.topic == topic && $0.offset >= 0 })

        let consumer = try KafkaConsumer(
            configuration: config, groupID: "g1", topics: [topic], logger: Logger(label: "test"))
        var received: [KafkaConsumerMessage] = []
        let deadline = ContinuousClock.now + .seconds(30)
        while received.count < 10, ContinuousClock.now < deadline {
            received += try await consumer.poll(maxMessages: 100, timeout: .milliseconds(200))
        }
        #expect(received.count == 10)
        for m in received {
            let i = Int(String(decoding: m.value, as: UTF8.self).dropFirst("value-".count))!
            #expect(m.key == Array("SYM\(i % 2)".utf8))
            #expect(m.timestampMs == 1_723_161_254_087 + Int64(i))
            #expect(m.header("ts_ns") == Array("\(1_723_161_254_087_891_268 + Int64(i))".utf8))
            #expect(m.source == "kafka:\(topic)/\(m.partition)@\(m.offset)")
        }
        // Per key (partition) in produce order.
        for key in ["SYM0", "SYM1"] {
            let values = received.filter { $0.key == Array(key.utf8) }.map(\.offset)
            #expect(values == values.sorted())
        }
        // Commit only the first 3 messages of each partition: a new member resumes after them.
        var done: [KafkaConsumerMessage] = []
        for p in Set(received.map(\.partition)) {
            done += received.filter { $0.partition == p }.sorted { $0.offset < $1.offset }.prefix(3)
        }
        try await consumer.commit(KafkaOffset.after(done))
        #expect(try await consumer.lag() == 0)
        await consumer.close()

        let again = try KafkaConsumer(
            configuration: config, groupID: "g1", topics: [topic], logger: Logger(label: "test"))
        var rest: [KafkaConsumerMessage] = []
        let deadline2 = ContinuousClock.now + .seconds(30)
        let remaining = Set(received.map { "\($0.partition)@\($0.offset)" }).subtracting(
            done.map { "\($0.partition)@\($0.offset)" })
        while rest.count < remaining.count, ContinuousClock.now < deadline2 {
            rest += try await again.poll(maxMessages: 100, timeout: .milliseconds(200))
        }
        #expect(Set(rest.map { "\($0.partition)@\($0.offset)" }) == remaining)
        #expect(rest.count == received.count - done.count)
        await again.close()
    }

    @Test("KAFKA_CONF_ properties pass through; a bad one is a clear error naming it")
    func configuration() throws {
        let config = try KafkaConfiguration.fromEnvironment(
            Env(["KAFKA_BROKERS": "127.0.0.1:1", "KAFKA_CONF_fetch_wait_max_ms": "7", "OTHER": "x"]))
        #expect(config.properties == ["fetch.wait.max.ms": "7"])
        #expect(
            throws: ConfigurationError(
                variable: "KAFKA_BROKERS",
                problem: "is required (host:port[,host:port…] of the Kafka bootstrap servers)")
        ) { try KafkaConfiguration.fromEnvironment(Env([:])) }
        let bad = KafkaConfiguration(brokers: "127.0.0.1:1", properties: ["no.such.property": "1"])
        do {
            _ = try KafkaProducer(configuration: bad, logger: Logger(label: "test"))
            Issue.record("accepted an unknown property")
        } catch {
            #expect(error.message.contains("no.such.property"))
            #expect(!error.isRetriable)
        }
    }

    @Test("a produce to a down broker fails with a retriable error; after it comes back, sends succeed")
    func brokerDown() async throws {
        let cluster = try KafkaMockCluster(brokers: 1)
        try cluster.createTopic("down", partitions: 1)
        let config = KafkaConfiguration(brokers: cluster.bootstrapServers, properties: ["message.timeout.ms": "1500"])
        let producer = try KafkaProducer(configuration: config, logger: Logger(label: "test"))
        try await producer.send(KafkaOutgoingMessage(topic: "down", key: nil, value: [1]))
        cluster.setBrokerDown(1)
        do {
            try await producer.send(KafkaOutgoingMessage(topic: "down", key: nil, value: [2]))
            Issue.record("delivered to a down broker")
        } catch {
            #expect(error.isRetriable, "\(error)")
        }
        cluster.setBrokerUp(1)
        // The client reconnects with backoff; sends succeed again within a generous deadline.
        var delivery: KafkaDelivery?
        let deadline = ContinuousClock.now + .seconds(60)
        while delivery == nil, ContinuousClock.now < deadline {
            delivery = try? await producer.send(KafkaOutgoingMessage(topic: "down", key: nil, value: [3]))
        }
        #expect((delivery?.offset ?? -1) >= 1)
    }
}
