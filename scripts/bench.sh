#!/usr/bin/env bash
# make bench: every benchmark under bench/ in turn (release builds, local servers from dev-up).
# Each bench/run-<name>.sh writes bench/results/<name>.json and <name>.md; this script records the machine
# (cores, load average before and after, duration) in each <name>.json under "bench_run" and in the overview
# table, and joins the summaries into bench/results/summary.md. Nothing here asserts a figure.
#   scripts/bench.sh [NAME…]   only these parts (e.g. `scripts/bench.sh pipeline gateway`)
# Exits non-zero if a part failed (the others still run; summary.md says which).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/dev-up.sh
set -a; source .dev/env; set +a
mkdir -p bench/results
# Release builds first, once, so each part's timing is its run rather than the compiler.
echo "bench: building (release)…" >&2
swift build -c release >&2
swift build -c release --package-path bench >&2
load() { cut -d' ' -f1-3 /proc/loadavg; }
overview=(); sections=(); failed=()
started=$(date -u +%Y-%m-%dT%H:%M:%SZ); t_all=$SECONDS
for script in bench/run-*.sh; do
  name=$(basename "$script" .sh); name=${name#run-}
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  before=$(load); t0=$SECONDS
  echo "bench: $name (cores $(nproc), load average $before)" >&2
  if bash "$script" >&2; then status=ok; else status=FAILED; failed+=("$name"); fi
  after=$(load); dt=$((SECONDS - t0))
  overview+=("| $name | $status | ${dt} s | $(nproc) | $before | $after |")
  if [ $status = ok ] && [ -f "bench/results/$name.json" ]; then
    python3 - "bench/results/$name.json" "$(nproc)" "$before" "$after" "$dt" <<'PY'
import json, sys
path, cores, before, after, seconds = sys.argv[1:]
d = json.load(open(path))
d["bench_run"] = {"cores": int(cores), "loadavg_before": before.split(), "loadavg_after": after.split(), "seconds": int(seconds)}
json.dump(d, open(path, "w"), indent=2)
PY
  fi
  if [ $status = ok ] && [ -f "bench/results/$name.md" ]; then
    sections+=("$(cat "bench/results/$name.md")"$'\n\n'"_Machine for the figures above: $(nproc) cores, load average $before (before) → $after (after), ${dt} s._")
  else
    sections+=("## $name: FAILED (see the make bench output)")
  fi
done
{
  echo "# Benchmark summary"
  echo
  echo "Run $started on $(uname -m), $(nproc) cores (shared with other work: figures are indicative), $((SECONDS - t_all)) s for the parts below after the builds."
  echo "Load average = 1/5/15-minute averages from /proc/loadavg before and after each part."
  echo
  echo "| part | status | duration | cores | load average before | after |"
  echo "| --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${overview[@]}"
  echo
  for s in "${sections[@]}"; do printf '%s\n\n' "$s"; done
} > bench/results/summary.md
cat bench/results/summary.md
if [ ${#failed[@]} -gt 0 ]; then echo "bench: failed: ${failed[*]}" >&2; exit 1; fi
