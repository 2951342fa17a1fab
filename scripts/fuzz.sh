#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the parsers that face the outside: builds fuzz/ with
# -sanitize=fuzzer,address, seeds each target from the real recordings (../shared/data) and its committed
# seeds (fuzz/corpus/<target>), runs each for FUZZ_SECONDS and keeps any crashing input in
# fuzz/regressions/<target>/, which FuzzRegressionTests replays in the main suite. Exits 1 on a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
DATA=${TE_DATA_DIR:-$(cd .. && pwd)/shared/data}
CORPUS=.dev/fuzz-corpus
TARGETS=(normalizer stream-codec score-request http-framing)

start=$(date +%s)
for target in "${TARGETS[@]}"; do
    "$SWIFT" build --package-path fuzz -c debug -Xswiftc -sanitize=fuzzer,address --product "fuzz-$target" 2>&1 \
        | grep -v "Cannot export local symbol" | tail -1
done
echo "fuzz: build $(($(date +%s) - start)) s"
bin="$("$SWIFT" build --package-path fuzz -c debug --show-bin-path)"

# A few hundred real messages per venue, one per file (the receive time prefix removed), and a few runs
# of consecutive messages around each depth snapshot so the book state machines get exercised.
seed_venue() { # name, then the messages on stdin
    local dir=$CORPUS/normalizer/$1 n=0
    mkdir -p "$dir"
    while IFS= read -r line; do
        n=$((n + 1))
        printf '%s\n' "$line" > "$dir/$n"
    done
}
if [ ! -d $CORPUS/normalizer ] && [ -d "$DATA" ]; then
    set +o pipefail # `head` closes the decompressors' pipes early
    for file in "$DATA"/binance/*.gz; do
        name=$(basename "$file" .gz)
        # every 10th of the first 3000 lines: the mix of bookTicker, trade, depth and the snapshot
        zcat "$file" | head -3000 | cut -d' ' -f2- | awk '(NR % 10 == 1 || /lastUpdateId/) && length($0) < 65536' | seed_venue "$name"
        zcat "$file" | head -3000 | cut -d' ' -f2- | grep -n -m1 lastUpdateId | cut -d: -f1 | while read -r at; do
            zcat "$file" | cut -d' ' -f2- | sed -n "$((at > 20 ? at - 20 : 1)),$((at + 40))p" > "$CORPUS/normalizer/$name/sequence"
        done
    done
    zcat "$DATA"/hyperliquid/*.gz | head -300 | cut -d' ' -f2- | seed_venue hyperliquid
    zstd -dc "$DATA"/cryptofeed/KRAKEN.jsonl.zst | python3 -c '
import json, sys
for line in sys.stdin:
    entry = json.loads(line)
    if entry.get("t") == "recv" and len(entry["data"]) < 4096: print(entry["data"])' 2>/dev/null | head -300 | seed_venue kraken
    set -o pipefail
fi
mkdir -p $CORPUS/normalizer $CORPUS/stream-codec

status=0
for target in "${TARGETS[@]}"; do
    mkdir -p "fuzz/regressions/$target" "$CORPUS/$target/new"
    before=$(ls "fuzz/regressions/$target" | wc -l)
    log=.dev/fuzz-$target.log
    # New inputs go to the first directory (not committed); a crash goes to fuzz/regressions/<target>/.
    # The Swift backtracer is off: libFuzzer reports the crash itself, and the backtracer would hold the
    # process until it is done symbolicating.
    set +e
    # FUZZ_SEED (0 = random): `make test` fixes it so CI's short run is repeatable; `make fuzz` explores.
    # fuzz/lsan.supp: allocations LeakSanitizer cannot see held (swift-prometheus' metric storage).
    LSAN_OPTIONS=suppressions=$PWD/fuzz/lsan.supp SWIFT_BACKTRACE=enable=no "$bin/fuzz-$target" -seed="${FUZZ_SEED:-0}" -max_total_time="$FUZZ_SECONDS" -timeout=10 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="fuzz/regressions/$target/" \
        "$CORPUS/$target/new" $(find "$CORPUS/$target" -mindepth 1 -maxdepth 1 -type d ! -name new) \
        "fuzz/corpus/$target" > "$log" 2>&1
    rc=$?
    set -e
    stats=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(grep -E 'stat::average_exec_per_sec' "$log" | awk '{print $2}' || true)
    echo "fuzz: $target ${FUZZ_SECONDS}s: exit $rc, ${execs:-?} execs/s, $stats"
    if [ "$rc" -ne 0 ] || [ "$(ls "fuzz/regressions/$target" | wc -l)" -ne "$before" ]; then
        echo "fuzz: $target FOUND A CRASH (see $log; input kept in fuzz/regressions/$target/)" >&2
        grep -E 'Fatal error|ERROR: AddressSanitizer|ERROR: libFuzzer' "$log" | head -5 >&2 || true
        status=1
    fi
done
exit $status
