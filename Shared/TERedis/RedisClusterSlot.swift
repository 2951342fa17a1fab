/// Key → hash slot, as the Redis Cluster specification defines it: CRC16 (XMODEM: polynomial 0x1021,
/// initial value 0) of the key, or only of its hash tag, modulo 16384. The hash tag is the text between
/// the first `{` and the first `}` after it, when that text is not empty (`{user1000}.following` hashes
/// `user1000`; `foo{}{bar}` hashes the whole key; `foo{{bar}}zap` hashes `{bar`).
public enum RedisClusterSlot {
    public static let count = 16384

    public static func slot(of key: String) -> Int {
        var key = key
        return key.withUTF8 { slot(of: $0) }
    }

    public static func slot(of key: [UInt8]) -> Int {
        key.withUnsafeBufferPointer { slot(of: $0) }
    }

    public static func slot(of key: UnsafeBufferPointer<UInt8>) -> Int {
        Int(crc16(hashedPart(of: key)) & UInt16(count - 1))
    }

    /// The bytes that decide the slot: the hash tag if the key has a non-empty one, else the key.
    static func hashedPart(of key: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return key }
        let tagStart = open + 1
        guard let close = key[tagStart...].firstIndex(of: UInt8(ascii: "}")), close > tagStart else { return key }
        return UnsafeBufferPointer(rebasing: key[tagStart..<close])
    }

    public static func crc16(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { (n: Int) -> UInt16 in
        var crc = UInt16(n) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}
