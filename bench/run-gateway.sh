#!/usr/bin/env bash
# Gateway benchmark: release gateway on a private port against the dev Redis (.dev/env) and a PRIVATE
# Triton of its own (scripts/dev-triton.sh on BENCH_TRITON_PORTS, serving this checkout's model
# repository; the shared dev Triton is never stopped), driven by bench's gateway-bench (HdrHistogram).
# For each of model path / fallback path (the private Triton stopped under the running gateway) ×
# features in the request / from the gateway's memory:
#   closed loop at 1/8/32/64 connections (BENCH_DURATION s each, default 4), and
#   open loop at fixed rates over 32 connections, latency from each request's intended send time
#   (coordinated omission corrected; BENCH_OPEN_DURATION s each, default 5): BENCH_MODEL_RATES
#   (default 500 1000 2000 4000 req/s) on the model path, BENCH_FALLBACK_RATES (2000 5000 10000 15000)
#   on the fallback path. Each row has 1 s of warm-up before its window.
# The gateway runs with the default AUDIT_DURABILITY (sync); sync vs async, beside the Python peer, is the
# gateway-peer part (bench/run-gateway-peer.sh).
# Every run records which source answered, the 1-minute load average and the CPU share (% of one core)
# used by the gateway, by Triton (server + Python stubs) and by the whole machine. About 3.5 minutes.
# Writes bench/results/gateway.json and bench/results/gateway.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ -f .dev/env ] && source .dev/env
: "${REDIS_URL:?source .dev/env}"
DURATION=${BENCH_DURATION:-4}
OPEN_DURATION=${BENCH_OPEN_DURATION:-5}
MODEL_RATES=${BENCH_MODEL_RATES:-500 1000 2000 4000}
FALLBACK_RATES=${BENCH_FALLBACK_RATES:-2000 5000 10000 15000}
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
# Features from memory: a fresh te:online hash for the bench symbol (cold start loads it once).
REDIS_PORT=$(echo "$REDIS_URL" | sed -E 's#.*:([0-9]+)/?.*#\1#')
NOW_NS=$(date +%s%N)
redis-cli -p "$REDIS_PORT" HSET "te:online:$SYMBOL" v 1 symbol $SYMBOL ts_ns "$NOW_NS" window_ms 5000 n_quotes 50 \
  n_trades 3 trade_volume 1.5 last_price 100 warm true spread_bps 0.5 imbalance 0.3 depth_imbalance 0.2 ofi_norm 1 \
  realized_vol_bps 2 mid_return_bps 0.1 tick_rate 10 microprice_offset_bps 0.05 written_at_ns "$NOW_NS" >/dev/null

source bench/gateway-lib.sh
start_audit_stand_in
trap 'stop_triton; stop_audit_stand_in; [ -n "${GW_PID:-}" ] && kill "$GW_PID" 2>/dev/null || true' EXIT

GW_PID=
start_gateway() {  # $1 = TRITON_URL
  HTTP_PORT=$PORT TRITON_URL=$1 LOG_LEVEL=warning STREAM_MAXLEN=${BENCH_AUDIT_MAXLEN:-100000} "$GATEWAY" \
    2>>bench/results/gateway-server.log.tmp &
  GW_PID=$!
  for _ in $(seq 100); do curl -fs "localhost:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1  # identity + warm-up
}
stop_gateway() { kill "$GW_PID"; wait "$GW_PID" || true; }

RESULTS=bench/results/$OUT.json.tmp
: > "$RESULTS"
run() { bench_run "$GW_PID" "$PORT" "$@"; }

perf_analyzer_c1
start_gateway "127.0.0.1:$T_GRPC"
# The HTTP server's own floor: GET /healthz through Hummingbird's router (no scoring, no audit).
for c in 1 32; do run --mode closed --connections "$c" --get /healthz --label "floor/GET /healthz"; done
# $1 = path label (model|fallback), $2 = open-loop rates.
both_feature_sources() {
  local path=$1 rates=$2 c r
  for c in 1 8 32 64; do run --mode closed --connections "$c" --features --label "$path/request-features"; done
  for c in 1 8 32 64; do run --mode closed --connections "$c" --memory $SYMBOL --label "$path/memory-features"; done
  for r in $rates; do
    run --mode open --connections 32 --rate "$r" --duration "$OPEN_DURATION" --features --label "$path/request-features"
  done
  for r in $rates; do
    run --mode open --connections 32 --rate "$r" --duration "$OPEN_DURATION" --memory $SYMBOL --label "$path/memory-features"
  done
}
both_feature_sources model "$MODEL_RATES"

