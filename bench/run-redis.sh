#!/usr/bin/env bash
# Redis layer benchmark: TERedis XADD and XREADGROUP+XACK msgs/s with p50/p99 per pipelined round trip,
# next to redis-benchmark's XADD on the same server in the same run. Writes bench/results/redis.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${REDIS_URL:-}" ]; then
  [ -f .dev/env ] || scripts/dev-up.sh
  set -a; source .dev/env; set +a
fi
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing (apt-get install redis-tools)" >&2; exit 1; }
mkdir -p bench/results
swift build -c release --package-path bench --product redis-bench >&2
"$(swift build -c release --package-path bench --show-bin-path)/redis-bench" \
  --messages "${BENCH_MESSAGES:-200000}" --batch "${BENCH_BATCH:-100}" --output bench/results/redis
