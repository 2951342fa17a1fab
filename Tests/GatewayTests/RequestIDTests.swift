import GatewayHTTP
import Testing

@testable import GatewayEngine

@Suite struct RequestIDTests {
    @Test func randomIsALowercaseVersion4UUID() {
        var seen = Set<String>()
        for _ in 0..<1000 {
            let id = Array(RequestID.random().utf8)
            #expect(id.count == 36)
            for (i, b) in id.enumerated() {
                if [8, 13, 18, 23].contains(i) {
                    #expect(b == UInt8(ascii: "-"))
                } else {
                    #expect((b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66), "position \(i)")
                }
            }
            #expect(id[14] == UInt8(ascii: "4"))
            #expect(Array("89ab".utf8).contains(id[19]))
            seen.insert(String(decoding: id, as: UTF8.self))
        }
        #expect(seen.count == 1000)
    }
}
