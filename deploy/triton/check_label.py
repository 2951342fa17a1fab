#!/usr/bin/env python3
"""Checks `te features --label` against label.py (an independent implementation of DESIGN.md's label) on a
slice of a real recording: the same rows labelled, the same `eligible`, the same `return_bps`.

Usage: check_label.py [TE]   (default $TE_BIN_DIR/te, else .build/debug/te). Pure python3, a few seconds.
"""
import gzip
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import label  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
RECORDING = next(p for p in (os.path.join(ROOT, "..", "shared", "data", "binance", "usdm_btcusdt_20240808.gz"),
                             "/work/shared/data/binance/usdm_btcusdt_20240808.gz") if os.path.exists(p))
SLICE_S = 40  # the first 40 s: about 10k messages, both labels present and a tail whose horizon is past the end


def parse_eligible(text):
    t = text.strip().lower()
    if t in ("", "null", "nan", "none"):
        return None
    return 1.0 if t in ("1", "true", "1.0") else 0.0


def main():
    te = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("TE_BIN_DIR", os.path.join(ROOT, ".build", "debug")), "te")
    with tempfile.TemporaryDirectory() as tmp:
        sliced = os.path.join(tmp, "slice.gz")
        with gzip.open(RECORDING, "rt") as src, gzip.open(sliced, "wt") as dst:
            first = None
            for line in src:
                ts = int(line[:line.find(" ")])
                first = ts if first is None else first
                if ts - first > SLICE_S * 1_000_000_000:
                    break
                dst.write(line)
        out = os.path.join(tmp, "f.csv")
        env = dict(os.environ, OUTCOME_HORIZON_MS="5000", OUTCOME_COST_BPS="4")
        subprocess.run([te, "features", sliced, "--label", "-o", out], check=True, env=env, stderr=subprocess.DEVNULL)
        with open(out) as f:
            header = f.readline().strip().split(",")
            rows = [line.rstrip("\n").split(",") for line in f]
        _, qts, bid, _, ask, _ = label.read_quotes(sliced)
    c = {h: i for i, h in enumerate(header)}
    ts = [int(r[c["ts_ns"]]) for r in rows]
    rets, elig, valid = label.label(qts, bid, ask, ts, 5000, 4.0)
    bad = []
    for k, r in enumerate(rows):
        te_e = parse_eligible(r[c["eligible"]])
        if (te_e is None) != (not valid[k]):
            bad.append(f"row {k} ts {ts[k]}: te eligible {r[c['eligible']]!r}, label.py valid={valid[k]}")
        elif te_e is not None:
            te_r = float(r[c["return_bps"]])
            if te_e != elig[k] or not math.isclose(te_r, rets[k], rel_tol=1e-9, abs_tol=1e-9):
                bad.append(f"row {k} ts {ts[k]}: te ({te_e}, {te_r}) vs label.py ({elig[k]}, {rets[k]})")
    n_valid = sum(valid)
    n_pos = sum(e for e, v in zip(elig, valid) if v)
    print(f"check_label: {len(rows)} rows, {n_valid} labelled, {int(n_pos)} eligible, {len(rows) - n_valid} without label; "
          f"{len(bad)} mismatches")
    for b in bad[:10]:
        print("  " + b)
    if bad or n_pos == 0 or n_pos == n_valid or n_valid == len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
