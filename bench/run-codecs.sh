#!/usr/bin/env bash
# Stream codecs: ns and allocations per entry of each message's codec (TEModels' StreamFieldWriter and
# hand-written readers) against the Codable encoding it replaced, on the USD-M recording and messages made
# from it. Writes bench/results/codecs.json and codecs.md. Release build; allocations via malloc-interposer.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
data=$(bench_data_dir)
mkdir -p bench/results
swift build -c release --package-path bench --product codec-bench >&2
bench_bin=$(swift build -c release --package-path bench --show-bin-path)
LD_PRELOAD="$bench_bin/libMallocInterposerSwift.so" "$bench_bin/codec-bench" "$data/binance/usdm_btcusdt_20240808.gz" \
  --passes "${BENCH_PASSES:-9}" --json bench/results/codecs.json > /dev/null
python3 - <<'PY'
import json
d = json.load(open("bench/results/codecs.json"))
load = open("/proc/loadavg").read().split()[:3]
def a(c):
    v = c["allocations_per_entry"]
    return "n/a" if v is None else f"{v:g}"
out = ["# Stream codecs", "",
       f"Per entry, release build, `{d['input']}` and messages made from it (median of {d['passes']} passes). "
       "Encode: message → XADD command; decode: the entry's fields as read → message. "
       "Codable = the path every stage used before (StreamFieldEncoder/Decoder over Codable and JSONEncoder/JSONDecoder "
       "for nested values); codec = the message's own writer and reader (TEModels StreamCodecs). "
       "Both write the same text (checked on every run). Reading Tick and FeatureSnapshot already had hand-written "
       "readers before this work (the codec column, changed only in the snapshot's feature-name lookup), so their "
       "Codable decode column is the fallback for rejected entries, not what the stages ran before. Under heavy load "
       "the ns figures are inflated alike for both columns; allocations do not depend on load.", "",
       "| message | entries | field bytes | encode Codable ns / allocs | encode codec ns / allocs | speed-up | decode Codable ns / allocs | decode codec ns / allocs | speed-up |",
       "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for r in d["rows"]:
    ec, en, dc, dn = r["encode_codable"], r["encode_codec"], r["decode_codable"], r["decode_codec"]
    out.append(f"| {r['message']} | {r['entries']} | {r['field_bytes_per_entry']} | {ec['ns_per_entry']:.0f} / {a(ec)} | "
               f"{en['ns_per_entry']:.0f} / {a(en)} | {ec['ns_per_entry'] / en['ns_per_entry']:.1f}× | "
               f"{dc['ns_per_entry']:.0f} / {a(dc)} | {dn['ns_per_entry']:.0f} / {a(dn)} | {dc['ns_per_entry'] / dn['ns_per_entry']:.1f}× |")
out += ["", f"Allocations counted: {d['allocations_measured']} (calibration: {d['malloc_calibration_count_for_1000']} of 1000). "
        f"Load average after the run: {' '.join(load)} (2 shared cores: figures are indicative). Reproduce: `bench/run-codecs.sh`."]
open("bench/results/codecs.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
