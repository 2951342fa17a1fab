/// gRPC-over-HTTP/2 wire details, free of I/O so that they are unit-tested on their own.
/// Spec: https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md
public enum GRPCFraming {
    /// Bytes of the length prefix before every message: 1 compressed-flag byte + 4 bytes big-endian length.
    public static let prefixLength = 5

    /// Writes the 5-byte prefix for a message of `length` bytes at `buffer[0..<5]` (uncompressed).
    public static func writePrefix(length: Int, into buffer: inout [UInt8]) {
        precondition(buffer.count >= prefixLength && length <= Int(UInt32.max))
        buffer[0] = 0
        buffer[1] = UInt8(truncatingIfNeeded: length >> 24)
        buffer[2] = UInt8(truncatingIfNeeded: length >> 16)
        buffer[3] = UInt8(truncatingIfNeeded: length >> 8)
        buffer[4] = UInt8(truncatingIfNeeded: length)
    }

    /// The payload range of the single message a unary response body must hold.
    /// Throws `protocolViolation` for a truncated frame, a compressed message (we never ask for compression)
    /// or trailing bytes.
    public static func singleMessage(in body: [UInt8]) throws(TritonError) -> Range<Int> {
        guard body.count >= prefixLength else {
            throw TritonError(
                code: .protocolViolation, message: "gRPC response body of \(body.count) bytes has no message")
        }
        guard body[0] == 0 else {
            throw TritonError(
                code: .protocolViolation, message: "compressed gRPC message (flag \(body[0])) not supported")
        }
        let length = Int(body[1]) << 24 | Int(body[2]) << 16 | Int(body[3]) << 8 | Int(body[4])
        guard body.count == prefixLength + length else {
            throw TritonError(
                code: .protocolViolation,
                message: "gRPC message length \(length) does not match body of \(body.count - prefixLength) bytes")
        }
        return prefixLength..<(prefixLength + length)
    }

    /// The `grpc-timeout` header value for `remaining` time: at most 8 digits and a unit; rounds up so that the
    /// server never gives up before we do. Negative or zero remaining time gives "1n".
    public static func timeoutHeader(_ remaining: Duration) -> String {
        let (seconds, attoseconds) = remaining.components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return "1n" }
        let nanos = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let totalNanos = nanos.overflow ? Int64.max : nanos.partialValue &+ (attoseconds + 999_999_999) / 1_000_000_000
        let units: [(Int64, String)] = [
            (1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"), (60_000_000_000, "M"),
            (3_600_000_000_000, "H")
        ]
        for (scale, unit) in units {
            let value = (totalNanos + scale - 1) / scale
            if value < 100_000_000 { return "\(value)\(unit)" }
        }
        return "99999999H"
    }

    /// Percent-decodes a `grpc-message` value (the spec percent-encodes non-printable bytes and '%').
    public static func decodeMessage<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i != bytes.endIndex {
            let b = bytes[i]
            if b == UInt8(ascii: "%") {
                let h1 = bytes.index(after: i)
                if h1 != bytes.endIndex {
                    let h2 = bytes.index(after: h1)
                    if h2 != bytes.endIndex, let hi = hexValue(bytes[h1]), let lo = hexValue(bytes[h2]) {
                        out.append(hi << 4 | lo)
                        i = bytes.index(after: h2)
                        continue
                    }
                }
            }
            out.append(b)
            i = bytes.index(after: i)
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// The call's outcome from what the server sent: HTTP `:status`, `grpc-status`/`grpc-message` (from headers
    /// or trailers) and the HTTP/2 RST_STREAM error code (0 when the stream closed normally).
    /// Returns nil when the call succeeded (the body then holds the response message).
    public static func outcome(
        httpStatus: Int, grpcStatus: Int?, grpcMessage: String?, resetCode: UInt32
    ) -> (code: TritonError.Code, message: String, grpcStatus: Int?)? {
        if let status = grpcStatus {
            if status == 0 { return nil }
            return (TritonError.Code(grpcStatus: status), grpcMessage ?? "", status)
        }
        if resetCode != 0 {
            // RST_STREAM without a status: REFUSED_STREAM (7) means the server never processed it.
            let code: TritonError.Code = resetCode == 7 ? .unavailable : .internalError
            return (code, "stream reset by server (HTTP/2 error code \(resetCode))", nil)
        }
        // No grpc-status: map the HTTP status as the gRPC spec says.
        switch httpStatus {
        case 400: return (.internalError, "HTTP 400 without grpc-status", nil)
        case 401: return (.unauthenticated, "HTTP 401", nil)
        case 403: return (.permissionDenied, "HTTP 403", nil)
        case 404: return (.unimplemented, "HTTP 404", nil)
        case 429, 502, 503, 504: return (.unavailable, "HTTP \(httpStatus)", nil)
        default: return (.internalError, "response without grpc-status (HTTP \(httpStatus))", nil)
        }
    }
}
