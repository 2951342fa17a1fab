/// Builds the payload of `COPY … FROM STDIN` in PostgreSQL's text format: columns separated by
/// tab, rows ended by newline, NULL as `\N`, and backslash, tab, newline and carriage return
/// escaped inside values (the characters the format gives a meaning to), and backspace, form feed and
/// vertical tab too: byte for byte what `COPY … TO STDOUT` prints, which the audit hash chain's
/// canonical line relies on (`AuditChain`).
public struct CopyTextEncoder: Sendable {
    public private(set) var bytes: [UInt8] = []
    public private(set) var rowCount = 0
    private var columnInRow = 0

    public init(reservingCapacity capacity: Int = 0) {
        bytes.reserveCapacity(capacity)
    }

    /// Appends one field of the current row; nil is SQL NULL.
    public mutating func append(_ value: String?) {
        startField()
        guard let value else {
            bytes.append(UInt8(ascii: "\\"))
            bytes.append(UInt8(ascii: "N"))
            return
        }
        for byte in value.utf8 { appendEscaped(byte) }
    }

    /// Appends one field, its ASCII letters in lower case (PostgreSQL prints a uuid so).
    public mutating func appendLowercasedASCII(_ value: String) {
        startField()
        for byte in value.utf8 {
            appendEscaped(byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte)
        }
    }

    private mutating func startField() {
        if columnInRow > 0 { bytes.append(UInt8(ascii: "\t")) }
        columnInRow += 1
    }

    private mutating func appendEscaped(_ byte: UInt8) {
        let letter: UInt8
        switch byte {
        case UInt8(ascii: "\\"): letter = UInt8(ascii: "\\")
        case UInt8(ascii: "\t"): letter = UInt8(ascii: "t")
        case UInt8(ascii: "\n"): letter = UInt8(ascii: "n")
        case UInt8(ascii: "\r"): letter = UInt8(ascii: "r")
        case 0x08: letter = UInt8(ascii: "b")
        case 0x0C: letter = UInt8(ascii: "f")
        case 0x0B: letter = UInt8(ascii: "v")
        default:
            bytes.append(byte)
            return
        }
        bytes.append(UInt8(ascii: "\\"))
        bytes.append(letter)
    }

    /// Appends one field whose text `write` appends to the buffer as it is: only for text with none of the
    /// characters the format escapes (digits, hex, timestamps, JSON of numbers), which is then written with
    /// no intermediate String.
    public mutating func appendVerbatim(_ write: (inout [UInt8]) -> Void) {
        startField()
        write(&bytes)
    }

    /// Ends the current row.
    public mutating func endRow() {
        bytes.append(UInt8(ascii: "\n"))
        rowCount += 1
        columnInRow = 0
    }

    /// Empties the payload, keeping its capacity.
    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        rowCount = 0
        columnInRow = 0
    }

    /// Appends a whole row.
    public mutating func appendRow(_ values: [String?]) {
        for value in values { append(value) }
        endRow()
    }
}
