#!/usr/bin/env python3
"""Scores feature rows with one LightGBM model version outside Triton: the test suite's independent check of what
model.py serves (Tests/TritonTests). Usage: score_reference.py VERSION_DIR ROWS_FILE, ROWS_FILE one row of 8
comma-separated numbers per line; prints one probability per line (float64, repr).

The computation written out from the artefact's own definition, not model.py's code: `lightgbm.Booster.predict`
on the booster file the manifest names, then the isotonic map of calibration.json (numpy.interp of its
breakpoints, clamped at both ends). Run with the train venv (.dev/venv-train), not Triton's.
"""
import json
import os
import sys

import lightgbm
import numpy as np


def main():
    vdir, rows_file = sys.argv[1], sys.argv[2]
    manifest = json.load(open(os.path.join(vdir, "weights.json")))
    if manifest.get("kind") != "lightgbm":
        sys.exit(f"score_reference.py: {vdir} serves {manifest.get('kind')!r}, not lightgbm")
    booster = lightgbm.Booster(model_file=os.path.join(vdir, manifest["booster"]))
    cal = json.load(open(os.path.join(vdir, manifest["calibration"])))
    x = np.loadtxt(rows_file, delimiter=",", ndmin=2, dtype=np.float64)
    raw = booster.predict(x)
    p = np.interp(raw, np.asarray(cal["x"], dtype=np.float64), np.asarray(cal["y"], dtype=np.float64))
    sys.stdout.write("".join(f"{v!r}\n" for v in p.tolist()))


if __name__ == "__main__":
    main()
