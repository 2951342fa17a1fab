import AuditStorage
import Foundation
import TEPostgres

/// `te audit verify --chain`: walks each writer's hash chain (`AuditChain`) over a period and names the first
/// row that does not fit. The period selects, per writer, the chain positions from the first to the last row
/// decided in it; every row between them is checked, whatever its decided_at, so rows redelivered out of
/// time order cannot look like gaps. The row just before the first is read too, so the first row's link
/// (and a deleted first row) is checked as well. Not detectable from the table alone: rows deleted from the
/// end of a chain, and a chain recomputed as a whole by someone holding the owner role; keeping the heads
/// (`-o json`) somewhere else closes both.
struct AuditChainVerify {
    var since: String?
    var until: String?
    var writer: String?

    struct WriterResult {
        var writer: String
        var firstSeq: Int64
        var lastSeq: Int64
        var rows: Int
        var headHash: String
    }

    /// The first row that does not fit.
    struct Break {
        var writer: String
        var decisionID: String
        var chainSeq: Int64
        /// What is wrong, in words.
        var problem: String
        var expectedHash: String
        var storedHash: String
    }

    struct Report {
        var writers: [WriterResult] = []
        var broken: Break?
        /// Rows in the period written before the chain existed (migration 5): not covered.
        var unchained = 0
    }

    /// Rows read per query while walking a chain.
    static let pageSize = 5000

    func run(_ connection: PostgresConnection) async throws -> Report {
        var report = Report()
        let period = [since, until, writer]
        let ranges = try await connection.query(
            """
            SELECT chain_writer, min(chain_seq) AS lo, max(chain_seq) AS hi FROM decisions
            WHERE chain_writer IS NOT NULL
              AND ($1::timestamptz IS NULL OR decided_at >= $1::timestamptz)
              AND ($2::timestamptz IS NULL OR decided_at < $2::timestamptz)
              AND ($3::text IS NULL OR chain_writer = $3)
            GROUP BY chain_writer ORDER BY chain_writer
            """, period)
        report.unchained =
            Int(
                try await connection.query(
                    """
                    SELECT count(*) AS n FROM decisions
                    WHERE chain_writer IS NULL AND $3::text IS NULL
                      AND ($1::timestamptz IS NULL OR decided_at >= $1::timestamptz)
                      AND ($2::timestamptz IS NULL OR decided_at < $2::timestamptz)
                    """, period
                ).rows.first?["n"] ?? "") ?? 0
        for range in ranges.rows {
            guard let name = range["chain_writer"], let lo = range["lo"].flatMap({ Int64($0) }),
                let hi = range["hi"].flatMap({ Int64($0) })
            else { throw CLIError("decisions: unreadable chain range \(range.values)") }
            let (result, broken) = try await walk(connection, writer: name, from: lo, to: hi)
            report.writers.append(result)
            if let broken {
                report.broken = broken
                break
            }
        }
        return report
    }

    /// Checks `writer`'s rows `lo…hi` in order: each chain_seq one more than the last, each prev_hash the
    /// last row_hash, each row_hash the SHA-256 of prev_hash and the row's canonical line.
    private func walk(
        _ connection: PostgresConnection, writer: String, from lo: Int64, to hi: Int64
    ) async throws -> (WriterResult, Break?) {
        var result = WriterResult(writer: writer, firstSeq: lo, lastSeq: hi, rows: 0, headHash: AuditChain.genesis)
        var expectedPrev = AuditChain.genesis
        var expectedSeq = lo
        if lo > 1 {
            let before = try await connection.query(
                "SELECT row_hash FROM decisions WHERE chain_writer = $1 AND chain_seq = $2", [writer, String(lo - 1)])
            if let hash = before.rows.first?["row_hash"] {
                expectedPrev = hash
            } else {
                // The chain's earlier rows are gone: the first row of the period cannot be linked.
                expectedSeq = lo - 1
            }
        }
        let sql = """
            SELECT decision_id::text AS v_id, chain_seq AS v_seq, prev_hash AS v_prev, row_hash AS v_hash, \
            \(AuditChain.canonicalColumns.joined(separator: ", ")) FROM decisions
            WHERE chain_writer = $1 AND chain_seq > $2 AND chain_seq <= $3 ORDER BY chain_seq LIMIT \(Self.pageSize)
            """
        var after = lo - 1
        while after < hi {
            let page = try await connection.query(sql, [writer, String(after), String(hi)])
            guard !page.rows.isEmpty else { break }
            for row in page.rows {
                guard let id = row["v_id"], let seq = row["v_seq"].flatMap({ Int64($0) }) else {
                    throw CLIError("decisions: unreadable chained row \(row.values.prefix(2))")
                }
                let storedPrev = row["v_prev"] ?? "NULL"
                let storedHash = row["v_hash"] ?? "NULL"
                let line = AuditChain.canonicalLine(columns: Array(row.values.dropFirst(4)))
                let computed = AuditChain.rowHash(prevHash: expectedPrev, canonicalLine: line)
                func broken(_ problem: String, expected: String, stored: String) -> (WriterResult, Break?) {
                    (
                        result,
                        Break(
                            writer: writer, decisionID: id, chainSeq: seq, problem: problem,
                            expectedHash: expected, storedHash: stored)
                    )
                }
                if seq != expectedSeq {
                    return broken(
                        "chain_seq \(seq) where \(expectedSeq) was expected: rows \(expectedSeq)…\(seq - 1) are missing",
                        expected: expectedPrev, stored: storedPrev)
                }
                if storedPrev != expectedPrev {
                    return broken(
                        "prev_hash is not the previous row's row_hash", expected: expectedPrev, stored: storedPrev)
                }
                if storedHash != computed {
                    return broken("row_hash does not match the row's contents", expected: computed, stored: storedHash)
                }
                result.rows += 1
                result.headHash = storedHash
                expectedPrev = storedHash
                expectedSeq = seq + 1
                after = seq
            }
        }
        return (result, nil)
    }
}

extension AuditChainVerify.Report {
    var json: [String: Any] {
        var object: [String: Any] = [
            "ok": broken == nil,
            "unchained_rows": unchained,
            "writers": writers.map {
                [
                    "writer": $0.writer, "rows_checked": $0.rows, "first_seq": $0.firstSeq, "last_seq": $0.lastSeq,
                    "head_hash": $0.headHash
                ] as [String: Any]
            }
        ]
        if let b = broken {
            object["broken"] =
                [
                    "writer": b.writer, "decision_id": b.decisionID, "chain_seq": b.chainSeq, "problem": b.problem,
                    "expected_hash": b.expectedHash, "stored_hash": b.storedHash
                ] as [String: Any]
        }
        return object
    }

    var text: String {
        var lines: [String] = []
        if let b = broken {
            lines.append(
                "chain broken: writer \(b.writer), decision_id \(b.decisionID), chain_seq \(b.chainSeq): \(b.problem)")
            lines.append("  expected \(b.expectedHash)")
            lines.append("  stored   \(b.storedHash)")
        }
        if writers.isEmpty {
            lines.append("no chained decisions in the period")
        } else {
            lines.append(
                TextTable.render(
                    header: ["writer", "rows_checked", "first_seq", "last_seq", "head_hash"],
                    rows: writers.map {
                        [$0.writer, String($0.rows), String($0.firstSeq), String($0.lastSeq), $0.headHash]
                    },
                    rightAligned: [1, 2, 3]))
        }
        if unchained > 0 { lines.append("\(unchained) rows from before the hash chain (unchained) not checked") }
        if broken == nil && !writers.isEmpty { lines.append("ok: every chained row fits") }
        return lines.joined(separator: "\n")
    }
}
