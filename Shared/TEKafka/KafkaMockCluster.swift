import CRdKafka
import Foundation
import Logging

/// Kafka protocol API keys, for request error injection.
public enum KafkaAPIKey: Int16, Sendable {
    case produce = 0
    case fetch = 1
    case listOffsets = 2
    case metadata = 3
    case offsetCommit = 8
    case offsetFetch = 9
    case findCoordinator = 10
    case joinGroup = 11
    case heartbeat = 12
    case leaveGroup = 13
    case syncGroup = 14
}

/// librdkafka's in-process mock Kafka cluster: real brokers on loopback (ephemeral ports) speaking the Kafka
/// protocol, including consumer groups and offset commits. Hosts the dev broker and lets tests inject faults.
///
/// `@unchecked Sendable`: the mock cluster runs on its own thread and librdkafka serializes every
/// `rd_kafka_mock_*` call onto it (they are documented thread-safe); the handles are destroyed once, in
/// `deinit`.
public final class KafkaMockCluster: @unchecked Sendable {
    private let client: OpaquePointer
    private let cluster: OpaquePointer
    private let context: ClientContext
    /// `host:port,…` to use as `bootstrap.servers`.
    public let bootstrapServers: String

    public init(brokers: Int = 1) throws(KafkaError) {
        let context = ClientContext(logger: Logger(label: "kafka-mock-cluster"))
        self.context = context
        let conf = try KafkaConfiguration(brokers: "").makeConf(context: context, defaults: ["log_level": "3"])
        client = try makeClient(type: RD_KAFKA_PRODUCER, conf: conf)
        guard let cluster = rd_kafka_mock_cluster_new(client, Int32(brokers)) else {
            rd_kafka_destroy(client)
            throw KafkaError(code: .invalidArgument, message: "could not create a mock cluster", isRetriable: false)
        }
        self.cluster = cluster
        bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(cluster))
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(client)
    }

    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int = 1) throws(KafkaError) {
        let err = rd_kafka_mock_topic_create(cluster, name, Int32(partitions), Int32(replicationFactor))
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "create topic \(name)") }
    }

    /// The next `errors.count` requests of `api` (to any broker) fail with these codes, in order.
    public func pushRequestErrors(_ api: KafkaAPIKey, _ errors: [KafkaErrorCode]) {
        let codes = errors.map { rd_kafka_resp_err_t(rawValue: $0.rawValue) }
        rd_kafka_mock_push_request_errors_array(cluster, api.rawValue, codes.count, codes)
    }

    /// Drops pending injected errors of `api`.
    public func clearRequestErrors(_ api: KafkaAPIKey) {
        rd_kafka_mock_clear_request_errors(cluster, api.rawValue)
    }

    /// Makes the topic's requests fail with `error` (`.noError` clears it).
    public func setTopicError(_ topic: String, _ error: KafkaErrorCode) {
        rd_kafka_mock_topic_set_error(cluster, topic, rd_kafka_resp_err_t(rawValue: error.rawValue))
    }

    /// Broker ids are 1…brokers. A down broker closes its connections and refuses new ones.
    public func setBrokerDown(_ brokerID: Int32) { rd_kafka_mock_broker_set_down(cluster, brokerID) }
    public func setBrokerUp(_ brokerID: Int32) { rd_kafka_mock_broker_set_up(cluster, brokerID) }
}
