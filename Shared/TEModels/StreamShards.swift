/// Shard streams of DESIGN.md "Shards": with `STREAM_SHARDS` = S a symbol's ticks, features and signals
/// live in shard k = FNV-1a-32(symbol as UTF-8) mod S, at `te:ticks:{k}` etc. The braces are a Redis
/// Cluster hash tag, so all of one shard's streams share a cluster slot. S = 1 keeps the unsharded names.
extension StreamKey {
    /// FNV-1a, 32 bits (offset basis 2166136261, prime 16777619), over the symbol's UTF-8 bytes.
    public static func fnv1a32(_ text: String) -> UInt32 {
        var hash: UInt32 = 2_166_136_261
        for byte in text.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return hash
    }

    /// The shard of `symbol` among `shards` (≥ 1) shards.
    public static func shard(of symbol: String, shards: Int) -> Int {
        precondition(shards >= 1, "STREAM_SHARDS must be at least 1")
        return Int(fnv1a32(symbol) % UInt32(shards))
    }

    /// `base` (e.g. `te:ticks`) for shard `k` of `shards`: `te:ticks:{k}`, or `base` itself when unsharded.
    public static func sharded(_ base: String, shard k: Int, of shards: Int) -> String {
        precondition(shards >= 1 && (0..<shards).contains(k), "shard \(k) outside 0..<\(shards)")
        return shards == 1 ? base : "\(base):{\(k)}"
    }

    /// Every shard stream of `base`, in shard order (`[base]` when unsharded).
    public static func allShards(_ base: String, shards: Int) -> [String] {
        (0..<shards).map { sharded(base, shard: $0, of: shards) }
    }

    /// The ticks / features / signals stream holding `symbol` among `shards` shards.
    public static func ticks(for symbol: String, shards: Int) -> String {
        sharded(ticks, shard: shard(of: symbol, shards: shards), of: shards)
    }

    public static func features(for symbol: String, shards: Int) -> String {
        sharded(features, shard: shard(of: symbol, shards: shards), of: shards)
    }

    public static func signals(for symbol: String, shards: Int) -> String {
        sharded(signals, shard: shard(of: symbol, shards: shards), of: shards)
    }
}
