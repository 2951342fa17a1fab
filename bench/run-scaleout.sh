#!/usr/bin/env bash
# Scale-out benchmark (issue #16; bench/scaleout.py does the work): feature-pipeline and opportunity-aggregator
# with 1 vs 2 replicas on STREAM_SHARDS=4 (a preloaded input drained again per row), feature-pipeline's
# rebalance after a scale-up and after a SIGKILL (lease moved → first write by the new owner), and the same
# drains on a single redis-server vs a 3-master Redis Cluster with replicas. Private servers (redis-server,
# cluster, dev-broker) started here; release builds. Writes bench/results/scaleout.json and scaleout.md.
#   TE_BIN_DIR=…  use these binaries instead of building (e.g. a debug build for a dry run)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh
DATA=$(bench_data_dir)
mkdir -p bench/results
if [ -z "${TE_BIN_DIR:-}" ]; then
  for p in ingest feature-pipeline strategy-engine opportunity-aggregator te dev-broker; do
    swift build -c release --product $p >&2
  done
  TE_BIN_DIR=$(swift build -c release --show-bin-path)
fi
python3 bench/scaleout.py --bin "$TE_BIN_DIR" --root "$ROOT" --data "$DATA" --out bench/results "$@"
