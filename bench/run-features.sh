#!/usr/bin/env bash
# Feature benchmarks: FeatureEngine per-quote cost (ns, allocations) on the USD-M recording, and
# feature-pipeline's throughput (quotes/s te:ticks → te:features) on a private redis-server.
# Writes bench/results/features.json and features.md. Release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
data=$(bench_data_dir)
usdm="$data/binance/usdm_btcusdt_20240808.gz"
mkdir -p bench/results

swift build -c release --product feature-pipeline
root_bin=$(swift build -c release --show-bin-path)
(cd bench && swift build -c release --product feature-bench)
bench_bin=$(cd bench && swift build -c release --show-bin-path)

LD_PRELOAD="$bench_bin/libMallocInterposerSwift.so" "$bench_bin/feature-bench" engine "$usdm" --passes 20 \
  --json bench/results/features-engine.json.tmp

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no > /dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.1; done
"$bench_bin/feature-bench" service "$usdm" --redis "redis://127.0.0.1:$port/0" --pipeline "$root_bin/feature-pipeline" \
  --json bench/results/features-service.json.tmp

python3 - <<'PY'
import json, os, subprocess
engine = json.load(open("bench/results/features-engine.json.tmp"))
service = json.load(open("bench/results/features-service.json.tmp"))
machine = {"cores": os.cpu_count(), "loadavg": open("/proc/loadavg").read().split()[:3]}
json.dump({"engine": engine, "service": service, "machine": machine}, open("bench/results/features.json", "w"), indent=2, sort_keys=True)
q = engine["quote_latency_ns"]
alloc = engine["allocations_per_quote"]
md = f"""## features

FeatureEngine on `{engine['input']}` ({engine['ticks']} ticks, {engine['quotes']} quotes with up to 10 depth levels, W = 5 s), release build:

| metric | value |
| --- | --- |
| ns per tick (median of {engine['passes']} whole passes) | {engine['ns_per_tick_median_pass']:.0f} |
| ticks/s, one core | {engine['ticks_per_second']:,.0f} |
| per-quote latency p50 / p99 / p99.9 (ns, incl. ~30 ns of clock reads) | {q['p50']} / {q['p99']} / {q['p999']} |
| allocations per quote (steady state, malloc-interposer) | {alloc if alloc is not None else 'not measured'} |

feature-pipeline draining {service['quotes']} quotes ({service['ticks']} ticks) of te:ticks into te:features + te:online (private redis-server, batch {service['batch_size']}):
**{service['quotes_per_second']:,.0f} quotes/s** ({service['first_to_last_snapshot_seconds']:.2f} s first to last snapshot).

Machine: {machine['cores']} cores, load average {' '.join(machine['loadavg'])} (shared with other builds: numbers are indicative).
"""
open("bench/results/features.md", "w").write(md)
print(md)
PY
rm -f bench/results/features-engine.json.tmp bench/results/features-service.json.tmp
