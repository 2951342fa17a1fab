#!/usr/bin/env bash
# Per-stage benchmark of issue 15 (part `stages` of make bench), release builds, one run:
#  - drain: each stage (ingest, feature-pipeline, strategy-engine, opportunity-aggregator, audit-writer) drains
#    its whole preloaded input with ONE process; entries/s from its first read to its last write
#    (bench/Sources/StageBench says how each end is observed);
#  - references in the same run: redis-benchmark pipelined XADD (-P 16, a Tick-sized entry) on the same
#    redis-server, and `psql \copy` of the audit-writer's own rows into an identical table; each stage's ratio;
#  - allocations per input entry (uprobes on libc malloc/calloc/realloc counted by `perf stat`, from outside);
#  - paced: 5,000 entries/s open loop, entry landing on the stage's input → output readable, p50/p99/p99.9
#    (HdrHistogram, from the scheduled send time); ingest's from ingest-bench (Kafka produce → te:ticks);
#  - BENCH_PROFILE=1: `perf record -g` of a third drain per stage, its top costs in the Markdown.
# Private redis-server and dev broker (started here); the shared PostgreSQL with a scratch database per run.
# Writes bench/results/stages.json and stages.md. Knobs: BENCH_RATE (5000), BENCH_PACED_SECONDS (10),
# BENCH_AUDIT_ROWS (100000), BENCH_ALLOCATIONS (1), BENCH_PROFILE (1), BENCH_STAGES (all, comma-separated; a stage's
# input is the previous stage's output, audit-writer's excepted), STAGES_BIN_DIR (prebuilt services).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh
bench_env POSTGRES_URL
DATA=$(bench_data_dir)
FILE=$DATA/binance/usdm_btcusdt_20240808.gz
RATE=${BENCH_RATE:-5000}
PACED_SECONDS=${BENCH_PACED_SECONDS:-10}
ALLOCATIONS=${BENCH_ALLOCATIONS:-1}
PROFILE=${BENCH_PROFILE:-1}
STAGES=${BENCH_STAGES:-ingest,feature-pipeline,strategy-engine,opportunity-aggregator,audit-writer}
mkdir -p bench/results
# STAGES_BIN_DIR: services already built there (e.g. to rerun against another checkout's release build).
if [ -z "${STAGES_BIN_DIR:-}" ]; then
  for p in ingest feature-pipeline strategy-engine opportunity-aggregator audit-writer te dev-broker; do
    swift build -c release --product $p >&2
  done
