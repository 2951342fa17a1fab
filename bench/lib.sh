# Sourced by bench/run-*.sh after they `cd` to the checkout: one way to load the dev servers' environment and
# to find the recordings.

# Loads .dev/env (starting the dev servers if it is missing) unless the variable named $1 is already set.
bench_env() {
  if [ -z "${!1:-}" ]; then
    [ -f .dev/env ] || scripts/dev-up.sh
    set -a; source .dev/env; set +a
  fi
}

# The recordings: TE_DATA_DIR, else shared/data beside the checkout (the tests' RecordedData looks the same way).
bench_data_dir() {
  local dir=${TE_DATA_DIR:-$PWD/../shared/data}
  if [ ! -d "$dir/binance" ]; then
    echo "bench: no recordings under $dir: set TE_DATA_DIR to the shared data directory" >&2
    return 1
  fi
  echo "$dir"
}
