import TEModels
import Testing

@testable import Ingest

@Suite("ingest: bytes reserved for a tick's fields (no servers)")
struct IngestFieldsCapacityTests {
    /// Levels of a USD-M depth update in the recording (prices to 0.1, sizes to 0.001), as parsed from its text.
    static let levels: [[Double]] = [
        [61496.5, 0.01], [61510.9, 12.345], [61641.5, 1.211], [61652.8, 0.195], [61653.3, 0.072],
        [61653.7, 0.067], [61657.9, 103.067], [61668.5, 0.086], [61670.6, 0.161], [61672.5, 0.821]
    ]

    static func quote(levels: Int) -> Tick {
        let side = (0..<levels).map { Self.levels[$0 % Self.levels.count] }
        return Tick.quote(
            symbol: "BTCUSDT", tsNs: 1_723_161_254_087_891_268, bid: 61496.5, bidSize: 12.345, ask: 61496.6,
            askSize: 0.008, bids: side, asks: side, venue: "binance-usdm")
    }

    @Test("a quote's fields with src and a trace's tp fit the reserved bytes", arguments: [0, 1, 10, 20])
    func fieldsFitTheReservation(levels: Int) throws {
        let tick = Self.quote(levels: levels)
        let capacity = IngestService.fieldsCapacity(of: tick)
        var fields = try tick.streamFields(capacity: capacity)
        fields.field("src", "2:123456789")
        fields.field("tp", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        #expect(fields.bytes.count <= capacity)
    }
}
