#!/usr/bin/env bash
# Our gateway beside the Python peer it replaces (../shared/peers/fastapi_gateway: FastAPI + uvicorn/uvloop),
# and our gateway's two audit modes (AUDIT_DURABILITY=sync: answered once the AuditRecord is in Redis;
# async: answered first), all three against the SAME private Triton and the same Redis, driven by the same
# client (bench's gateway-bench, HdrHistogram, closed loop) with the same body (features in the request).
# Each round runs sync, async and the peer in turn at 1, 32 and 64 connections (BENCH_PEER_ROUNDS rounds,
# default 3, BENCH_DURATION s each, default 4), so machine drift hits all three alike; the table gives the
# median of the rounds and the ratios. perf_analyzer (Triton alone, c=1) runs before each round when
# installed (../shared/tools/perf-analyzer-setup.sh). About 3 minutes.
# Writes bench/results/gateway-peer.json and bench/results/gateway-peer.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ -f .dev/env ] && source .dev/env
: "${REDIS_URL:?source .dev/env}"
DURATION=${BENCH_DURATION:-4}
ROUNDS=${BENCH_PEER_ROUNDS:-3}
CONNS=${BENCH_PEER_CONNECTIONS:-1 32 64}
SYNC_PORT=18281 ASYNC_PORT=18282 PEER_PORT=18283
read -r T_GRPC T_HTTP T_METRICS <<<"${BENCH_TRITON_PORTS:-28511 28510 28512}"
T_STATE=$ROOT/.dev/bench-peer-triton
PEER_SRC=${PEER_SRC:-$ROOT/../shared/peers/fastapi_gateway}
PEER_VENV=$ROOT/.dev/venv-peer
STATS=$(mktemp -d)
mkdir -p bench/results
[ -x .build/release/gateway ] || swift build -c release --product gateway >&2
[ -x bench/.build/release/gateway-bench ] || (cd bench && swift build -c release --product gateway-bench >&2)
BENCH=bench/.build/release/gateway-bench
REDIS_PORT=$(echo "$REDIS_URL" | sed -E 's#.*:([0-9]+)/?.*#\1#')

if ! [ -x "$PEER_VENV/bin/uvicorn" ]; then
  echo "gateway-peer: preparing $PEER_VENV" >&2
  python3 -m venv "$PEER_VENV"
  "$PEER_VENV/bin/pip" install -q -r "$PEER_SRC/requirements.txt"
fi

TRITON_STATE=$T_STATE TRITON_PID_NAME=bench-peer-triton scripts/dev-triton.sh "$T_GRPC" "$T_HTTP" "$T_METRICS" >&2
TRITON_PID=$(cat "$T_STATE/run/bench-peer-triton.pid")
source bench/gateway-lib.sh
start_audit_stand_in
PIDS=()
cleanup() {
  stop_audit_stand_in
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # Triton runs in its own process group (its Python stubs with it).
  kill -- "-$TRITON_PID" 2>/dev/null || kill "$TRITON_PID" 2>/dev/null || true
  rm -rf "$STATS"
}
trap cleanup EXIT

