/// Request ids the gateway makes when the client sends none.
public enum RequestID {
    /// A random version-4 UUID in lowercase text (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`), from the
    /// system CSPRNG. Foundation's `UUID().uuidString.lowercased()` took 12 µs p50 per request here
    /// (stage timestamps at one connection); this takes well under one.
    public static func random() -> String {
        var generator = SystemRandomNumberGenerator()
        var high: UInt64 = generator.next()
        var low: UInt64 = generator.next()
        high = (high & ~0xF000) | 0x4000  // version 4: high nibble of byte 6
        low = (low & ~(UInt64(0xC0) << 56)) | (UInt64(0x80) << 56)  // variant 10xx: top bits of byte 8
        return String(unsafeUninitializedCapacity: 36) { out in
            let digits: StaticString = "0123456789abcdef"
            var i = 0
            func put(_ value: UInt64, nibbles: Int, from top: Int) {
                for n in 0..<nibbles {
                    let shift = UInt64((top - n) * 4)
                    out[i] = digits.utf8Start[Int((value >> shift) & 0xF)]
                    i += 1
                }
            }
            put(high, nibbles: 8, from: 15)
            out[i] = UInt8(ascii: "-")
            i += 1
            put(high, nibbles: 4, from: 7)
            out[i] = UInt8(ascii: "-")
            i += 1
            put(high, nibbles: 4, from: 3)
            out[i] = UInt8(ascii: "-")
            i += 1
            put(low, nibbles: 4, from: 15)
            out[i] = UInt8(ascii: "-")
            i += 1
            put(low, nibbles: 12, from: 11)
            return i
        }
    }
}
