extension StreamKey {
    /// `key`'s Redis Cluster hash tag with its braces: the first `{…}` with something inside (`{3}` of
    /// `te:ticks:{3}`), else the whole name in braces (`{te:dlq}`), so that a key named `prefix:` + this tag
    /// always lives in `key`'s slot: state written in one atomic step with a stream carries its tag.
    public static func hashTag(of key: String) -> String {
        if let open = key.firstIndex(of: "{"),
            let close = key[key.index(after: open)...].firstIndex(of: "}"),
            close > key.index(after: open)
        {
            return String(key[open...close])
        }
        return "{" + key + "}"
    }
}
