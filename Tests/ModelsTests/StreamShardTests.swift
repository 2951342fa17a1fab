import TEModels
import Testing

@Suite struct StreamShardTests {
    /// The published FNV-1a-32 test vectors ("", "a", "foobar") and symbols hashed independently.
    @Test func fnv1a32MatchesReferenceValues() {
        #expect(StreamKey.fnv1a32("") == 0x811C_9DC5)  // the offset basis: nothing hashed
        // "a": (0x811c9dc5 ^ 0x61) * 16777619 mod 2^32.
        #expect(StreamKey.fnv1a32("a") == 0xE40C_292C)
        #expect(StreamKey.fnv1a32("foobar") == 0xBF9C_F968)
        #expect(StreamKey.fnv1a32("BTCUSDT") == 3_895_251_564)
        #expect(StreamKey.fnv1a32("ETHUSDT") == 1_617_942_128)
        #expect(StreamKey.fnv1a32("BTC-PERP") == 2_221_979_314)
    }

    @Test func shardIsTheHashModuloTheShardCount() {
        #expect(StreamKey.shard(of: "BTCUSDT", shards: 4) == 0)  // 3895251564 mod 4
        #expect(StreamKey.shard(of: "ETHUSDT", shards: 3) == 2)  // 1617942128 mod 3
        #expect(StreamKey.shard(of: "BTC-PERP", shards: 4) == 2)  // 2221979314 mod 4
        for symbol in ["BTCUSDT", "ETHUSDT", "XBT/USD"] { #expect(StreamKey.shard(of: symbol, shards: 1) == 0) }
    }

    @Test func shardedNamesCarryTheShardAsAHashTag() {
        #expect(StreamKey.ticks(for: "ETHUSDT", shards: 3) == "te:ticks:{2}")
        #expect(StreamKey.features(for: "BTC-PERP", shards: 4) == "te:features:{2}")
        #expect(StreamKey.signals(for: "BTCUSDT", shards: 4) == "te:signals:{0}")
        #expect(StreamKey.allShards(StreamKey.ticks, shards: 3) == ["te:ticks:{0}", "te:ticks:{1}", "te:ticks:{2}"])
    }

    @Test func oneShardKeepsTheUnshardedNames() {
        #expect(StreamKey.ticks(for: "BTCUSDT", shards: 1) == StreamKey.ticks)
        #expect(StreamKey.features(for: "ETHUSDT", shards: 1) == "te:features")
        #expect(StreamKey.allShards(StreamKey.signals, shards: 1) == ["te:signals"])
    }
}
