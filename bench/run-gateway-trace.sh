#!/usr/bin/env bash
# What tracing costs the gateway's hot path: the release gateway with tracing off (no
# OTEL_EXPORTER_OTLP_ENDPOINT: no tracer, no span) and on (OTLP/HTTP to a local sink, every request
# sampled: the worst case), alternating BENCH_ROUNDS times (default 3) so that both see the same machine.
# Closed loop with wrk (Debian package; installed if missing) over 1 and 32 connections, BENCH_DURATION s
# each (default 5, after 1 s of warm-up), POST /v1/score with the features in the request (the model path:
# the dev Triton from .dev/env). A short paired run; the full latency picture is bench/run-gateway.sh.
# BENCH_GATEWAY_BASELINE=PATH adds a third gateway to each round: a release build without the tracing code
# (e.g. of the commit before it), so "off" is measured against no tracing code at all, not only against "on".
# Writes bench/results/gateway-trace.json and bench/results/gateway-trace.md. Nothing asserts a figure.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f .dev/env ] && source .dev/env
: "${REDIS_URL:?source .dev/env}"
: "${TRITON_URL:?source .dev/env}"
DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
PORT=${BENCH_PORT:-18281}
SINK_PORT=${BENCH_OTLP_PORT:-18318}
GATEWAY=${BENCH_GATEWAY:-.build/release/gateway}
BASELINE=${BENCH_GATEWAY_BASELINE:-}
MODES=(off on)
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || { echo "gateway-trace: BENCH_GATEWAY_BASELINE=$BASELINE is not an executable" >&2; exit 1; }
  MODES=(baseline off on)
fi
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -x "$GATEWAY" ] || swift build -c release --product gateway >&2
mkdir -p bench/results
AUDIT="bench:gateway-trace:$$:audit"
WORK=$(mktemp -d)

# The OTLP/HTTP sink: accepts POST /v1/traces, counts the bytes, answers an empty protobuf response.
python3 - "$SINK_PORT" "$WORK/sink.bytes" >"$WORK/sink.log" 2>&1 <<'PY' &
import http.server, sys
port, out = int(sys.argv[1]), sys.argv[2]
total = 0
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global total
        n = int(self.headers.get("Content-Length", 0)); self.rfile.read(n); total += n
        open(out, "w").write(str(total))
        self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
SINK_PID=$!
GW_PID=
cleanup() {
  if [ -n "$GW_PID" ]; then kill "$GW_PID" 2>/dev/null || true; fi
  kill "$SINK_PID" 2>/dev/null || true
  redis-cli -u "$REDIS_URL" DEL "$AUDIT" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/score.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"symbol":"BTCUSDT","features":[0.5,0.3,0.2,1,2,0.1,10,0.05]}'
wrk.headers["Content-Type"] = "application/json"
LUA

start_gateway() {  # $1 = baseline|off|on
  local otel=() binary=$GATEWAY
  [ "$1" = on ] && otel=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_TRACES_SAMPLER=always_on)
  [ "$1" = baseline ] && binary=$BASELINE
  env "${otel[@]}" HTTP_PORT="$PORT" AUDIT_STREAM="$AUDIT" STREAM_MAXLEN=100000 LOG_LEVEL=warning "$binary" \
    2>>"$WORK/gateway.log" &
  GW_PID=$!
  for _ in $(seq 100); do curl -fs "localhost:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1
}
stop_gateway() { kill "$GW_PID"; wait "$GW_PID" || true; GW_PID=; }

# One wrk run → a JSON line: mode, connections, rps, p50/p99 in ms, non-2xx.
measure() {  # $1 = mode, $2 = connections
  wrk -t1 -c"$2" -d1s -s "$WORK/score.lua" "http://127.0.0.1:$PORT/v1/score" >/dev/null
  wrk -t1 -c"$2" -d"${DURATION}s" --latency -s "$WORK/score.lua" "http://127.0.0.1:$PORT/v1/score" >"$WORK/wrk.txt"
  python3 - "$1" "$2" "$WORK/wrk.txt" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, re, sys
mode, conns, path, load = sys.argv[1:]
text = open(path).read()
def ms(v, unit): return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
pct = {m.group(1): ms(m.group(2), m.group(3)) for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({"mode": mode, "connections": int(conns), "rps": rps, "p50_ms": pct.get("50"),
                  "p99_ms": pct.get("99"), "non_2xx": int(bad.group(1)) if bad else 0, "load1": float(load)}))
PY
}

: >"$WORK/rows.jsonl"
for round in $(seq "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    start_gateway "$mode"
    for c in 1 32; do measure "$mode" "$c" | tee -a "$WORK/rows.jsonl" >&2; done
    stop_gateway
  done
  echo "gateway-trace: round $round of $ROUNDS done" >&2
done

python3 - "$WORK/rows.jsonl" "$(cat "$WORK/sink.bytes" 2>/dev/null || echo 0)" "$DURATION" "$ROUNDS" <<'PY'
import json, statistics, sys, os, platform
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sink_bytes, duration, rounds = int(sys.argv[2]), sys.argv[3], sys.argv[4]
json.dump({"benchmark": "gateway POST /v1/score, tracing off vs on", "machine": f"{os.cpu_count()} cores, {platform.machine()}",
           "otlp_bytes_received": sink_bytes, "runs": rows}, open("bench/results/gateway-trace.json", "w"), indent=1)
md = ["# Gateway: tracing off vs on", "",
      f"Release gateway, POST /v1/score with features in the request (model path, dev Triton), wrk closed loop, "
      f"{duration} s per run after 1 s of warm-up, off and on alternating {rounds} times (one gateway start per mode "
      "and round). Off: no OTEL_EXPORTER_OTLP_ENDPOINT (no tracer, no span). On: OTLP/HTTP (protobuf) to a local "
      "sink, OTEL_TRACES_SAMPLER=always_on, so every request makes its spans (server, feature lookup, model leg, "
      f"Triton call, audit write) and exports them ({sink_bytes / 1e6:.1f} MB received in all). Median over the "
      "rounds, min–max in brackets; load = 1-minute load average (the machine is shared). Baseline (when run): "
      "a release gateway built without the tracing code, in the same rounds.", "",
      "| connections | tracing | rps | p50 ms | p99 ms | non-2xx | load |", "| --- | --- | --- | --- | --- | --- | --- |"]
def cell(values, fmt):
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"
for c in sorted({r["connections"] for r in rows}):
    for mode in ["baseline", "off", "on"]:
        rs = [r for r in rows if r["connections"] == c and r["mode"] == mode]
        if not rs: continue
        md.append(f"| {c} | {mode} | {cell([r['rps'] for r in rs], '{:.0f}')} | {cell([r['p50_ms'] for r in rs], '{:.3f}')} | "
                  f"{cell([r['p99_ms'] for r in rs], '{:.3f}')} | {sum(r['non_2xx'] for r in rs)} | "
                  f"{cell([r['load1'] for r in rs], '{:.1f}')} |")
open("bench/results/gateway-trace.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
