import TEModels
import Testing

@Suite("hash tags: state written with a stream lands in its slot")
struct HashTagTests {
    @Test("a key's hash tag is its first non-empty {…}, else the whole name")
    func hashTags() {
        #expect(StreamKey.hashTag(of: "te:ticks:{3}") == "{3}")
        #expect(StreamKey.hashTag(of: "te:ticks") == "{te:ticks}")
        #expect(StreamKey.hashTag(of: "te:dlq") == "{te:dlq}")
        #expect(StreamKey.hashTag(of: "te:rollout:state:m:{te:rollout}") == "{te:rollout}")
        // Redis reads only the first '{': an empty {} there means no tag, the whole name is hashed.
        #expect(StreamKey.hashTag(of: "a{}b{c}") == "{a{}b{c}}")
    }
}
