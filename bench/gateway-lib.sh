# Shared by bench/run-gateway.sh and bench/run-gateway-peer.sh (sourced, not a bench part): CPU accounting
# and one gateway-bench run as a JSON line with the CPU shares and the load average next to its figures.
# Needs: BENCH (gateway-bench), DURATION, RESULTS (file the rows are appended to), TRITON_PID, T_GRPC,
# REDIS_PORT.

HZ=$(getconf CLK_TCK)
# CPU ticks (utime+stime) of a process and its children (Triton's Python stubs, uvicorn's workers).
ticks() { local t=0 v; for p in "$1" $(pgrep -P "$1" 2>/dev/null); do v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t + v)); done; echo $t; }
machine() { awk '/^cpu /{print $2+$3+$4, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

# bench_run SERVER_PID PORT [gateway-bench args…]: one row; the server's CPU is reported as gateway_cpu_pct.
bench_run() {
  local pid=$1 port=$2; shift 2
  local g0 t0 m0 g1 t1 m1 s0 s1 out
  g0=$(ticks "$pid"); t0=$(ticks "$TRITON_PID"); m0=$(machine); s0=$(date +%s%N)
  out=$("$BENCH" --port "$port" --duration "$DURATION" --warmup 1 "$@")
  g1=$(ticks "$pid"); t1=$(ticks "$TRITON_PID"); m1=$(machine); s1=$(date +%s%N)
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

# Reference: Triton alone at concurrency 1 (perf_analyzer, gRPC, batch 1) on the same private server, when
# perf_analyzer is installed (../shared/tools/perf-analyzer-setup.sh). $1 = label.
PA=${PERF_ANALYZER:-$HOME/.cache/te-perf-analyzer/venv/bin/perf_analyzer_run}
perf_analyzer_c1() {
  [ -x "$PA" ] || return 0
  local label=${1:-reference/perf_analyzer (Triton alone)} csv; csv=$(mktemp)
  local t0 m0 s0 t1 m1 s1
  t0=$(ticks "$TRITON_PID"); m0=$(machine); s0=$(date +%s%N)
  "$PA" -m trade_eligibility -x 1 -i grpc -u "127.0.0.1:$T_GRPC" -b 1 --concurrency-range 1:1 \
    --measurement-interval $((DURATION * 1000)) -s 100 --max-trials 3 -f "$csv" >/dev/null 2>&1 || { rm -f "$csv"; return 0; }
  t1=$(ticks "$TRITON_PID"); m1=$(machine); s1=$(date +%s%N)
  python3 - "$csv" "$t0" "$t1" "$m0" "$m1" "$s0" "$s1" "$HZ" "$(cut -d' ' -f1 /proc/loadavg)" "$label" <<'PY' | tee -a "$RESULTS" >&2
import csv, json, sys
path, t0, t1, m0, m1, s0, s1, hz, load, label = sys.argv[1:]
row = list(csv.DictReader(open(path)))[-1]
secs = (int(s1) - int(s0)) / 1e9
(mb0, mt0), (mb1, mt1) = map(int, m0.split()), map(int, m1.split())
print(json.dumps({"label": label, "mode": "closed", "connections": 1,
    "features": "request", "target_rate": 0, "errors": 0, "throughput_rps": float(row["Inferences/Second"]),
    "p50_ms": int(row["p50 latency"]) / 1000, "p99_ms": int(row["p99 latency"]) / 1000, "p999_ms": None,
    "gateway_cpu_pct": None, "triton_cpu_pct": round((int(t1) - int(t0)) / int(hz) / secs * 100),
    "machine_busy_pct": round((mb1 - mb0) / max(1, mt1 - mt0) * 100), "load1": float(load)}, sort_keys=True))
PY
  rm -f "$csv"
}

# The gateways' audit stream during a bench: a stream of its own (AUDIT_STREAM, exported for the gateways),
# capped by STREAM_MAXLEN and deleted at the end. Nothing writes it to PostgreSQL, and an ever-growing
# stream in the dev Redis (append-only file on) made its AOF rewrites fork gigabytes mid-run. STREAM_MAXLEN
# never trims past the audit-writer group's acknowledged entries, so this stand-in for audit-writer moves the
# group past everything once a second (XGROUP SETID … $): one cheap command, no PostgreSQL load.
start_audit_stand_in() {
  export AUDIT_STREAM=bench:gateway:audit
  redis-cli -p "$REDIS_PORT" DEL "$AUDIT_STREAM" >/dev/null
  (while sleep 1; do redis-cli -p "$REDIS_PORT" XGROUP SETID "$AUDIT_STREAM" audit-writer '$' >/dev/null 2>&1; done) &
  AUDIT_STAND_IN_PID=$!
}
stop_audit_stand_in() {
  [ -n "${AUDIT_STAND_IN_PID:-}" ] && kill "$AUDIT_STAND_IN_PID" 2>/dev/null
  redis-cli -p "$REDIS_PORT" DEL "$AUDIT_STREAM" >/dev/null 2>&1 || true
}
