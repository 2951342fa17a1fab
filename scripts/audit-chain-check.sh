#!/usr/bin/env bash
# An auditor's re-check of one writer's hash chain in `decisions` with nothing but psql, bash and sha256sum
# (no project code): each row's canonical line is what PostgreSQL's own COPY prints for the canonical
# columns, and row_hash = sha256(prev_hash ‖ canonical line). The SQL below is AuditChain.canonicalSelect
# (Shared/AuditStorage/AuditChain.swift, documented in deploy/README.md "Audit hash chain"); a test checks
# they are the same text. One sha256sum per row: meant for spot checks, `te audit verify --chain` for tables.
#
#   POSTGRES_URL=postgres://te_reader:…@host:5432/te scripts/audit-chain-check.sh WRITER
#
# Prints `ok WRITER ROWS HEAD_HASH` and exits 0, or names the first row that does not fit and exits 1.
set -euo pipefail
writer=${1:?usage: audit-chain-check.sh WRITER (POSTGRES_URL: a role that may SELECT decisions)}
: "${POSTGRES_URL:?POSTGRES_URL is not set}"
canonical="SELECT chain_writer, chain_seq, decision_id, request_id, ts_ns, symbol, decision, encode(float8send(score), 'hex'), source, model_name, model_version, model_hash, (SELECT string_agg(encode(float8send((features->>k)::float8), 'hex'), ',' ORDER BY i) FROM unnest(ARRAY['spread_bps','imbalance','depth_imbalance','ofi_norm','realized_vol_bps','mid_return_bps','tick_rate','microprice_offset_bps']) WITH ORDINALITY AS f(k, i)), encode(float8send(feature_age_ms), 'hex'), latency_us, canary_version, encode(float8send(canary_score), 'hex'), canary_mode, reason, feature_snapshot_id, feature_ts_ns, trace_id, client FROM decisions"
# Row hash and prev_hash in front of each canonical line; the writer's name as a literal, quoted by PostgreSQL.
literal=$(echo "SELECT quote_literal(:'w')" | psql "$POSTGRES_URL" -XAtq -v "w=$writer")
prev=0000000000000000000000000000000000000000000000000000000000000000
expected_seq=1
rows=0
while IFS= read -r line; do
    stored_hash=${line%%$'\t'*}
    rest=${line#*$'\t'}
    stored_prev=${rest%%$'\t'*}
    canon=${rest#*$'\t'}
    after_writer=${canon#*$'\t'}
    seq=${after_writer%%$'\t'*}
    if [ "$seq" != "$expected_seq" ]; then
        echo "broken: chain_seq $seq where $expected_seq was expected (rows missing)"; exit 1
    fi
    if [ "$stored_prev" != "$prev" ]; then
        echo "broken: chain_seq $seq prev_hash $stored_prev, expected $prev"; exit 1
    fi
    hash=$(printf '%s%s\n' "$prev" "$canon" | sha256sum)
    hash=${hash%% *}
    if [ "$hash" != "$stored_hash" ]; then
        echo "broken: chain_seq $seq row_hash $stored_hash, expected $hash"; exit 1
    fi
    prev=$hash
    expected_seq=$((seq + 1))
    rows=$((rows + 1))
done < <(psql "$POSTGRES_URL" -XAtq -c \
    "COPY (SELECT row_hash, prev_hash, ${canonical#SELECT } WHERE chain_writer = $literal ORDER BY chain_seq) TO STDOUT")
echo "ok $writer $rows $prev"
