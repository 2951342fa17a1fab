#!/usr/bin/env bash
# Pipeline benchmark: ingest → feature-pipeline → strategy-engine → opportunity-aggregator (release builds),
# started here on a private redis-server and a private dev broker (a topic per run), driven by bench's
# pipeline-bench:
#  1. latency at paced rates (BENCH_PIPELINE_RATES, default "1000 5000" msgs/s, BENCH_PIPELINE_SECONDS each,
#     default 15): produce wall clock (header produced_ns, as `te replay` stamps it and ingest measures from)
#     → the feature snapshot readable on te:features, and → the opportunity readable on te:opportunities;
#     HdrHistogram p50/p99/p99.9;
#  2. maximum sustained throughput per stage: `te replay --speed max` of the whole USD-M recording, each
#     stage's entries consumed per second (first to last progress).
# Writes bench/results/pipeline.json and bench/results/pipeline.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh
DATA=$(bench_data_dir)
FILE=$DATA/binance/usdm_btcusdt_20240808.gz
RATES=${BENCH_PIPELINE_RATES:-1000 5000}
SECS=${BENCH_PIPELINE_SECONDS:-15}
mkdir -p bench/results
for p in ingest feature-pipeline strategy-engine opportunity-aggregator te dev-broker; do
  swift build -c release --product $p >&2
