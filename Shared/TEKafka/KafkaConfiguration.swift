import CRdKafka
import Foundation
import Synchronization
import TECore

/// Connection settings shared by producers, consumers and tools.
///
/// `fromEnvironment` reads `KAFKA_BROKERS` (required) and passes any librdkafka property through
/// `KAFKA_CONF_<property with dots as underscores>`, e.g. `KAFKA_CONF_fetch_wait_max_ms=10`
/// → `fetch.wait.max.ms=10`. Pass-through properties are applied last, so they win over the defaults.
public struct KafkaConfiguration: Sendable {
    /// `bootstrap.servers`.
    public var brokers: String
    /// Extra librdkafka properties, applied after this wrapper's defaults.
    public var properties: [String: String]

    public init(brokers: String, properties: [String: String] = [:]) {
        self.brokers = brokers
        self.properties = properties
    }

    public static func fromEnvironment(_ env: Env = Env()) throws(ConfigurationError) -> KafkaConfiguration {
        let brokers = try env.string("KAFKA_BROKERS", hint: "host:port[,host:port…] of the Kafka bootstrap servers")
        return KafkaConfiguration(brokers: brokers, properties: passThroughProperties(env.values))
    }

    /// `KAFKA_CONF_fetch_wait_max_ms=10` → `["fetch.wait.max.ms": "10"]`.
    public static func passThroughProperties(_ environment: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix("KAFKA_CONF_") {
            let property = name.dropFirst("KAFKA_CONF_".count).replacingOccurrences(of: "_", with: ".")
            if !property.isEmpty { out[property] = value }
        }
        return out
    }

    /// A new `rd_kafka_conf_t` with `defaults`, then the brokers, then the pass-through properties, logging
    /// through `context`'s logger (which the caller keeps alive until the client is destroyed).
    /// The caller owns the result (it passes it to `rd_kafka_new`, which takes ownership on success).
    func makeConf(context: ClientContext, defaults: [String: String]) throws(KafkaError) -> OpaquePointer {
        let conf = rd_kafka_conf_new()!
        KafkaLog.install(on: conf, context: context)
        var all = defaults
        all["bootstrap.servers"] = brokers
        for (k, v) in properties { all[k] = v }
        for (key, value) in all.sorted(by: { $0.key < $1.key }) {
            var errstr = [CChar](repeating: 0, count: 512)
            let result = rd_kafka_conf_set(conf, key, value, &errstr, errstr.count)
            if result != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                let text = String(
                    decoding: errstr.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                throw KafkaError(
                    code: .invalidConfiguration, message: "Kafka property \(key): \(text)", isRetriable: false)
            }
        }
        return conf
    }
}

/// One Kafka message header.
public struct KafkaHeader: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    public init(key: String, value: [UInt8]) {
        self.key = key
        self.value = value
    }
    public init(key: String, string: String) {
        self.init(key: key, value: Array(string.utf8))
    }
}

func makeClient(type: rd_kafka_type_t, conf: OpaquePointer) throws(KafkaError) -> OpaquePointer {
    var errstr = [CChar](repeating: 0, count: 512)
    guard let handle = rd_kafka_new(type, conf, &errstr, errstr.count) else {
        rd_kafka_conf_destroy(conf)
        let text = String(decoding: errstr.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        throw KafkaError(code: .invalidConfiguration, message: "rd_kafka_new: \(text)", isRetriable: false)
    }
    return handle
}

/// An `rd_kafka_t *` lent to a dedicated thread.
///
/// `@unchecked Sendable`: librdkafka documents its client handle as thread-safe for the calls made through
/// it here (poll, flush, consumer poll, commit, assignment queries); the owning class destroys it only after
/// every thread using it has finished.
struct KafkaHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// Tells a dedicated polling thread to finish.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