fi
swift build -c release --package-path bench --product stage-bench >&2
swift build -c release --package-path bench --product ingest-bench >&2
BIN=${STAGES_BIN_DIR:-$(swift build -c release --show-bin-path)}
BENCH_BIN=$(swift build -c release --package-path bench --show-bin-path)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d)
PIDS=()
PROBES=()
cleanup() {
  # Newest first: an ingest leaves its group while the broker is still up.
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do
    p=${PIDS[i]}
    kill "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  for probe in "${PROBES[@]}"; do perf probe -q -d "probe_libc:$probe" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
PRIVATE_REDIS=redis://127.0.0.1:$REDIS_PORT

"$BIN/dev-broker" --topic stages:3 --topic stages-idle:3 --topic stages-paced:3 --bootstrap-file "$WORK/boot" \
  >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/boot" ] && break; sleep 0.1; done
KAFKA_BROKERS=$(cat "$WORK/boot")
export KAFKA_BROKERS

# Allocation counting: uprobes on libc's allocation entry points (removed again at exit if added here).
if [ "$ALLOCATIONS" = 1 ]; then
  LIBC=$(ldconfig -p | awk '/libc\.so\.6 .*x86-64/ {print $NF; exit}')
  for probe in malloc calloc realloc; do
    if ! perf probe -l 2>/dev/null | grep -q "probe_libc:$probe "; then
      perf probe -q -x "$LIBC" --add "$probe" && PROBES+=("$probe")
    fi
  done
fi

# The whole recording on the topic before any ingest runs (large zstd batches: the dev broker keeps ~5 MB per partition).
KAFKA_CONF_compression_codec=zstd KAFKA_CONF_linger_ms=50 KAFKA_CONF_batch_size=4000000 \
  "$BIN/te" replay --topic stages --speed max --quiet "$FILE"
TOTAL=$(zcat "$FILE" | wc -l)

# Redis reference: pipelined XADD of a Tick-sized entry (the fields of a top-of-book quote) on the same server.
redis-benchmark -p "$REDIS_PORT" -P 16 -n 500000 -r 1000000 --csv \
  XADD "stages:reference" '*' symbol BTCUSDT kind quote bid 61234.5 ask 61234.6 bid_size 1.234 ask_size 0.567 \
  venue binance-usdm seq __rand_int__ ts_ns 1723161254123456789 >"$WORK/redis-benchmark.csv"
redis-cli -p "$REDIS_PORT" unlink stages:reference >/dev/null

PROFILE_DIR=""
if [ "$PROFILE" = 1 ]; then PROFILE_DIR=$WORK/profiles; mkdir -p "$PROFILE_DIR"; fi
"$BENCH_BIN/stage-bench" --bin-dir "$BIN" --redis "$PRIVATE_REDIS" --postgres "$POSTGRES_URL" \
  --kafka-topic stages --kafka-idle-topic stages-idle --kafka-messages "$TOTAL" \
  --strategies "$ROOT/deploy/strategies/default.json" --rate "$RATE" --paced-seconds "$PACED_SECONDS" \
  --audit-rows "${BENCH_AUDIT_ROWS:-100000}" --allocations "$ALLOCATIONS" --profile-dir "$PROFILE_DIR" \
  --stages "$STAGES" --output "$WORK/stages.json"

# ingest paced: ingest-bench produces open loop at RATE (header ts_ns = scheduled send time) and reads te:ticks.
if [[ ",$STAGES," == *",ingest,"* ]]; then
  redis-cli -p "$REDIS_PORT" flushdb >/dev/null
  REDIS_URL=$PRIVATE_REDIS/0 KAFKA_TOPIC=stages-paced KAFKA_GROUP=stages-paced METRICS_PORT=0 LOG_LEVEL=info \
    "$BIN/ingest" >"$WORK/ingest-paced.log" 2>&1 &
  PIDS+=($!)
  # The mock cluster holds a new group's first join for 3 s: produce only once ingest has its partitions.
  for _ in $(seq 300); do grep -q "partitions assigned" "$WORK/ingest-paced.log" && break; sleep 0.1; done
  REDIS_URL=$PRIVATE_REDIS/0 "$BENCH_BIN/ingest-bench" --file "$FILE" --topic stages-paced --stream te:ticks \
    --rate "$RATE" --messages $((RATE * PACED_SECONDS)) >"$WORK/ingest-paced.json"
fi

# Top costs per stage: inclusive (children) share of the stage's samples, symbols demangled.
if [ -n "$PROFILE_DIR" ]; then
  for f in "$PROFILE_DIR"/*.perf.data; do
    [ -f "$f" ] || continue
    # Thread, dispatch and task-runner frames hold everything; they are left out.
    perf report -i "$f" --stdio --children --sort symbol -g none --percent-limit 3 2>/dev/null \
      | grep -E '^ +[0-9]' | swift demangle --simplified \
      | grep -vE '\] (start_thread|_dispatch_|swift_job_run|swift::runJob|partial apply|thunk |__libc_start|main$|_start$|clone3?$|0x[0-9a-f]+ |0+ )' \
      | head -n 12 >"${f%.perf.data}.top.txt" || true
  done
fi

export LOAD_BEFORE RATE TOTAL WORK
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg) python3 - <<'PY'
import csv, glob, json, os, re
E = os.environ
work = E["WORK"]
bench = json.load(open(f"{work}/stages.json"))
reference = next(csv.reader(open(f"{work}/redis-benchmark.csv").read().strip().splitlines()[-1:]))
redis_rps = float(reference[1])
copy_rps = bench.get("copy_rows_per_second")
ingest_paced = None
if os.path.exists(f"{work}/ingest-paced.json"):
    seen = json.load(open(f"{work}/ingest-paced.json"))["latency_produce_to_seen"]
    ingest_paced = {"p50_ms": seen["p50_ms"], "p99_ms": seen["p99_ms"], "p999_ms": seen["p99_9_ms"],
                    "max_ms": seen["max_ms"], "method": "ingest-bench: Kafka produce scheduled time → tick read on te:ticks"}
profiles = {}
for path in glob.glob(f"{work}/profiles/*.top.txt"):
    rows = []
    for line in open(path):
        m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+(?:\S+\s+)*?\[[.k]\]\s+(.*)", line)
        if m:
            symbol = re.sub(r"\s+-\s+-\s*$", "", m[3]).strip()
            rows.append({"inclusive_pct": float(m[1]), "self_pct": float(m[2]), "symbol": symbol[:110]})
    profiles[os.path.basename(path).removesuffix(".top.txt")] = rows
stages = []
for s in bench["stages"]:
    d = s.get("drain") or {}
    rate = d.get("entries_per_second")
    row = {**s, "profile_top": profiles.get(s["stage"], [])}
    row.pop("profile", None)
    if rate:
        row["ratio_to_redis_xadd"] = round(rate / redis_rps, 3)
        if s["stage"] == "audit-writer" and copy_rps:
            row["ratio_to_psql_copy"] = round(rate / copy_rps, 3)
    if s["stage"] == "ingest" and ingest_paced:
        row["paced"] = {"offered_per_second": int(E["RATE"]), **ingest_paced}
    stages.append(row)
result = {
    "name": "stages",
    "recording": "usdm_btcusdt_20240808.gz", "recording_messages": int(E["TOTAL"]),
    "references": {"redis_benchmark_xadd_per_second": redis_rps,
                   "redis_benchmark": "redis-benchmark -P 16 -n 500000, XADD of a 10-field top-of-book Tick, same redis-server",
                   "psql_copy_rows_per_second": copy_rps,
                   "psql_copy": "psql \\copy of audit-writer's own rows (\\copy decisions TO file) into CREATE TABLE … (LIKE decisions INCLUDING ALL)"},
    "stages": stages, "audit_rows": bench["audit_rows"], "paced_seconds": bench["paced_seconds"],
    "redis_version": bench["redis_version"],
    "load_average_before": E["LOAD_BEFORE"], "load_average_after": E["LOAD_AFTER"],
    "setup": "release builds; private redis-server and dev broker (librdkafka mock cluster, 3 partitions); the "
             "shared PostgreSQL, a scratch database per run; default batch sizes",
}
json.dump(result, open("bench/results/stages.json", "w"), indent=2)

def f(x, spec=",.0f"):
    return "—" if x is None else format(x, spec)
md = ["## stages", "",
      f"One process per stage draining its whole preloaded input alone (release builds, private redis-server "
      f"{bench['redis_version']} and dev broker, shared PostgreSQL). Inputs are chained: the recording "
      f"`usdm_btcusdt_20240808.gz` ({E['TOTAL']} messages) on Kafka → ingest → te:ticks → feature-pipeline → "
      f"te:features → strategy-engine → te:signals → opportunity-aggregator; audit-writer drains "
      f"{bench['audit_rows']} AuditRecords from te:audit into `decisions`. Load average {E['LOAD_BEFORE']} (before) → "
      f"{E['LOAD_AFTER']} (after).", "",
      "Drain = input entries / (first read → last write): ingest from its first consumed message "
      "(te_ingest_messages_consumed_total) to the id of the last te:ticks entry (Redis server time, ms); the others "
      "from their group's first delivery to every entry delivered and acknowledged (XINFO GROUPS every 2 ms; a stage "
      "acknowledges only after its output is written). References in the same run: "
      f"`redis-benchmark -P 16` XADD of a top-of-book Tick **{redis_rps:,.0f}/s**; `psql \\copy` of audit-writer's own "
      f"rows into an identical table **{f(copy_rps)} rows/s**. Allocations: libc malloc + calloc + realloc per input "
      "entry (perf uprobes; a drain of the input's last 20,000 entries, ingest's of the whole topic, minus an idle run of the same binary).", "",
      f"Paced: {E['RATE']} entries/s open loop for {bench['paced_seconds']} s (first second not recorded), from the "
      "entry's scheduled send time to its output being readable (XREAD of the output stream; audit-writer: the row "
      "visible in `decisions`); ingest: Kafka produce → tick on te:ticks (ingest-bench).", "",
      "| stage | input entries | outputs | drain entries/s (target) | ratio to Redis XADD | ratio to `\\copy` | allocations / entry | paced p50 / p99 / p99.9 ms, target p99 ≤ 2 (measured) |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
for s in stages:
    d = s.get("drain") or {}
    p = s.get("paced")
    paced = "—" if not p else f"{p['p50_ms']} / {p['p99_ms']} / {p['p999_ms']}" + (f" ({p['measured']})" if "measured" in p else "")
    md.append(f"| {s['stage']} | {f(d.get('entries'), ',')} | {f(d.get('outputs'), ',')} | **{f(d.get('entries_per_second'))}** ({'≥ 2/3 of copy' if s['stage'] == 'audit-writer' else '≥ 100,000'}) | "
              f"{f(s.get('ratio_to_redis_xadd'), '.3f')} | {f(s.get('ratio_to_psql_copy'), '.2f')} | "
              f"{f(s.get('mallocs_per_entry'), '.1f')} | {paced} |")
if profiles:
    md += ["", "### Profiles (perf record -g at 499 Hz of a separate drain; inclusive / self share of the stage's samples, ≥ 3 %; unresolved addresses left out)"]
    for s in stages:
        rows = s.get("profile_top") or []
        if not rows:
            continue
        md += ["", f"**{s['stage']}**", "", "| inclusive | self | symbol |", "| ---: | ---: | --- |"]
        md += [f"| {r['inclusive_pct']:.1f} % | {r['self_pct']:.1f} % | `{r['symbol']}` |" for r in rows]
md += ["", "Reproduce: `bench/run-stages.sh` (or `scripts/bench.sh stages`)."]
open("bench/results/stages.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
