#!/usr/bin/env bash
# audit-writer benchmark: rows/s from a Redis stream into PostgreSQL `decisions` through the release
# audit-writer, next to a raw `psql \copy` of the same rows on the same server in the same run.
# Writes bench/results/audit.{json,md}. BENCH_ROWS (default 100000), BENCH_AUDIT_BATCH (default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${REDIS_URL:-}" ] || [ -z "${POSTGRES_URL:-}" ]; then
  [ -f .dev/env ] || scripts/dev-up.sh
  set -a; source .dev/env; set +a
fi
command -v psql >/dev/null || { echo "psql missing (apt-get install postgresql-client)" >&2; exit 1; }
mkdir -p bench/results
swift build -c release --product audit-writer >&2
swift build -c release --package-path bench --product audit-bench >&2
"$(swift build -c release --package-path bench --show-bin-path)/audit-bench" \
  --writer "$(swift build -c release --show-bin-path)/audit-writer" \
  --rows "${BENCH_ROWS:-100000}" --batch "${BENCH_AUDIT_BATCH:-500}" --output bench/results/audit
