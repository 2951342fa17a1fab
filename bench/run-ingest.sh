#!/usr/bin/env bash
# ingest benchmark (release builds, a private dev broker, the shared Redis):
#  1. throughput: `te replay --speed max` of the USD-M recording (~94k messages) → messages/s from Kafka into
#     Redis (replay start → ingest has consumed and written every message);
#  2. latency at a paced ~5k msgs/s (--speed 18.4 on the same recording, 50k messages): p50/p99 of
#     te_ingest_latency_seconds (replay's produce time, header produced_ns → Redis write), from the
#     service's own Prometheus histogram (linear interpolation inside a bucket).
# Writes bench/results/ingest.json and bench/results/ingest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -z "${REDIS_URL:-}" ]; then
  [ -f .dev/env ] || scripts/dev-up.sh
  set -a; source .dev/env; set +a
fi
DATA=${TE_DATA_DIR:-$ROOT/../shared/data}
[ -f "$DATA/binance/usdm_btcusdt_20240808.gz" ] || DATA=/work/shared/data
FILE=$DATA/binance/usdm_btcusdt_20240808.gz
for p in ingest te dev-broker; do swift build -c release --product $p >&2; done
BIN=$(swift build -c release --show-bin-path)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/dev-broker" --topic bench-max:3 --topic bench-paced:3 --bootstrap-file "$WORK/boot" >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/boot" ] && break; sleep 0.1; done
export KAFKA_BROKERS=$(cat "$WORK/boot")
RUN=bench:ingest:$$

metric() { curl -s "localhost:$1/metrics" | awk -v m="$2" '$1==m {print $2}'; }

run_ingest() { # topic port
  KAFKA_TOPIC=$1 KAFKA_GROUP=ingest-$1 METRICS_PORT=$2 INGEST_TICKS_STREAM=$RUN:$1:ticks INGEST_DLQ_STREAM=$RUN:$1:dlq \
    INGEST_SPREAD_PREFIX=$RUN:$1:spread: LOG_LEVEL=warning "$BIN/ingest" >"$WORK/ingest-$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "localhost:$2/healthz" >/dev/null && break; sleep 0.1; done
  sleep 3 # join the consumer group
}

wait_consumed() { # port count timeout_s
  local end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do
    local c; c=$(metric "$1" te_ingest_messages_consumed_total); c=${c%.*}
    [ "${c:-0}" -ge "$2" ] && return 0
    sleep 0.05
  done
  echo "timed out: consumed $(metric "$1" te_ingest_messages_consumed_total) of $2" >&2; return 1
}

# 1. Throughput
run_ingest bench-max 19191
start=$(date +%s.%N)
# The dev broker keeps ~5 MB per partition: large zstd batches keep the whole recording (28 MB of JSON) on it.
KAFKA_CONF_compression_codec=zstd KAFKA_CONF_linger_ms=50 KAFKA_CONF_batch_size=4000000 \
  "$BIN/te" replay --topic bench-max --speed max --quiet "$FILE"
replayed=$(date +%s.%N)
total=$(zcat "$FILE" | wc -l)
wait_consumed 19191 "$total" 240
done_at=$(date +%s.%N)
ticks=$(redis-cli -u "$REDIS_URL" xlen "$RUN:bench-max:ticks" 2>/dev/null || echo 0)

# 2. Latency at ~5k msgs/s
PACED=${BENCH_PACED_MESSAGES:-50000}
run_ingest bench-paced 19192
pstart=$(date +%s.%N)
"$BIN/te" replay --topic bench-paced --speed "${BENCH_SPEED:-18.4}" --limit "$PACED" --quiet "$FILE"
pend=$(date +%s.%N)
wait_consumed 19192 "$PACED" 120
curl -s localhost:19192/metrics | grep '^te_ingest_latency_seconds' > "$WORK/latency.txt"

echo "throughput run: $total msgs, replay $(echo "$replayed - $start" | bc) s, all consumed after $(echo "$done_at - $start" | bc) s" >&2
export total start replayed done_at ticks PACED pstart pend
python3 - "$WORK/latency.txt" <<'PY'
import os
import json, sys
buckets = []
count = 0
for line in open(sys.argv[1]):
    name, value = line.rsplit(" ", 1)
    if name.startswith("te_ingest_latency_seconds_bucket"):
        le = name.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(value)))
    elif name == "te_ingest_latency_seconds_count":
        count = float(value)
buckets.sort()
def q(p):
    target, lo, prev = p * count, 0.0, 0.0
    for le, c in buckets:
        if c >= target:
            if le == float("inf"): return lo
            return lo + (le - lo) * ((target - prev) / (c - prev) if c > prev else 1)
        lo, prev = le, c
    return lo
E = os.environ
total = int(E["total"])
PACED = int(E["PACED"])
start, replayed, done_at = float(E["start"]), float(E["replayed"]), float(E["done_at"])
pstart, pend = float(E["pstart"]), float(E["pend"])
throughput = total / (done_at - start)
paced_rate = PACED / (pend - pstart)
result = {
    "recording": "usdm_btcusdt_20240808.gz",
    "throughput": {"messages": total, "ticks_written": int(E.get("ticks") or 0),
                   "replay_seconds": round(replayed - start, 3), "total_seconds": round(done_at - start, 3),
                   "messages_per_second": round(throughput)},
    "latency": {"messages": PACED, "offered_rate_per_second": round(paced_rate), "samples": int(count),
                "p50_ms": round(q(0.5) * 1000, 3), "p99_ms": round(q(0.99) * 1000, 3),
                "method": "te_ingest_latency_seconds histogram (produced_ns header -> Redis pipeline reply), bucket interpolation"},
    "setup": "release builds; dev-broker (librdkafka mock cluster, 1 broker); shared local redis-server; 2 shared cores",
}
json.dump(result, open("bench/results/ingest.json", "w"), indent=2)
md = f"""# ingest benchmark

Recording: `usdm_btcusdt_20240808.gz` (Binance USD-M, {total} messages). Release builds, dev-broker (librdkafka
mock cluster), local redis-server, 2 cores shared with other work — numbers are indicative.

| measure | value |
| --- | --- |
| throughput, `te replay --speed max` → te:ticks | **{result['throughput']['messages_per_second']} msgs/s** ({total} msgs in {result['throughput']['total_seconds']} s; replay alone {result['throughput']['replay_seconds']} s) |
| latency at {result['latency']['offered_rate_per_second']} msgs/s offered ({PACED} msgs) | p50 **{result['latency']['p50_ms']} ms**, p99 **{result['latency']['p99_ms']} ms** |

Latency = replay's produce time (header `produced_ns`) → Redis pipeline reply, from ingest's
`te_ingest_latency_seconds` histogram (interpolated within buckets: 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 25 ms…).
Reproduce: `bench/run-ingest.sh`.
"""
open("bench/results/ingest.md", "w").write(md)
print(json.dumps(result, indent=2))
PY
