#!/usr/bin/env bash
# ingest benchmark (release builds, a private dev broker, the shared Redis):
#  1. throughput: `te replay --speed max` of the USD-M recording (~94k messages) → messages/s from Kafka into
#     Redis (replay start → ingest has consumed and written every message);
#  2. latency at a paced 5k msgs/s: bench/Sources/IngestBench (ingest-bench), an open-loop producer of the
#     same recording whose header ts_ns is each message's scheduled send time (wall clock), and a reader of
#     the ticks stream: now − ts_ns per tick into an HdrHistogram (p50/p99/p99.9), plus a per-second
#     timeline. During a replay the Kafka timestamp is the RECORDED receive time (2024, DESIGN.md), so it
#     cannot be the start of a latency; ingest's own te_ingest_latency_seconds uses the replay's
#     produced_ns header for the same reason.
# Writes bench/results/ingest.json and bench/results/ingest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh
bench_env REDIS_URL
DATA=$(bench_data_dir)
FILE=$DATA/binance/usdm_btcusdt_20240808.gz
for p in ingest te dev-broker; do swift build -c release --product $p >&2; done
BIN=$(swift build -c release --show-bin-path)
swift build -c release --package-path bench --product ingest-bench >&2
BENCH_BIN=$(swift build -c release --package-path bench --show-bin-path)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  # Newest first: the ingests leave their group while the broker is still up (with the broker gone,
  # librdkafka's consumer close waits for a coordinator that never answers); then anything left is killed.
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do
    p=${PIDS[i]}
    kill "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  # UNLINK frees the big streams off Redis's main thread (a DEL of 90k entries would stall everyone's Redis).
  redis-cli -u "$REDIS_URL" --scan --pattern "${RUN:-none}:*" | xargs -r redis-cli -u "$REDIS_URL" unlink >/dev/null 2>&1 || true
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
    INGEST_SPREAD_PREFIX=$RUN:$1:spread: INGEST_OFFSETS_KEY=$RUN:$1:offsets INGEST_BOOKS_KEY=$RUN:$1:books LOG_LEVEL=info "$BIN/ingest" >"$WORK/ingest-$1.log" 2>&1 &
  PIDS+=($!)
  # The mock cluster holds a new group's first join for 3 s (group.initial.rebalance.delay.ms): producing
  # before the assignment would time that wait, not ingest (it was the ~1 s p99 of the first run).
  for _ in $(seq 300); do grep -q "partitions assigned" "$WORK/ingest-$1.log" && break; sleep 0.1; done
  grep -q "partitions assigned" "$WORK/ingest-$1.log" || { echo "ingest on $1 got no partitions" >&2; exit 1; }
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
LOAD_THROUGHPUT=$(cut -d' ' -f1-3 /proc/loadavg)
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

# 2. Latency at a paced rate (default 5k msgs/s, 50k messages = 10 s)
PACED=${BENCH_PACED_MESSAGES:-50000}
RATE=${BENCH_RATE:-5000}
run_ingest bench-paced 19192
"$BENCH_BIN/ingest-bench" --file "$FILE" --topic bench-paced --stream "$RUN:bench-paced:ticks" \
  --rate "$RATE" --messages "$PACED" > "$WORK/latency.json"
curl -s localhost:19192/metrics | grep '^te_ingest_latency_seconds' > "$WORK/prometheus-latency.txt" || true

