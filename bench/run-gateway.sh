#!/usr/bin/env bash
# Gateway benchmark: release gateway on a private port against the dev Redis and Triton (.dev/env),
# driven by bench's gateway-bench (HdrHistogram; closed loop at 1/8/32/64 connections, open loop at fixed
# rates with coordinated-omission correction), with features in the request and from memory, on the
# model path and the fallback path (Triton unreachable: primary pointed at a closed port).
# Writes bench/results/gateway.json and bench/results/gateway.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ -f .dev/env ] && source .dev/env
: "${REDIS_URL:?source .dev/env}" "${TRITON_URL:?TRITON_URL not set}"
DURATION=${BENCH_DURATION:-5}
PORT=${BENCH_PORT:-18280}
SYMBOL=BENCHUSDT
mkdir -p bench/results
[ -x .build/release/gateway ] || swift build -c release --product gateway >&2
[ -x bench/.build/release/gateway-bench ] || (cd bench && swift build -c release --product gateway-bench >&2)
BENCH=bench/.build/release/gateway-bench
GATEWAY=.build/release/gateway

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

RESULTS=bench/results/gateway.json.tmp
: > "$RESULTS"
run() { "$BENCH" --port "$PORT" --duration "$DURATION" --warmup 1 "$@" | tee -a "$RESULTS" >&2; }

start_gateway "$TRITON_URL"
for c in 1 8 32 64; do run --mode closed --connections "$c" --features --label "model/request-features"; done
for c in 1 8 32 64; do run --mode closed --connections "$c" --memory $SYMBOL --label "model/memory-features"; done
for r in 1000 5000 10000; do run --mode open --connections 32 --rate "$r" --features --label "model/open-loop"; done
stop_gateway

CLOSED=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_gateway "$CLOSED"
for c in 1 8 32 64; do run --mode closed --connections "$c" --features --label "fallback/request-features"; done
for c in 1 32; do run --mode closed --connections "$c" --memory $SYMBOL --label "fallback/memory-features"; done
stop_gateway

python3 - "$RESULTS" <<'PY'
import json, sys, platform, os
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = {"benchmark": "gateway POST /v1/score", "machine": f"{os.cpu_count()} cores, {platform.machine()}",
       "runs": rows}
json.dump(out, open("bench/results/gateway.json", "w"), indent=1)
md = ["# Gateway benchmark", "", "Release build, HTTP/1.1 keep-alive, local Triton (CPU, Python backend), "
      "gateway-bench (HdrHistogram; open loop corrected for coordinated omission).", "",
      "| path | mode | conns | target rps | throughput rps | p50 ms | p99 ms | p99.9 ms | errors |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for r in rows:
    md.append(f"| {r['label']} | {r['mode']} | {r['connections']} | {r['target_rate'] or '-'} | {r['throughput_rps']:.0f} | "
              f"{r['p50_ms']} | {r['p99_ms']} | {r['p999_ms']} | {r['errors']} |")
open("bench/results/gateway.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
rm -f "$RESULTS"