# Fallback path: Triton stopped under the running gateway (cache until its TTL, then rules; breaker open).
stop_triton
sleep 2
both_feature_sources fallback "$FALLBACK_RATES"
stop_gateway
GW_PID=

python3 - "$RESULTS" "$OUT" <<'PY'
import json, sys, platform, os
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = {"benchmark": "gateway POST /v1/score", "machine": f"{os.cpu_count()} cores, {platform.machine()}",
       "runs": rows}
json.dump(out, open(f"bench/results/{sys.argv[2]}.json", "w"), indent=1)
durations = sorted({(r["mode"], r.get("duration_s")) for r in rows if r.get("duration_s")})
md = ["# Gateway benchmark", "", "Release build, HTTP/1.1 keep-alive, private local Triton (CPU, Python backend), "
      "gateway-bench (HdrHistogram). Closed loop: each connection sends its next request when the answer "
      "arrived. Open loop: a fixed request rate over 32 connections, each request's latency measured from "
      "its intended send time, so a server that falls behind is charged for the requests it delayed "
      "(coordinated omission corrected); send lag = how late the generator sent each request (part of the "
      "latency: the gateway being behind, or the generator's own thread waking late on a loaded machine); throughput = answers / time until the last answer, so it drops "
      "below the target rate when the gateway cannot keep up. Fallback path = the private Triton stopped "
      "under the running gateway. Measurement window per row: "
      + ", ".join(f"{m} loop {d:g} s" for m, d in durations) + " (after 1 s of warm-up). "
      "Answered by = the response's `source` (on the model path, in parentheses: the response's `reason` for "
      "not answering from the model, as shares of all answers). CPU columns: % of one core "
      "over the run (gateway; Triton server + Python stubs; whole machine = % of all cores busy, incl. the "
      "load generator and other users); load = 1-minute load average at the end of the run.", "",
      "| path | mode | conns | target rps | throughput rps | p50 ms | p99 ms | p99.9 ms | send lag p50 / p99 ms | errors | answered by | gateway CPU % | Triton CPU % | machine busy % | load |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
def answered(r):
    src = r.get("sources") or {}
    n = sum(src.values())
    if not n: return "-"
    text = ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in sorted(src.items(), key=lambda kv: -kv[1]))
    # Why the earlier sources did not answer (the response's `reason`), top three, as shares of all answers.
    why = sorted((r.get("reasons") or {}).items(), key=lambda kv: -kv[1])[:3]
    if why and not r["label"].startswith("fallback/"):
        text += " (" + ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in why) + ")"
    return text
def lag(r):
    return f"{r['send_lag_p50_ms']} / {r['send_lag_p99_ms']}" if "send_lag_p50_ms" in r else "-"
def errors(r):
    # Open loop past its hard stop: requests still due but never sent (the generator gave up on the backlog).
    return f"{r['errors']} + {r['unsent']} unsent" if r.get("unsent") else r["errors"]
for r in rows:
    dash = lambda v: "-" if v is None else v
    md.append(f"| {r['label']} | {r['mode']} | {r['connections']} | {r['target_rate'] or '-'} | {r['throughput_rps']:.0f} | "
              f"{r['p50_ms']} | {r['p99_ms']} | {dash(r['p999_ms'])} | {lag(r)} | {errors(r)} | {answered(r)} | {dash(r['gateway_cpu_pct'])} | "
              f"{dash(r['triton_cpu_pct'])} | {r['machine_busy_pct']} | {r['load1']} |")
open(f"bench/results/{sys.argv[2]}.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
rm -f "$RESULTS"
