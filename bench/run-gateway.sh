#!/usr/bin/env bash
# Gateway benchmark: release gateway on a private port against the dev Redis (.dev/env) and a PRIVATE
# Triton of its own (scripts/dev-triton.sh on BENCH_TRITON_PORTS, serving this checkout's model
# repository; the shared dev Triton is never stopped), driven by bench's gateway-bench (HdrHistogram;
# closed loop at 1/8/32/64 connections, open loop at fixed rates with coordinated-omission correction),
# with features in the request and from memory, on the model path and on the fallback path (the private
# Triton stopped under the running gateway). Every run records the 1-minute load average and the CPU
# share (% of one core) used by the gateway, by Triton (server + Python stubs) and by the whole machine.
# Writes bench/results/gateway.json and bench/results/gateway.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ -f .dev/env ] && source .dev/env
: "${REDIS_URL:?source .dev/env}"
DURATION=${BENCH_DURATION:-5}
PORT=${BENCH_PORT:-18280}
read -r T_GRPC T_HTTP T_METRICS <<<"${BENCH_TRITON_PORTS:-28501 28500 28502}"
T_STATE=${BENCH_TRITON_STATE:-$ROOT/.dev/bench-triton}
SYMBOL=BENCHUSDT
mkdir -p bench/results
[ -x "${BENCH_GATEWAY:-.build/release/gateway}" ] || swift build -c release --product gateway >&2
[ -x bench/.build/release/gateway-bench ] || (cd bench && swift build -c release --product gateway-bench >&2)
BENCH=bench/.build/release/gateway-bench
GATEWAY=${BENCH_GATEWAY:-.build/release/gateway}  # another build (e.g. main's) for before/after tables
TRITON_SCRIPT=${BENCH_TRITON_SCRIPT:-scripts/dev-triton.sh}  # another checkout's script serves its own model config
OUT=${BENCH_OUT:-gateway}

TRITON_STATE=$T_STATE TRITON_PID_NAME=bench-triton "$TRITON_SCRIPT" "$T_GRPC" "$T_HTTP" "$T_METRICS" >&2
TRITON_PID=$(cat "$T_STATE/run/bench-triton.pid")
stop_triton() {
  kill "$TRITON_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$TRITON_PID" 2>/dev/null || return 0; sleep 0.1; done
}
trap 'stop_triton; [ -n "${GW_PID:-}" ] && kill "$GW_PID" 2>/dev/null || true' EXIT

# Features from memory: a fresh te:online hash for the bench symbol (cold start loads it once).
REDIS_PORT=$(echo "$REDIS_URL" | sed -E 's#.*:([0-9]+)/?.*#\1#')
NOW_NS=$(date +%s%N)
redis-cli -p "$REDIS_PORT" HSET "te:online:$SYMBOL" v 1 symbol $SYMBOL ts_ns "$NOW_NS" window_ms 5000 n_quotes 50 \
  n_trades 3 trade_volume 1.5 last_price 100 warm true spread_bps 0.5 imbalance 0.3 depth_imbalance 0.2 ofi_norm 1 \
  realized_vol_bps 2 mid_return_bps 0.1 tick_rate 10 microprice_offset_bps 0.05 written_at_ns "$NOW_NS" >/dev/null

GW_PID=
start_gateway() {  # $1 = TRITON_URL
  HTTP_PORT=$PORT TRITON_URL=$1 LOG_LEVEL=warning "$GATEWAY" 2>>bench/results/gateway-server.log.tmp &
  GW_PID=$!
  for _ in $(seq 100); do curl -fs "localhost:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1  # identity + warm-up
}
stop_gateway() { kill "$GW_PID"; wait "$GW_PID" || true; }

