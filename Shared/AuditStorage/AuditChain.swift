import Crypto
import TEModels
import TEPostgres

/// Tamper evidence for `decisions`: each row a writer inserts carries `chain_writer`, `chain_seq` (1, 2, …
/// per writer, no gaps), `prev_hash` (the writer's previous `row_hash`; 64 zeros before its first row) and
///
///     row_hash = lower-case hex of SHA-256( prev_hash as 64 hex characters ‖ canonical line )
///
/// The canonical line is the row's `canonicalColumns`, in that order, as PostgreSQL's `COPY … TO STDOUT`
/// prints them (text format: tab-separated, `\N` for NULL, backslash, tab, newline and carriage return
/// escaped) with its newline. Floating-point values are the 16 hex digits of their IEEE-754 bits
/// (`encode(float8send(x), 'hex')`), so no decimal printing can differ between writer and auditor; the
/// features are the 8 values in model order, comma-separated, each the same way.
///
/// This file is the one definition: the writer builds the line from the record (`canonicalLine`), and
/// `te audit verify --chain` and an auditor build it from the stored row with `canonicalSelect` (psql +
/// sha256sum are enough; deploy/README.md "Audit hash chain"). A test checks both agree.
public struct AuditChain: Sendable, Equatable {
    /// `prev_hash` of a writer's first row.
    public static let genesis = String(repeating: "0", count: 64)

    public let writer: String
    /// The last chain_seq written (0: none yet).
    public private(set) var seq: Int64
    /// The last row_hash written (`genesis`: none yet).
    public private(set) var hash: String

    public init(writer: String, seq: Int64 = 0, hash: String = AuditChain.genesis) {
        self.writer = writer
        self.seq = seq
        self.hash = hash
    }

    /// One inserted row's place in the chain.
    public struct Link: Sendable, Equatable {
        public var seq: Int64
        public var prevHash: String
        public var rowHash: String
    }

    /// Appends `record` to the chain: the next seq, and its hash over the current head. `line` is scratch
    /// space for the canonical line, kept by the caller so a batch reuses one buffer.
    public mutating func append(_ record: AuditRecord, line: inout CopyTextEncoder) -> Link {
        let next = seq + 1
        line.removeAll()
        Self.writeCanonicalLine(writer: writer, seq: next, record: record, to: &line)
        let link = Link(seq: next, prevHash: hash, rowHash: Self.rowHash(prevHash: hash, canonicalLine: line.bytes))
        seq = next
        hash = link.rowHash
        return link
    }

    public static func rowHash(prevHash: String, canonicalLine: [UInt8]) -> String {
        var sha = SHA256()
        var prev = prevHash
        prev.withUTF8 { sha.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        sha.update(data: canonicalLine)
        return hex(sha.finalize())
    }

    private static func hex(_ digest: SHA256.Digest) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in digest {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: The canonical line

    /// The SQL expression of each canonical column over a `decisions` row, in line order.
    public static let canonicalColumns: [String] = [
        "chain_writer",
        "chain_seq",
        "decision_id",
        "request_id",
        "ts_ns",
        "symbol",
        "decision",
        "encode(float8send(score), 'hex')",
        "source",
        "model_name",
        "model_version",
        "model_hash",
        """
        (SELECT string_agg(encode(float8send((features->>k)::float8), 'hex'), ',' ORDER BY i) \
        FROM unnest(ARRAY['\(FeatureVector.names.joined(separator: "','"))']) WITH ORDINALITY AS f(k, i))
        """,
        "encode(float8send(feature_age_ms), 'hex')",
        "latency_us",
        "canary_version",
        "encode(float8send(canary_score), 'hex')",
        "canary_mode",
        "reason",
        "feature_snapshot_id",
        "feature_ts_ns",
        "trace_id",
        "client"
    ]

    /// `SELECT <canonical columns> FROM decisions`: wrapped in `COPY (…) TO STDOUT` it prints the canonical
    /// lines themselves.
    public static let canonicalSelect = "SELECT " + canonicalColumns.joined(separator: ", ") + " FROM decisions"

    /// The canonical line of `record` as row `seq` of `writer`'s chain (what `canonicalSelect` gives for
    /// the stored row).
    public static func canonicalLine(writer: String, seq: Int64, record: AuditRecord) -> [UInt8] {
        var encoder = CopyTextEncoder(reservingCapacity: 512)
        writeCanonicalLine(writer: writer, seq: seq, record: record, to: &encoder)
        return encoder.bytes
    }

    static func writeCanonicalLine(writer: String, seq: Int64, record: AuditRecord, to encoder: inout CopyTextEncoder) {
        encoder.append(writer)
        encoder.appendVerbatim { StreamFieldWriter.appendInteger(seq, to: &$0) }
        AuditStore.appendRecordColumns(record, to: &encoder, as: .canonical)
        encoder.endRow()
    }

    /// The canonical line of a row read with `canonicalSelect` (each column's text, nil for NULL).
    public static func canonicalLine(columns: [String?]) -> [UInt8] {
        var encoder = CopyTextEncoder(reservingCapacity: 512)
        encoder.appendRow(columns)
        return encoder.bytes
    }
}

/// Which chain this audit-writer extends: `AUDIT_WRITER_ID`, else `POD_NAME` (Kubernetes), else
/// `HOSTNAME`, else the host name. Replicas need distinct ids (one chain each); a stable id (a
/// StatefulSet's pod name, or set explicitly) continues the same chain across restarts.
public enum AuditWriterID {
    public static func from(environment: [String: String], hostName: () -> String) -> String {
        for name in ["AUDIT_WRITER_ID", "POD_NAME", "HOSTNAME"] {
            if let value = environment[name], !value.isEmpty { return value }
        }
        return hostName()
    }
}
