#!/usr/bin/env bash
# make bench: every benchmark under bench/ in turn (release builds, local servers from dev-up).
# Each bench/run-<name>.sh writes bench/results/<name>.json and <name>.md; this script adds the machine
# (cores, load average) and joins the summaries into bench/results/summary.md. Nothing here asserts a figure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/dev-up.sh
set -a; source .dev/env; set +a
mkdir -p bench/results
only=${1:-}
machine() { printf 'cores %s, load average %s, %s' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(uname -m)"; }
{
  echo "# Benchmark summary"
  echo
  echo "Run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(machine)."
  echo
} > bench/results/summary.md.tmp
for script in bench/run-*.sh; do
  name=$(basename "$script" .sh); name=${name#run-}
  [ -n "$only" ] && [ "$only" != "$name" ] && continue
  echo "bench: $name (machine: $(machine))" >&2
  if bash "$script"; then
    [ -f "bench/results/$name.md" ] && { cat "bench/results/$name.md"; echo; } >> bench/results/summary.md.tmp
  else
    echo "## $name: FAILED (see output above)" >> bench/results/summary.md.tmp
  fi
done
mv bench/results/summary.md.tmp bench/results/summary.md
cat bench/results/summary.md