RESULTS=bench/results/$OUT.json.tmp
: > "$RESULTS"
# CPU ticks (utime+stime) of a process and its children (Triton's Python stubs).
ticks() { local t=0 v; for p in "$1" $(pgrep -P "$1" 2>/dev/null); do v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t + v)); done; echo $t; }
machine() { awk '/^cpu /{print $2+$3+$4, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
HZ=$(getconf CLK_TCK)
run() {
  local g0 t0 m0 g1 t1 m1 s0 s1 out
  g0=$(ticks "$GW_PID"); t0=$(ticks "$TRITON_PID"); m0=$(machine); s0=$(date +%s%N)
  out=$("$BENCH" --port "$PORT" --duration "$DURATION" --warmup 1 "$@")
  g1=$(ticks "$GW_PID"); t1=$(ticks "$TRITON_PID"); m1=$(machine); s1=$(date +%s%N)
  python3 - "$out" "$g0" "$g1" "$t0" "$t1" "$m0" "$m1" "$s0" "$s1" "$HZ" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY' | tee -a "$RESULTS" >&2
import json, sys
out, g0, g1, t0, t1, m0, m1, s0, s1, hz, load = sys.argv[1:]
r = json.loads(out)
secs = (int(s1) - int(s0)) / 1e9
(mb0, mt0), (mb1, mt1) = map(int, m0.split()), map(int, m1.split())
r["gateway_cpu_pct"] = round((int(g1) - int(g0)) / int(hz) / secs * 100)
# Triton's processes vanish when it is stopped (or crashes) during a run: no figure then.
r["triton_cpu_pct"] = round((int(t1) - int(t0)) / int(hz) / secs * 100) if int(t1) >= int(t0) > 0 else None
r["machine_busy_pct"] = round((mb1 - mb0) / max(1, mt1 - mt0) * 100)
r["load1"] = float(load)
print(json.dumps(r, sort_keys=True))
PY
}

# Reference: Triton alone at concurrency 1 (perf_analyzer, gRPC, batch 1) on the same private server,
# right before the gateway runs, when perf_analyzer is installed (../shared/tools/perf-analyzer-setup.sh).
PA=${PERF_ANALYZER:-$HOME/.cache/te-perf-analyzer/venv/bin/perf_analyzer_run}
perf_analyzer_c1() {
  [ -x "$PA" ] || return 0
  local csv; csv=$(mktemp)
  local g0 t0 m0 s0 g1 t1 m1 s1
  t0=$(ticks "$TRITON_PID"); m0=$(machine); s0=$(date +%s%N)
  "$PA" -m trade_eligibility -x 1 -i grpc -u "127.0.0.1:$T_GRPC" -b 1 --concurrency-range 1:1 \
    --measurement-interval $((DURATION * 1000)) -s 100 --max-trials 3 -f "$csv" >/dev/null 2>&1 || { rm -f "$csv"; return 0; }
  t1=$(ticks "$TRITON_PID"); m1=$(machine); s1=$(date +%s%N)
  python3 - "$csv" "$t0" "$t1" "$m0" "$m1" "$s0" "$s1" "$HZ" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY' | tee -a "$RESULTS" >&2
import csv, json, sys
path, t0, t1, m0, m1, s0, s1, hz, load = sys.argv[1:]
row = list(csv.DictReader(open(path)))[-1]
secs = (int(s1) - int(s0)) / 1e9
(mb0, mt0), (mb1, mt1) = map(int, m0.split()), map(int, m1.split())
print(json.dumps({"label": "reference/perf_analyzer (Triton alone)", "mode": "closed", "connections": 1,
    "features": "request", "target_rate": 0, "errors": 0, "throughput_rps": float(row["Inferences/Second"]),
    "p50_ms": int(row["p50 latency"]) / 1000, "p99_ms": int(row["p99 latency"]) / 1000, "p999_ms": None,
    "gateway_cpu_pct": None, "triton_cpu_pct": round((int(t1) - int(t0)) / int(hz) / secs * 100),
    "machine_busy_pct": round((mb1 - mb0) / max(1, mt1 - mt0) * 100), "load1": float(load)}, sort_keys=True))
PY
  rm -f "$csv"
}

perf_analyzer_c1
start_gateway "127.0.0.1:$T_GRPC"
for c in 1 8 32 64; do run --mode closed --connections "$c" --features --label "model/request-features"; done
for c in 1 8 32 64; do run --mode closed --connections "$c" --memory $SYMBOL --label "model/memory-features"; done
for r in 1000 5000 10000; do run --mode open --connections 32 --rate "$r" --features --label "model/open-loop"; done

# Fallback path: Triton stopped under the running gateway (cache until its TTL, then rules; breaker open).
stop_triton
sleep 2
for c in 1 8 32 64; do run --mode closed --connections "$c" --features --label "fallback/request-features"; done
for c in 1 32; do run --mode closed --connections "$c" --memory $SYMBOL --label "fallback/memory-features"; done
stop_gateway
GW_PID=

python3 - "$RESULTS" "$OUT" <<'PY'
import json, sys, platform, os
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = {"benchmark": "gateway POST /v1/score", "machine": f"{os.cpu_count()} cores, {platform.machine()}",
       "runs": rows}
json.dump(out, open(f"bench/results/{sys.argv[2]}.json", "w"), indent=1)
md = ["# Gateway benchmark", "", "Release build, HTTP/1.1 keep-alive, private local Triton (CPU, Python backend), "
      "gateway-bench (HdrHistogram; open loop corrected for coordinated omission). CPU columns: % of one core "
      "over the run (gateway; Triton server + Python stubs; whole machine = % of all cores busy, incl. the "
      "load generator and other users); load = 1-minute load average at the end of the run.", "",
      "| path | mode | conns | target rps | throughput rps | p50 ms | p99 ms | p99.9 ms | errors | answered by | gateway CPU % | Triton CPU % | machine busy % | load |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
def answered(r):
    src = r.get("sources") or {}
    n = sum(src.values())
    if not n: return "-"
    return ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in sorted(src.items(), key=lambda kv: -kv[1]))
for r in rows:
    dash = lambda v: "-" if v is None else v
    md.append(f"| {r['label']} | {r['mode']} | {r['connections']} | {r['target_rate'] or '-'} | {r['throughput_rps']:.0f} | "
              f"{r['p50_ms']} | {r['p99_ms']} | {dash(r['p999_ms'])} | {r['errors']} | {answered(r)} | {dash(r['gateway_cpu_pct'])} | "
              f"{dash(r['triton_cpu_pct'])} | {r['machine_busy_pct']} | {r['load1']} |")
open(f"bench/results/{sys.argv[2]}.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
rm -f "$RESULTS"
