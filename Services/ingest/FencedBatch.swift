import TEKafka
import TEModels
import TERedis

/// One batch's Redis writes as a single EVAL of `FencedBatch.script`: Redis applies a message's writes only if
/// its offset is above the partition's stored last-written offset, and stores the new last-written offsets
/// in the same script run. Redis runs a script atomically, so the writes and the offsets they mark land
/// together or not at all; a message can therefore be written at most once however often it is delivered
/// (a restart re-reading uncommitted offsets, a partition moved to another instance, a retried EVAL whose
/// reply was lost, two groups reading one topic into the same stream).
///
/// Contract (DESIGN.md "Delivery guarantees", "Shards"): one script per fence group and batch. The groups
/// are the tick shards (`te:ticks:{k}`, k = 0…STREAM_SHARDS−1, or `te:ticks` unsharded) and the dead-letter
/// stream; each group's fence is hash `<INGEST_OFFSETS_KEY>:{tag}` (default `te:ingest:offsets:<topic>:{tag}`)
/// where `{tag}` is the group stream's Redis Cluster hash tag (`{k}` for `te:ticks:{k}`; the whole name,
/// `{te:ticks}` or `{te:dlq}`, for a stream without one), so the fence, the books and the stream share a
/// slot and each script touches one slot. Field = partition number, value = `"<offset> <fingerprint>"`:
/// the offset of the last message of that partition whose output to that group is written, and that
/// message's fingerprint (`<kafka timestamp ms>:<FNV-1a 64 of key and value, hex>`), which tells a
/// re-created topic's message at the same offset from the one written. Readers take the leading integer; a
/// value may be a bare offset. Keyed by topic and partition only, not by consumer group or instance, so it
/// holds across rebalances and restarts.
///
/// The normalizer's order books go with the fences of their symbols' shards: hash
/// `<INGEST_BOOKS_KEY>:{tag}` (default `te:ingest:books:<topic>:{tag}`), field = symbol, value =
/// `"<partition> <BookCheckpoint text>"`, the book as it was after the last message of that partition
/// written to the shard. A batch writes the books its messages changed in the same script run as their
/// offsets, and only if the partition's last message in that script was fresh, so the books in Redis always
/// belong to the stored fences: a restart restores both and continues exactly where the killed instance was
/// (the venue sends its snapshot once; without this, quotes would lose depth).
///
/// Cost, measured against a local redis-server 7.0 (50k quote ticks with 10-level depth in batches of 500,
/// load ≈ 4): the script takes 4.4–5.3 ms of Redis time per batch, 13–15 µs per message end to end through
/// `redis-cli --pipe`, against 7.5–9.7 µs for the plain pipeline of the same XADDs/SETs; the extra ~6 µs per
/// message is Lua's argument marshalling and `redis.pcall`. Redis runs each batch without interleaving
/// other clients for those ~5 ms (MULTI/EXEC would too, for ~2–3 ms). At ingest's ~13k msgs/s that is
/// ~+3 ms on each batch's serial path (≈ 38 ms per 500 messages), i.e. an estimated ≤ 8 % throughput cost.
struct FencedBatch {
    /// ARGV is a flat list of items: `m partition offset` opens a message; `c argc arg…` is one command of
    /// the open message, run only if that message is fresh; `f partition offset fingerprint` names the
    /// fingerprint of a partition's last message, stored with its offset if that message was fresh; `b partition
    /// offset symbol book` stores a book (KEYS[2]) if the partition's last fresh message is that offset,
    /// i.e. if the batch's messages that built it were written. Command errors are collected, not raised: a
    /// refused command must not leave the batch half-applied without its offsets (Redis does not roll back
    /// a script's earlier writes). Offsets are stored as the original decimal text (Lua numbers are doubles
    /// and would print large offsets in exponent form). Returns {applied, skipped, {errors…}}.
    static let script = """
        local key = KEYS[1]
        local stored, last, prints, errors = {}, {}, {}, {}
        local applied, skipped, fresh = 0, 0, false
        local i, n = 1, #ARGV
        while i <= n do
          if ARGV[i] == 'm' then
            local p, o = ARGV[i + 1], ARGV[i + 2]
            local s = stored[p]
            if s == nil then s = tonumber(string.match(redis.call('HGET', key, p) or '-1', '^%-?%d+') or '-1') end
            local offset = tonumber(o)
            fresh = offset > s
            if fresh then
              stored[p] = offset
              last[p] = o
              applied = applied + 1
            else
              stored[p] = s
              skipped = skipped + 1
            end
            i = i + 3
          elseif ARGV[i] == 'f' then
            if last[ARGV[i + 1]] == ARGV[i + 2] then prints[ARGV[i + 1]] = ARGV[i + 3] end
            i = i + 4
          elseif ARGV[i] == 'b' then
            if last[ARGV[i + 1]] == ARGV[i + 2] then redis.call('HSET', KEYS[2], ARGV[i + 3], ARGV[i + 4]) end
            i = i + 5
          else
            local argc = tonumber(ARGV[i + 1])
            if fresh then
              local r = redis.pcall(unpack(ARGV, i + 2, i + 1 + argc))
              if type(r) == 'table' and r.err then errors[#errors + 1] = r.err end
            end
            i = i + 2 + argc
          end
        end
        for p, o in pairs(last) do
          if prints[p] then redis.call('HSET', key, p, o .. ' ' .. prints[p]) else redis.call('HSET', key, p, o) end
        end
        return {applied, skipped, errors}
        """