wait_http() { for _ in $(seq 150); do curl -fs "localhost:$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
LOG=bench/results/gateway-peer-server.log.tmp
: > "$LOG"
for mode in sync async; do
  port=$SYNC_PORT; [ $mode = async ] && port=$ASYNC_PORT
  HTTP_PORT=$port TRITON_URL=127.0.0.1:$T_GRPC LOG_LEVEL=warning AUDIT_DURABILITY=$mode \
    STREAM_MAXLEN=${BENCH_AUDIT_MAXLEN:-100000} .build/release/gateway 2>>"$LOG" &
  PIDS+=($!); [ $mode = sync ] && SYNC_PID=$! || ASYNC_PID=$!
  wait_http "$port"
done
# The peer reads the symbol's cached feature hash on every request (its design): give it one.
redis-cli -p "$REDIS_PORT" HSET feat:BTCUSDT spread_bps 0.5 imbalance 0.3 >/dev/null
(cd "$PEER_SRC" && TRITON_GRPC=127.0.0.1:$T_GRPC REDIS_PORT=$REDIS_PORT GW_STATS_DIR=$STATS \
  exec "$PEER_VENV/bin/uvicorn" app:app --host 127.0.0.1 --port $PEER_PORT --workers 1 --loop uvloop \
  --http httptools --no-access-log --log-level warning) 2>>"$LOG" &
PEER_PID=$!; PIDS+=($PEER_PID)
wait_http $PEER_PORT
sleep 1  # model identity, first Triton connections

RESULTS=bench/results/gateway-peer.json.tmp
: > "$RESULTS"
# The peer's own counters (model answers vs rules fallbacks), summed over its workers.
peer_stats() { python3 -c 'import json,glob,sys; t={}
for f in glob.glob(sys.argv[1]+"/*.json"):
    for k,v in json.load(open(f)).items(): t[k]=t.get(k,0)+v
print(json.dumps(t))' "$STATS"; }

for round in $(seq "$ROUNDS"); do
  perf_analyzer_c1 "perf_analyzer (Triton alone)"
  for c in $CONNS; do
    bench_run "$SYNC_PID" $SYNC_PORT --mode closed --connections "$c" --features --label "ours/sync"
    bench_run "$ASYNC_PID" $ASYNC_PORT --mode closed --connections "$c" --features --label "ours/async"
    sleep 0.6; before=$(peer_stats)
    bench_run "$PEER_PID" $PEER_PORT --mode closed --connections "$c" --features --label "python peer"
    sleep 0.6; after=$(peer_stats)
    # The peer's answers do not name their source: its counters say how many came from the model.
    python3 - "$RESULTS" "$before" "$after" <<'PY'
import json, sys
path, before, after = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
rows = [json.loads(l) for l in open(path) if l.strip()]
d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
rows[-1]["sources"] = {"model": d.get("model", 0), "rules": d.get("fallback_timeout", 0) + d.get("fallback_error", 0)}
open(path, "w").write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
PY
  done
done

python3 - "$RESULTS" <<'PY'
import json, os, platform, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"benchmark": "gateway vs python peer, AUDIT_DURABILITY sync vs async",
           "machine": f"{os.cpu_count()} cores, {platform.machine()}", "runs": rows},
          open("bench/results/gateway-peer.json", "w"), indent=1)
med = lambda xs: statistics.median(xs) if xs else None
def pick(label, c): return [r for r in rows if r["label"] == label and r["connections"] == c]
def m(label, c, key): return med([r[key] for r in pick(label, c) if r.get(key) is not None])
def model_share(label, c):
    ok = sum(r.get("sources", {}).get("model", 0) for r in pick(label, c))
    n = sum(sum(r.get("sources", {}).values()) for r in pick(label, c))
    return f"{100 * ok / n:.0f}%" if n else "-"
pa = m("perf_analyzer (Triton alone)", 1, "p50_ms")
loads = [r["load1"] for r in rows]
md = ["# Gateway vs the Python peer; audit durability sync vs async", "",
      f"Same private Triton (CPU, Python backend), same Redis, same client (gateway-bench, closed loop, HTTP/1.1 "
      f"keep-alive) and body (features in the request); at each connection count sync, async and the peer "
      f"run in turn, in each of {max(1, sum(1 for r in rows if r['label'] == 'python peer') // max(1, len({r['connections'] for r in rows if r['label'] == 'python peer'})))} "
      f"rounds of {next((r['duration_s'] for r in rows if r.get('duration_s')), '?')} s each; figures are medians over the rounds. "
      f"Load average during the runs: {min(loads):.2f}–{max(loads):.2f}. "
      f"perf_analyzer p50 at c=1 (Triton alone): {pa if pa is not None else 'not installed'} ms.", "",
      "| conns | gateway | throughput rps | p50 ms | p99 ms | answered by the model | gateway CPU % | vs peer (throughput) |",
      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
for c in sorted({r["connections"] for r in rows if r["label"] != "perf_analyzer (Triton alone)"}):
    peer = m("python peer", c, "throughput_rps")
    for label in ("ours/sync", "ours/async", "python peer"):
        t = m(label, c, "throughput_rps")
        if t is None: continue
        ratio = f"{t / peer:.1f}×" if peer else "-"
        md.append(f"| {c} | {label} | {t:.0f} | {m(label, c, 'p50_ms')} | {m(label, c, 'p99_ms')} | "
                  f"{model_share(label, c)} | {m(label, c, 'gateway_cpu_pct')} | {ratio} |")
if pa is not None and m("ours/sync", 1, "p50_ms") is not None:
    md += ["", f"One connection, p50 above perf_analyzer's: sync +{m('ours/sync', 1, 'p50_ms') - pa:.3f} ms, "
           f"async +{m('ours/async', 1, 'p50_ms') - pa:.3f} ms."]
open("bench/results/gateway-peer.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
rm -f "$RESULTS" "$LOG"
