#!/usr/bin/env bash
# Benchmarks TritonClient against perf_analyzer (Triton's C++ load generator) on the same model and server:
# gRPC, batch size 1, closed loop at concurrency 1, 8 and 32. Writes bench/results/triton.json and triton.md.
# Needs a running Triton (TRITON_URL, default from .dev/env) and perf_analyzer
# (../shared/tools/perf-analyzer-setup.sh installs it; PERF_ANALYZER overrides the wrapper path).
# Env: SECONDS_PER_RUN (default 10), CONCURRENCY (default "1 8").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ -z "${TRITON_URL:-}" ] && [ -f .dev/env ] && source .dev/env
URL=${TRITON_URL:?TRITON_URL is not set (make dev-up)}
MODEL=${MODEL_NAME:-trade_eligibility}
VERSION=${MODEL_VERSION:-1}
RUN_S=${SECONDS_PER_RUN:-10}
# 1 and 8 by default: at 32 concurrent perf_analyzer requests on 2 loaded cores the Python backend stub
# died (boost::interprocess::lock_exception) and took the shared Triton down with it.
LEVELS=${CONCURRENCY:-1 8}
PA=${PERF_ANALYZER:-$HOME/.cache/te-perf-analyzer/venv/bin/perf_analyzer_run}
if ! [ -x "$PA" ]; then
  for s in ../shared/tools/perf-analyzer-setup.sh /work/shared/tools/perf-analyzer-setup.sh; do
    [ -x "$s" ] || [ -f "$s" ] && { bash "$s"; break; }
  done
fi
OUT=bench/results
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

swift build -c release --package-path bench --product triton-bench >&2
BIN=$(swift build -c release --package-path bench --show-bin-path)/triton-bench

for c in $LEVELS; do
  "$BIN" --url "$URL" --model "$MODEL" --version "$VERSION" --concurrency "$c" --seconds "$RUN_S" --warmup 2 \
    --json "$TMP/client-$c.json"
  "$PA" -m "$MODEL" -x "$VERSION" -i grpc -u "$URL" -b 1 --concurrency-range "$c:$c" \
    --measurement-interval $((RUN_S * 1000)) -s 100 --max-trials 3 -f "$TMP/pa-$c.csv" >"$TMP/pa-$c.log" 2>&1 \
    || { cat "$TMP/pa-$c.log" >&2; exit 1; }
  echo "bench: perf_analyzer c=$c: $(tail -1 "$TMP/pa-$c.csv")" >&2
done

python3 - "$TMP" "$OUT" "$URL" "$MODEL" "$VERSION" "$RUN_S" $LEVELS <<'PY'
import csv, json, sys, os, platform, datetime
tmp, out, url, model, version, run_s, *levels = sys.argv[1:]
rows = []
for c in levels:
    client = json.load(open(f"{tmp}/client-{c}.json"))[0]
    with open(f"{tmp}/pa-{c}.csv") as f:
        pa = list(csv.DictReader(f))[-1]
    pa_t = float(pa["Inferences/Second"])
    rows.append({
        "concurrency": int(c),
        "client": {"throughput_per_s": round(client["throughput_per_second"], 1), "p50_us": client["p50_microseconds"],
                   "p99_us": client["p99_microseconds"], "requests": client["requests"], "errors": client["errors"]},
        "perf_analyzer": {"throughput_per_s": round(pa_t, 1), "p50_us": int(pa["p50 latency"]),
                          "p99_us": int(pa["p99 latency"])},
        "ratio_client_over_perf_analyzer": {
            "throughput": round(client["throughput_per_second"] / pa_t, 3) if pa_t else None,
            "p50": round(client["p50_microseconds"] / int(pa["p50 latency"]), 3) if int(pa["p50 latency"]) else None,
            "p99": round(client["p99_microseconds"] / int(pa["p99 latency"]), 3) if int(pa["p99 latency"]) else None},
    })
result = {"name": "triton", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "server": url, "model": model, "version": version, "protocol": "grpc", "batch_rows": 1,
          "seconds_per_run": int(run_s), "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
          "results": rows}
json.dump(result, open(f"{out}/triton.json", "w"), indent=2)
md = [f"# Triton client vs perf_analyzer\n",
      f"{result['date']} · model `{model}` v{version} on {url} (Triton CPU, Python backend) · gRPC · 1 row per request · "
      f"closed loop, {run_s} s per run · {result['machine']}\n",
      "| concurrency | client req/s | client p50 µs | client p99 µs | perf_analyzer req/s | pa p50 µs | pa p99 µs | throughput ratio | p50 ratio | p99 ratio |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for r in rows:
    c, p, q = r["client"], r["perf_analyzer"], r["ratio_client_over_perf_analyzer"]
    md.append(f"| {r['concurrency']} | {c['throughput_per_s']} | {c['p50_us']} | {c['p99_us']} | {p['throughput_per_s']} | "
              f"{p['p50_us']} | {p['p99_us']} | {q['throughput']} | {q['p50']} | {q['p99']} |")
md.append("\nRatios are client / perf_analyzer: throughput > 1 and latency < 1 mean the Swift client is ahead. "
          "Both drive the same server on the same 2 shared cores, so the server (Python backend) dominates.")
open(f"{out}/triton.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
