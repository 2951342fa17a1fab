/// The keys a command names, which decide its cluster slot.
enum RedisClusterKeys: Equatable {
    case keys([[UInt8]])
    /// No key: any node.
    case none
    /// Keyspace-wide: every master.
    case allMasters
}

extension RedisCommand {
    /// Key positions by command name, for every command TE sends; an unknown command's first argument
    /// is its key (true of most Redis commands).
    var clusterKeys: RedisClusterKeys {
        let n = lengths.count
        let name = self.name
        switch name {
        case "PING", "ECHO", "INFO", "TIME", "CLIENT", "CONFIG", "CLUSTER", "MULTI", "EXEC", "DISCARD", "ASKING",
            "READONLY", "READWRITE", "SELECT", "AUTH", "HELLO", "COMMAND", "QUIT", "RESET", "LASTSAVE", "ROLE",
            "MEMORY", "SLOWLOG", "LATENCY", "DEBUG", "WAIT", "UNWATCH":
            return .none
        case "FLUSHALL", "FLUSHDB", "KEYS", "DBSIZE", "SCRIPT", "FUNCTION", "RANDOMKEY":
            return .allMasters
        case "XREAD", "XREADGROUP":
            // … STREAMS key… id…: the first half after STREAMS are keys.
            guard let streams = (1..<n).first(where: { argumentEquals($0, "STREAMS") }) else { return .none }
            let count = (n - streams - 1) / 2
            return .keys((0..<count).map { argument(streams + 1 + $0) })
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            guard n >= 3, let numKeys = Int(String(decoding: argument(2), as: UTF8.self)), numKeys > 0,
                3 + numKeys <= n
            else { return .none }
            return .keys((3..<3 + numKeys).map { argument($0) })
        case "XGROUP", "XINFO", "OBJECT":
            return n >= 3 ? .keys([argument(2)]) : .none
        case "DEL", "UNLINK", "EXISTS", "MGET", "TOUCH", "WATCH", "SINTER", "SUNION", "SDIFF", "PFCOUNT":
            return .keys((1..<max(n, 1)).map { argument($0) })
        case "MSET", "MSETNX":
            return .keys(stride(from: 1, to: n, by: 2).map { argument($0) })
        case "BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX":
            return .keys((1..<max(n - 1, 1)).map { argument($0) })
        case "RENAME", "RENAMENX", "RPOPLPUSH", "LMOVE", "SMOVE", "COPY":
            return n >= 3 ? .keys([argument(1), argument(2)]) : .none
        default:
            return n >= 2 ? .keys([argument(1)]) : .none
        }
    }

    /// Argument `i`'s bytes.
    func argument(_ i: Int) -> [UInt8] {
        var offset = 0
        for k in 0..<i { offset += lengths[k] }
        return Array(buffer[offset..<offset + lengths[i]])
    }

    private func argumentEquals(_ i: Int, _ word: String) -> Bool {
        String(decoding: argument(i), as: UTF8.self).uppercased() == word
    }
}