done
swift build -c release --package-path bench --product pipeline-bench >&2
BIN=$(swift build -c release --show-bin-path)
BENCH=$(swift build -c release --package-path bench --show-bin-path)/pipeline-bench
WORK=$(mktemp -d)
PIDS=()
SERVICE_PIDS=()
stop_services() {
  for p in "${SERVICE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${SERVICE_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  SERVICE_PIDS=()
}
cleanup() {
  stop_services
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0

TOPICS=()
for r in $RATES; do TOPICS+=(--topic "pipeline-$r:3"); done
"$BIN/dev-broker" "${TOPICS[@]}" --topic pipeline-max:3 --bootstrap-file "$WORK/boot" >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/boot" ] && break; sleep 0.1; done
KAFKA_BROKERS=$(cat "$WORK/boot")
export KAFKA_BROKERS

start_services() {  # topic
  redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
  local common=(LOG_LEVEL=warning METRICS_PORT=0 "CONSUMER_NAME=bench-$1" STREAM_BLOCK_MS=100)
  env "${common[@]}" KAFKA_TOPIC="$1" KAFKA_GROUP="ingest-$1" "$BIN/ingest" >>"$WORK/ingest.log" 2>&1 &
  SERVICE_PIDS+=($!)
  env "${common[@]}" "$BIN/feature-pipeline" >>"$WORK/feature-pipeline.log" 2>&1 &
  SERVICE_PIDS+=($!)
  env "${common[@]}" STRATEGIES_FILE="$ROOT/deploy/strategies/default.json" "$BIN/strategy-engine" >>"$WORK/strategy-engine.log" 2>&1 &
  SERVICE_PIDS+=($!)
  env "${common[@]}" "$BIN/opportunity-aggregator" >>"$WORK/opportunity-aggregator.log" 2>&1 &
  SERVICE_PIDS+=($!)
  sleep 4  # consumer groups created, ingest joined the Kafka group
  for p in "${SERVICE_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "a service exited at start:" >&2; tail -n 5 "$WORK"/*.log >&2; exit 1; }
  done
}

machine() { printf '%s cores, load average %s' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

for r in $RATES; do
  start_services "pipeline-$r"
  m0=$(machine)
  "$BENCH" latency --recording "$FILE" --rate "$r" --messages $((r * SECS)) --warmup 2 --topic "pipeline-$r" \
    --label "paced $r msgs/s" --json "$WORK/latency-$r.json"
  python3 - "$WORK/latency-$r.json" "$m0" "$(machine)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); d["machine_before"] = sys.argv[2]; d["machine_after"] = sys.argv[3]
json.dump(d, open(sys.argv[1], "w"))
PY
  stop_services
done

start_services pipeline-max
m0=$(machine)
total=$(zcat "$FILE" | wc -l)
"$BENCH" throughput --messages "$total" --idle 3 --json "$WORK/throughput.json" &
observer=$!
sleep 0.5
# The dev broker keeps ~5 MB per partition: large zstd batches keep the whole recording on it (as run-ingest.sh).
KAFKA_CONF_compression_codec=zstd KAFKA_CONF_linger_ms=50 KAFKA_CONF_batch_size=4000000 \
  "$BIN/te" replay --topic pipeline-max --speed max --quiet "$FILE"
wait $observer
python3 - "$WORK/throughput.json" "$m0" "$(machine)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); d["machine_before"] = sys.argv[2]; d["machine_after"] = sys.argv[3]
json.dump(d, open(sys.argv[1], "w"))
PY
stop_services

python3 - "$WORK" $RATES <<'PY'
import json, os, sys, datetime
work, *rates = sys.argv[1:]
latency = [json.load(open(f"{work}/latency-{r}.json")) for r in rates]
throughput = json.load(open(f"{work}/throughput.json"))
result = {"name": "pipeline", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "setup": "release builds; ingest, feature-pipeline, strategy-engine, opportunity-aggregator on a private "
                   "redis-server and a private dev-broker (librdkafka mock cluster, 3 partitions)",
          "latency": latency, "throughput": throughput}
json.dump(result, open("bench/results/pipeline.json", "w"), indent=2)

def ms(us): return f"{us / 1000:.2f}"
md = ["## pipeline", "",
      "End to end through the real services (release builds, private redis-server and dev broker), recording "
      f"`{latency[0]['recording'] if latency else '-'}`. Latency: from the produce wall clock of a message (header "
      "`produced_ns`, what ingest's te_ingest_latency_seconds starts from) to the entry it caused being readable on "
      "te:features (snapshot `ts_ns`) or te:opportunities (opportunity `last_ts_ns`); HdrHistogram, after a 2 s warm-up. "
      "An opportunity waits for its aggregation window by design, so its latency is not the pipeline's speed alone.", "",
      "Second figure in each cell: from the message's scheduled send time (open loop, coordinated omission corrected).", "",
      "| offered | achieved msgs/s | → snapshot p50 / p99 / p99.9 ms (n) | → opportunity p50 / p99 / p99.9 ms (n) | machine (before → after) |",
      "| --- | --- | --- | --- | --- |"]
for l in latency:
    f, o = l["features"], l["opportunities"]
    def cell(x):
        if not x["measured"]:
            return f"none measured ({x['entries']} entries)"
        return (f"{ms(x['p50_us'])} / {ms(x['p99_us'])} / {ms(x['p999_us'])} ({x['measured']}); scheduled: "
                f"{ms(x['scheduled_p50_us'])} / {ms(x['scheduled_p99_us'])} / {ms(x['scheduled_p999_us'])}")
    md.append(f"| {l['target_rate']} msgs/s, {l['messages']} msgs | {l['achieved_rate']:.0f} | "
              f"{cell(f)} | {cell(o)} | "
              f"{l['machine_before']} → {l['machine_after']} |")
md += ["", f"Maximum sustained throughput per stage, `te replay --speed max` of {throughput['kafka_messages']} messages "
       f"(each stage is fed by the one before, so a stage's rate is bounded by its upstream); "
       f"machine {throughput['machine_before']} → {throughput['machine_after']}:", "",
       "| stage | input | consumed | seconds | per second |", "| --- | --- | --- | --- | --- |"]
for s in throughput["stages"]:
    md.append(f"| {s['stage']} | {s['input']} | {s['consumed']} | {s['seconds']} | **{s['per_second']:,.0f}** |")
md.append("")
md.append("Outputs: " + ", ".join(f"{k} {v}" for k, v in sorted(throughput["outputs"].items())) + ". Reproduce: `bench/run-pipeline.sh`.")
open("bench/results/pipeline.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
