#!/usr/bin/env bash
# shellcheck disable=SC2034  # DURATION, BENCH, REDIS_PORT, TRITON_PID are read by bench/gateway-lib.sh
# What the per-client rate limiter costs when it never limits: two release gateways side by side on the dev
# Redis, one with GATEWAY_RATE_LIMIT unset (no limiter in the request path) and one with it set far above any
# rate reached here (1e7/s: every request takes a token), both without Triton (TRITON_URL on a closed port:
# breaker open, answers from the rules baseline), so an answer costs the least and the limiter's share is as
# large as it gets. Closed loop, features in the request, at 1 and 32 connections; the two run in turn in
# each of BENCH_RL_ROUNDS rounds (default 5, BENCH_DURATION s each, default 4) so machine drift hits both
# alike. The table gives medians over the rounds, the difference and the load average. Nothing is asserted.
# Writes bench/results/gateway-ratelimit.json and .md. About 1.5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .dev/env ] && source .dev/env
: "${REDIS_URL:?source .dev/env}"
DURATION=${BENCH_DURATION:-4}
ROUNDS=${BENCH_RL_ROUNDS:-5}
CONNS=${BENCH_RL_CONNECTIONS:-1 32}
OFF_PORT=18291 ON_PORT=18292
mkdir -p bench/results
[ -x "${BENCH_GATEWAY:-.build/release/gateway}" ] || swift build -c release --product gateway >&2
[ -x bench/.build/release/gateway-bench ] || (cd bench && swift build -c release --product gateway-bench >&2)
BENCH=bench/.build/release/gateway-bench
GATEWAY=${BENCH_GATEWAY:-.build/release/gateway}
REDIS_PORT=$(echo "$REDIS_URL" | sed -E 's#.*:([0-9]+)/?.*#\1#')
DEAD_TRITON=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TRITON_PID=none  # no Triton: gateway-lib's Triton CPU column stays empty
source bench/gateway-lib.sh
start_audit_stand_in
PIDS=()
cleanup() { stop_audit_stand_in; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
LOG=bench/results/gateway-ratelimit-server.log.tmp
: > "$LOG"
for mode in off on; do
  port=$OFF_PORT; limit=(); [ $mode = on ] && { port=$ON_PORT; limit=(GATEWAY_RATE_LIMIT=10000000); }
  env -u GATEWAY_RATE_LIMIT -u GATEWAY_API_KEYS -u GATEWAY_API_KEYS_FILE "${limit[@]}" \
    HTTP_PORT=$port TRITON_URL=$DEAD_TRITON LOG_LEVEL=warning STREAM_MAXLEN=${BENCH_AUDIT_MAXLEN:-100000} "$GATEWAY" 2>>"$LOG" &
  PIDS+=($!); [ $mode = off ] && OFF_PID=$! || ON_PID=$!
  for _ in $(seq 150); do curl -fs "localhost:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "localhost:$port/healthz" >/dev/null || { echo "gateway-ratelimit: the $mode gateway did not start (see $LOG)" >&2; exit 1; }
done
sleep 1
RESULTS=bench/results/gateway-ratelimit.json.tmp
: > "$RESULTS"
for round in $(seq "$ROUNDS"); do
  for c in $CONNS; do
    # Alternate which goes first, so neither always runs on the warmer machine.
    if [ $((round % 2)) = 1 ]; then order="off on"; else order="on off"; fi
    for mode in $order; do
      if [ $mode = off ]; then bench_run "$OFF_PID" $OFF_PORT --mode closed --connections "$c" --features --label "limiter unset"
      else bench_run "$ON_PID" $ON_PORT --mode closed --connections "$c" --features --label "limiter set (1e7/s)"; fi
    done
  done
done
python3 - "$RESULTS" <<'PY'
import json, os, platform, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"benchmark": "gateway rate limiter unset vs set high (never limiting)",
           "machine": f"{os.cpu_count()} cores, {platform.machine()}", "runs": rows},
          open("bench/results/gateway-ratelimit.json", "w"), indent=1)
med = lambda xs: statistics.median(xs) if xs else None
def m(label, c, key): return med([r[key] for r in rows if r["label"] == label and r["connections"] == c and r.get(key) is not None])
loads = [r["load1"] for r in rows]
rounds = len([r for r in rows if r["label"] == "limiter unset"]) // max(1, len({r["connections"] for r in rows}))
md = ["# Gateway: the rate limiter unset vs set high", "",
      f"Release gateways side by side, no Triton (rules answers: the cheapest request, so the limiter's share is "
      f"largest), features in the request, closed loop, HTTP/1.1 keep-alive; the two alternate in each of "
      f"{rounds} rounds of {next((r['duration_s'] for r in rows if r.get('duration_s')), '?')} s; medians over the "
      f"rounds. `GATEWAY_RATE_LIMIT=10000000`: every request takes a token, none is refused. Load average "
      f"(1 min) during the runs: {min(loads):.2f}–{max(loads):.2f} on {os.cpu_count()} cores shared with other work.", "",
      "| conns | limiter | throughput rps | p50 ms | p99 ms | p99.9 ms | errors | gateway CPU % | load |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for c in sorted({r["connections"] for r in rows}):
    for label in ("limiter unset", "limiter set (1e7/s)"):
        md.append(f"| {c} | {label} | {m(label, c, 'throughput_rps'):.0f} | {m(label, c, 'p50_ms')} | {m(label, c, 'p99_ms')} | "
                  f"{m(label, c, 'p999_ms')} | {m(label, c, 'errors')} | {m(label, c, 'gateway_cpu_pct')} | {m(label, c, 'load1')} |")
    off, on = m("limiter unset", c, "throughput_rps"), m("limiter set (1e7/s)", c, "throughput_rps")
    spread = [r["throughput_rps"] for r in rows if r["label"] == "limiter unset" and r["connections"] == c]
    md.append(f"| {c} | difference | {100 * (on - off) / off:+.1f}% | | | | | | (unset's own round-to-round range: "
              f"{min(spread):.0f}–{max(spread):.0f} rps) |")
open("bench/results/gateway-ratelimit.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
rm -f "$RESULTS" "$LOG"