echo "throughput run: $total msgs, replay $(echo "$replayed - $start" | bc) s, all consumed after $(echo "$done_at - $start" | bc) s" >&2
export total start replayed done_at ticks PACED RATE LOAD_THROUGHPUT
python3 - "$WORK/latency.json" <<'PY'
import json, os, sys
E = os.environ
lat = json.load(open(sys.argv[1]))
total = int(E["total"])
start, replayed, done_at = float(E["start"]), float(E["replayed"]), float(E["done_at"])
throughput = total / (done_at - start)
seen = lat["latency_produce_to_seen"]
server = lat["latency_produce_to_redis_entry_id"]
result = {
    "recording": "usdm_btcusdt_20240808.gz",
    "throughput": {"messages": total, "ticks_written": int(E.get("ticks") or 0),
                   "replay_seconds": round(replayed - start, 3), "total_seconds": round(done_at - start, 3),
                   "messages_per_second": round(throughput), "load_average_before": E["LOAD_THROUGHPUT"],
                   "method": "te replay --speed max; until ingest's te_ingest_messages_consumed_total reaches the count"},
    "latency": {**lat,
                "method": "ingest-bench: open loop at a fixed rate; start = scheduled send time (header ts_ns, wall clock), "
                          "end = tick seen by XREAD on the ticks stream (HdrHistogram, us); the Redis entry id gives the "
                          "server-side write time at ms resolution"},
    "setup": "release builds; dev-broker (librdkafka 2.0.2 mock cluster, 1 broker, 3 partitions); shared local "
             "redis-server; 2 cores shared with other work",
}
json.dump(result, open("bench/results/ingest.json", "w"), indent=2)
md = f"""# ingest benchmark

Recording: `usdm_btcusdt_20240808.gz` (Binance USD-M, {total} messages). Release builds, dev-broker (librdkafka
mock cluster), local redis-server, 2 cores shared with other work — numbers are indicative.

| measure | value |
| --- | --- |
| throughput, `te replay --speed max` → te:ticks | **{result['throughput']['messages_per_second']} msgs/s** ({total} msgs in {result['throughput']['total_seconds']} s; replay alone {result['throughput']['replay_seconds']} s; load average {E['LOAD_THROUGHPUT']}) |
| latency at {lat['rate_offered_per_second']:.0f} msgs/s offered ({lat['messages']} msgs, open loop) | p50 **{seen['p50_ms']} ms**, p99 **{seen['p99_ms']} ms**, p99.9 **{seen['p99_9_ms']} ms**, max {seen['max_ms']} ms |
| same, Redis entry id (server write time, ms resolution) | p50 {server['p50_ms']} ms, p99 {server['p99_ms']} ms, p99.9 {server['p99_9_ms']} ms |
| load average (1/5/15 min) before → after | {lat['load_average_before']} → {lat['load_average_after']} |

Latency = scheduled send time (header `ts_ns`, wall clock; open loop, so a stalled producer cannot hide a
stall) → tick seen on the ticks stream (HdrHistogram). Reproduce: `bench/run-ingest.sh`.
Worst seconds of the run (second of the schedule, worst ms, ticks over 100 ms):
{', '.join(f"{w['second']:.0f}: {w['max_ms']} ms / {w['over_100ms']:.0f}" for w in lat['worst_seconds'][:4])}.

Findings of 2026-11-23 (fixed text, not this run's numbers). Where the first run's p99 of ~965 ms came from (cold start, not ingest): (1) a fresh librdkafka producer
parks a topic's messages until its 1 s topic scan when it has no metadata yet — the first delivery report
came ~1,000 ms after the first produce, ~5 ms once `KafkaProducer.prepare(topic:)` fetched the metadata
first (te replay now does); (2) the mock cluster holds a new group's first join for 3 s, and the old
script's `sleep 3` let the paced replay start before ingest had its partitions. Now the run waits for
the assignment and a warm-up batch. On a quiet machine (load ≈ 0.5) the tail is gone: p99 22.6 ms,
p99.9 32 ms, 14.7k msgs/s. The p50 of ~13 ms is the producer's linger.ms=5 plus the mock broker holding
every empty Fetch for the whole fetch.wait.max.ms=10 (librdkafka's mock does not cut the wait short when
data arrives; a real broker does) plus one batch and one Redis pipeline; fetch.wait.max.ms=1 gave p50
≈ 11 ms but 1,000 empty fetches/s and a worse tail on the loaded machine, so the default stays. Under
load the tail comes back with the CPU: load 4–5 → p99 157 ms (first 2–3 s of traffic), load 7–17 → p99
260–480 ms and 2–4.6k msgs/s. ingest's CPU goes to JSON parsing and Codable stream-field encoding (perf
at --rate max: ~45 % libswiftCore, ~14 % Foundation, librdkafka 1.5 %, hiredis 1.4 %).
"""
open("bench/results/ingest.md", "w").write(md)
print(json.dumps(result, indent=2))
PY