    /// Deletes a stored offset and the partition's books, only if the offset still has the value that was
    /// found stale (another instance may have stored a valid one meanwhile); ARGV[2] empty: only if the
    /// partition has no stored offset (books left behind by a deleted offsets hash).
    /// KEYS: offsets, books; ARGV: partition, stale value.
    static let forgetScript = """
        if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then return 0 end
        redis.call('HDEL', KEYS[1], ARGV[1])
        local all, prefix = redis.call('HGETALL', KEYS[2]), ARGV[1] .. ' '
        for j = 1, #all, 2 do
          if string.sub(all[j + 1], 1, #prefix) == prefix then redis.call('HDEL', KEYS[2], all[j]) end
        end
        return 1
        """

    /// A partition's stored offset ('' when none) and its books (symbol, value, …), read in one atomic step
    /// so they belong together. KEYS: offsets, books; ARGV: partition.
    static let restoreScript = """
        local stored = redis.call('HGET', KEYS[1], ARGV[1]) or ''
        local books, all, prefix = {}, redis.call('HGETALL', KEYS[2]), ARGV[1] .. ' '
        for j = 1, #all, 2 do
          if string.sub(all[j + 1], 1, #prefix) == prefix then
            books[#books + 1] = all[j]
            books[#books + 1] = all[j + 1]
          end
        end
        return {stored, books}
        """

    private(set) var command: RedisCommand
    private(set) var messages = 0
    private(set) var commands = 0
    /// Partition → its last message opened here (the one whose fingerprint and books the script stores).
    private(set) var last: [Int32: Int64] = [:]
    private var open: IngestCycle.Position?

    init(offsetsKey: String, booksKey: String, capacity: Int) {
        command = RedisCommand(name: "EVAL", capacity: capacity + Self.script.utf8.count + 64)
        command.append(Self.script)
        command.append("2")
        command.append(offsetsKey)
        command.append(booksKey)
    }

    /// Opens a message (once: opening the open message again does nothing); its commands follow.
    mutating func beginMessage(partition: Int32, offset: Int64) {
        let position = IngestCycle.Position(partition: partition, offset: offset)
        if open == position { return }
        open = position
        last[partition] = offset
        command.append("m")
        command.append(String(partition))
        command.append(String(offset))
        messages += 1
    }

    /// The fingerprint of `message`, the last message of its partition in this batch; after every message.
    mutating func fingerprint(of message: KafkaConsumerMessage) {
        command.append("f")
        command.append(String(message.partition))
        command.append(String(message.offset))
        command.append(Self.fingerprint(message))
    }

    /// Stores `checkpoint` as the book of `symbol` if `offset`, the partition's last message in this batch,
    /// is fresh; after every message.
    mutating func book(partition: Int32, offset: Int64, symbol: String, checkpoint: String) {
        command.append("b")
        command.append(String(partition))
        command.append(String(offset))
        command.append(symbol)
        command.append(Self.bookValue(partition: partition, checkpoint: checkpoint))
    }

    /// `"<partition> <checkpoint>"`.
    static func bookValue(partition: Int32, checkpoint: String) -> String { "\(partition) " + checkpoint }

