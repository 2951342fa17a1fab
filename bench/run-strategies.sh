#!/usr/bin/env bash
# Strategy layer benchmark: signals/s through the release strategy-engine and opportunity-aggregator
# binaries on a real Redis, and paced XADD → output latency. Writes bench/results/strategies.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${REDIS_URL:-}" ]; then
  [ -f .dev/env ] || scripts/dev-up.sh
  set -a; source .dev/env; set +a
fi
mkdir -p bench/results
swift build -c release --product strategy-engine >&2
swift build -c release --product opportunity-aggregator >&2
swift build -c release --package-path bench --product strategies-bench >&2
"$(swift build -c release --package-path bench --show-bin-path)/strategies-bench" \
  --bin-dir "$(swift build -c release --show-bin-path)" \
  --snapshots "${BENCH_SNAPSHOTS:-50000}" --rate "${BENCH_RATE:-500}" --latency-entries "${BENCH_LATENCY_ENTRIES:-2000}" \
  --output bench/results/strategies
