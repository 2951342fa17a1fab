import Logging
import Testing

@testable import TEKafka

@Suite("librdkafka log lines")
struct KafkaLogTests {
    @Test("syslog levels 0–7 map onto Logger levels")
    func levels() {
        #expect(
            (0...7).map { KafkaLog.level(syslog: $0) } == [
                .critical, .critical, .critical, .error, .warning, .notice, .info, .debug
            ])
        #expect(KafkaLog.level(syslog: 9) == .debug)
    }

    @Test("librdkafka's offset reset line names topic, partition and offset; other lines are not resets")
    func offsetResetLine() {
        let line =
            "[thrd:main]: ticks-a [2]: offset reset (at offset 200, broker 1) to BEGINNING: fetch failed due to requested offset not available on the broker: Broker: Offset out of range"
        #expect(
            OffsetResetLine.parse(facility: "OFFSET", line)
                == OffsetResetLine(
                    topic: "ticks-a", partition: 2, offset: 200,
                    reason:
                        "fetch failed due to requested offset not available on the broker: Broker: Offset out of range")
        )
        #expect(
            OffsetResetLine.parse(
                facility: "OFFSET", "ticks [0]: offset reset (at offset 7, broker 1) to cached BEGINNING offset 9: x: y"
            )?.offset == 7)
        #expect(OffsetResetLine.parse(facility: "FETCH", line) == nil)
        #expect(
            OffsetResetLine.parse(facility: "OFFSET", "[thrd:main]: ticks [x]: offset reset (at offset 1, broker 1)")
                == nil)
        #expect(OffsetResetLine.parse(facility: "OFFSET", "ticks [0]: committed offset 5") == nil)
    }
}