    /// The checkpoint text of a stored book value of `partition`; nil when it is another partition's.
    static func checkpoint(inBookValue value: String, partition: Int32) -> Substring? {
        let prefix = "\(partition) "
        guard value.hasPrefix(prefix) else { return nil }
        return value.dropFirst(prefix.count)
    }

    /// `<kafka timestamp ms>:<FNV-1a 64 of key and value, hex>`.
    static func fingerprint(_ message: KafkaConsumerMessage) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in message.key ?? [] { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        hash = (hash ^ 0xff) &* 0x100_0000_01b3  // key/value separator
        for byte in message.value { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return "\(message.timestampMs ?? 0):" + String(hash, radix: 16)
    }

    /// A stored value: its offset and, when present, the fingerprint of the message at that offset.
    static func parseStored(_ text: String) -> (offset: Int64, fingerprint: Substring?)? {
        let parts = text.split(separator: " ", maxSplits: 1)
        guard let first = parts.first, let offset = Int64(first) else { return nil }
        return (offset, parts.count > 1 ? parts[1] : nil)
    }

    /// `XADD stream MAXLEN ~ maxLen * field value …` for the open message.
    mutating func xadd(_ stream: String, maxLen: Int, fields: [(String, String)]) {
        xaddHead(stream, maxLen: maxLen, fieldCount: fields.count)
        for (k, v) in fields {
            command.append(k)
            command.append(v)
        }
    }

    /// The same XADD with fields a stream codec wrote (their bytes go into the script's arguments as they are).
    mutating func xadd(_ stream: String, maxLen: Int, fields: StreamFieldWriter) {
        xaddHead(stream, maxLen: maxLen, fieldCount: fields.fieldCount)
        command.append(arguments: fields.bytes, lengths: fields.lengths)
    }

    private mutating func xaddHead(_ stream: String, maxLen: Int, fieldCount: Int) {
        command.append("c")
        command.append(6 + 2 * fieldCount)
        command.append("XADD")
        command.append(stream)
        command.append("MAXLEN")
        command.append("~")
        command.append(maxLen)
        command.append("*")
        commands += 1
    }

    /// The hash of `base` (fences or books) for the group writing `stream`: `base:{tag}`, in `stream`'s slot.
    static func groupKey(_ base: String, stream: String) -> String {
        base + ":" + StreamKey.hashTag(of: stream)
    }

    /// A symbol's latest spread, written after its batch landed and outside the fenced scripts (another
    /// slot): stored only if its tick is not older than the stored one's, so a late writer (a retried
    /// batch, an instance that lost the partition) never puts an older spread over a newer. The tick time
    /// lives in hash `te:ingest:spread_ts:{<spread key>}` (field `ts`, in the spread key's slot; one small
    /// hash per symbol, kept), zero-padded so Lua compares the decimal text exactly. KEYS: the time hash;
    /// ARGV: spread key, value, tick ns, TTL.
    static let spreadScript = """
        local stored = redis.call('HGET', KEYS[1], 'ts')
        if stored and stored > ARGV[3] then return 0 end
        redis.call('SET', ARGV[1], ARGV[2], 'EX', ARGV[4])
        redis.call('HSET', KEYS[1], 'ts', ARGV[3])
        return 1
        """

    static func spread(key: String, bps: Double, tsNs: Int64, expireSeconds: Int) -> RedisCommand {
        let padded = String(repeating: "0", count: max(0, 20 - String(tsNs).count)) + String(tsNs)
        return RedisCommand(
            "EVAL", spreadScript, "1", "te:ingest:spread_ts:" + StreamKey.hashTag(of: key), key, "\(bps)", padded,
            String(expireSeconds))
    }

    /// What the script did: messages written, messages it found already written, refused commands.
    struct Outcome: Equatable {
        var applied: Int
        var skipped: Int
        var errors: [String]
    }

    static func outcome(_ reply: RedisReply) throws(RedisError) -> Outcome {
        try reply.throwingError()
        guard let items = reply.array, items.count == 3, let applied = items[0].int, let skipped = items[1].int else {
            throw RedisError(.unexpectedReply, "ingest batch script replied \(reply)")
        }
        return Outcome(
            applied: Int(applied), skipped: Int(skipped), errors: (items[2].array ?? []).compactMap(\.string))
    }
}
