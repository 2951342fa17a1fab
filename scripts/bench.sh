#!/usr/bin/env bash
# make bench: every benchmark under bench/ in turn (release builds, local servers from dev-up).
# Each bench/run-<name>.sh writes bench/results/<name>.json and <name>.md; this script records the machine
# (cores, load average before and after, duration) in each <name>.json under "bench_run" and next to each
# part's figures, and joins every part's results into bench/results/summary.md. Nothing asserts a figure.
#   scripts/bench.sh [NAME…]   only these parts (e.g. `scripts/bench.sh pipeline gateway`); the summary
#                              still lists every part, with the run each figure came from
#   scripts/bench.sh --summary only rewrite summary.md from the results
# Exits non-zero if a part failed (the others still run; summary.md says which).
set -euo pipefail
cd "$(dirname "$0")/.."
SUMMARY_ONLY=0
[ "${1:-}" = "--summary" ] && SUMMARY_ONLY=1
failed=()
if [ $SUMMARY_ONLY = 0 ]; then
scripts/dev-up.sh
set -a; source .dev/env; set +a
mkdir -p bench/results
# Release builds first, once, so each part's timing is its run rather than the compiler.
echo "bench: building (release)…" >&2
scripts/build-release.sh >&2
swift build -c release --package-path bench >&2
load() { cut -d' ' -f1-3 /proc/loadavg; }
t_all=$SECONDS
for script in bench/run-*.sh; do
  name=$(basename "$script" .sh); name=${name#run-}
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  before=$(load); t0=$SECONDS; at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  echo "bench: $name (cores $(nproc), load average $before)" >&2
  rm -f "bench/results/$name.failed"
  if bash "$script" >&2 && [ -f "bench/results/$name.json" ]; then
    python3 - "bench/results/$name.json" "$(nproc)" "$before" "$(load)" "$((SECONDS - t0))" "$at" <<'PY'
import json, sys
path, cores, before, after, seconds, at = sys.argv[1:]
d = json.load(open(path))
d["bench_run"] = {"at": at, "cores": int(cores), "loadavg_before": before.split(), "loadavg_after": after.split(),
                  "seconds": int(seconds)}
json.dump(d, open(path, "w"), indent=2)
PY
  else
    failed+=("$name"); echo "$at" > "bench/results/$name.failed"
  fi
done
echo "bench: $((SECONDS - t_all)) s for the parts after the builds" >&2
fi

parts=()
for script in bench/run-*.sh; do name=$(basename "$script" .sh); parts+=("${name#run-}"); done
python3 - bench/results "${parts[@]}" <<'PY' > bench/results/summary.md
import json, os, platform, sys
results, *parts = sys.argv[1:]
rows, sections = [], []
for name in parts:
    js, md, failed = (os.path.join(results, f"{name}.{e}") for e in ("json", "md", "failed"))
    if os.path.exists(failed):
        rows.append(f"| {name} | FAILED at {open(failed).read().strip()} | | | | |")
        sections.append(f"## {name}: FAILED (see the make bench output)")
        continue
    if not os.path.exists(js):
        rows.append(f"| {name} | not run | | | | |")
        continue
    run = json.load(open(js)).get("bench_run")
    if run:
        before, after = " ".join(run["loadavg_before"]), " ".join(run["loadavg_after"])
        rows.append(f"| {name} | ok, {run.get('at', 'earlier')} | {run['seconds']} s | {run['cores']} | {before} | {after} |")
        machine = f"_Machine for the figures above: {run['cores']} cores, load average {before} (before) → {after} (after); run {run.get('at', 'earlier')}, {run['seconds']} s._"
    else:
        rows.append(f"| {name} | results from an earlier run | | | | |")
        machine = "_Machine: see the figures above (an earlier run, not through make bench)._"
    text = open(md).read().strip() if os.path.exists(md) else f"## {name}\n\n(no Markdown summary)"
    sections.append(f"{text}\n\n{machine}")
print("# Benchmark summary\n")
print(f"{platform.machine()}, {os.cpu_count()} cores shared with other work: figures are indicative. "
      "Load average = the 1/5/15-minute averages of /proc/loadavg before and after each part.\n")
print("| part | status, run at (UTC) | duration | cores | load average before | after |")
print("| --- | --- | --- | --- | --- | --- |")
print("\n".join(rows) + "\n")
print("\n\n".join(sections))
PY
cat bench/results/summary.md
if [ ${#failed[@]} -gt 0 ]; then echo "bench: failed: ${failed[*]}" >&2; exit 1; fi
