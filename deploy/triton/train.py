#!/usr/bin/env python3
"""Trains and evaluates `trade_eligibility` honestly, writes REPORT.md and the served versions 1 and 2.

Features: `te features` over every Binance recording in ../shared/data/binance (the serving feature code), COIN-M
included. Label: DESIGN.md "Model quality" (eligible = |ln(mid_{t+H}/mid_t)|*1e4 > spread_t/2 + cost), from
`te features --label` when TE_LABEL=1 (columns return_bps, eligible), else from label.py (independent Python);
when both exist they are compared and the mismatch count is reported.

Splits (by receive time): each day's window (all its instruments) is cut into 6 equal blocks B0..B5, and block k of
every day is one segment, so every fold holds both regimes (the calm 2024-07-18, the busy 2024-08-08 evening).
Walk-forward folds: train on B0..B(k-2), calibrate on B(k-1), validate on Bk (k = 2, 3); the final model trains on
B0..B2, calibrates on B3 and is tested once on B4+B5 (the last third of every day: out of time). Before every
boundary the last H + 5 s of the earlier block are purged (its labels look across the boundary; 5 s of embargo).

Models: constant (training base rate), v1 and v2 as served before (previous_v*_weights.json), logistic regression
(standardised, L2, Newton) + Platt, LightGBM + isotonic. Calibration is always fitted on the fold after the training
data, pooled over days and instruments. The report has ECE and Brier per day and per instrument out of time.
Gate: a candidate replaces v1 only when its out-of-time Brier beats the constant's and v1's with a block-bootstrap
95 % interval of the difference excluding zero; otherwise the report says "no edge" and what ships as v1 is the
calibrated model that is no worse than the constant (ECE <= 0.05), a near-constant if need be. Version 2 (the
canary) is the LightGBM candidate (booster file + calibration map, served by model.py with lightgbm) unless it is
v1; the live rollout judges it against v1 on realised outcomes.
"""
import argparse
import csv
import glob
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np

import label as pylabel

FEATURES = ["spread_bps", "imbalance", "depth_imbalance", "ofi_norm",
            "realized_vol_bps", "mid_return_bps", "tick_rate", "microprice_offset_bps"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
MODEL_DIR = os.path.join(HERE, "model_repository", "trade_eligibility")
THRESHOLD = 0.5  # gateway DECISION_THRESHOLD default: score >= threshold -> trade
N_BLOCKS = 6
GAP_EXTRA_NS = 5_000_000_000
SEED = 17
LEFT_OUT = []  # recordings te features gave no rows for
LOAD_BEFORE = "?"
FRESH = []  # recordings whose `te features` CSV this run made (the others came from the cache)


# ----------------------------------------------------------------------------------------------- data
def te_features(te, path, cache_dir, with_label, horizon_ms, cost_bps):
    """The `te features` CSV of one recording (cached by recording name and options)."""
    tag = f"{os.path.basename(path)}.{'label' if with_label else 'plain'}.{horizon_ms}.{cost_bps}.csv"
    out = os.path.join(cache_dir, tag)
    if not os.path.exists(out):
        FRESH.append(os.path.basename(path))
        cmd = [te, "features", path, "-o", out + ".tmp"] + (["--label"] if with_label else [])
        env = dict(os.environ, OUTCOME_HORIZON_MS=str(horizon_ms), OUTCOME_COST_BPS=str(cost_bps))
        r = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"train.py: {' '.join(cmd)} failed: {r.stderr.strip()}")
        os.replace(out + ".tmp", out)
    with open(out) as f:
        rows = list(csv.reader(f))
    if len(rows) <= 1:
        return None, None
    header, body = rows[0], rows[1:]
    return header, body


def load(te, recordings, cache_dir, use_te_label, horizon_ms, cost_bps):
    """Per recording: ts[], X[n,8], y[], valid[], instrument name, day, label mismatches vs label.py."""
    data = []
    for path in recordings:
        name = os.path.basename(path).replace(".gz", "")
        header, body = te_features(te, path, cache_dir, use_te_label, horizon_ms, cost_bps)
        if header is None:
            print(f"train.py: {name}: te features gave no rows; left out", file=sys.stderr)
            LEFT_OUT.append(name)
            continue
        col = {h: i for i, h in enumerate(header)}
        ts = np.array([int(r[col["ts_ns"]]) for r in body], dtype=np.int64)
        X = np.array([[float(r[col[n]]) for n in FEATURES] for r in body])
        _, qts, b, _, a, _ = pylabel.read_quotes(path)
        _, py_y, py_valid = pylabel.label(qts, b, a, ts.tolist(), horizon_ms, cost_bps)
        py_y, py_valid = np.array(py_y), np.array(py_valid, dtype=bool)
        mismatch = None
        if use_te_label:
            te_y = np.array([float(r[col["eligible"]]) if r[col["eligible"]] not in ("", "null") else np.nan for r in body])
            te_valid = ~np.isnan(te_y)
            both = te_valid & py_valid
            mismatch = int(np.sum(te_y[both] != py_y[both])) + int(np.sum(te_valid != py_valid))
            y, valid = np.nan_to_num(te_y), te_valid
        else:
            y, valid = py_y, py_valid
        day = re.search(r"(\d{8})", name).group(1)
        data.append({"name": name, "day": day, "ts": ts[valid], "X": X[valid], "y": y[valid],
                     "rows": len(ts), "labelled": int(valid.sum()), "mismatch": mismatch})
    return data


def split(data, horizon_ms):
    """Cuts each day's window (all its instruments) into N_BLOCKS equal blocks by receive time and assigns each row
    its block index; rows in the last H + 5 s before a block boundary are purged (segment -99: in none). Block k of
    every day is one walk-forward segment, so every fold and the out-of-time test hold rows of every day."""
    edges = {}
    gap = horizon_ms * 1_000_000 + GAP_EXTRA_NS
    for day in sorted({d["day"] for d in data}):
        lo = min(d["ts"][0] for d in data if d["day"] == day)
        hi = max(d["ts"][-1] for d in data if d["day"] == day) + 1
        edges[day] = np.linspace(lo, hi, N_BLOCKS + 1).astype(np.int64)
    for d in data:
        e = edges[d["day"]]
        seg = np.clip(np.searchsorted(e, d["ts"], side="right") - 1, 0, N_BLOCKS - 1)
        purged = np.zeros(len(seg), dtype=bool)
        for b in e[1:-1]:
            purged |= (d["ts"] >= b - gap) & (d["ts"] < b)
        seg[purged] = -99
        d["seg"] = seg
    return edges


def instrument(name):
    """The instrument of a recording name: market and symbol without the day (usdm_btcusdt_20240808 -> usdm_btcusdt)."""
    return re.sub(r"_\d{8}$", "", name)


def rows(data, segs, days=None):
    m = [np.isin(d["seg"], segs) & (days is None or d["day"] in days) for d in data]
    X = np.concatenate([d["X"][k] for d, k in zip(data, m)])
    y = np.concatenate([d["y"][k] for d, k in zip(data, m)])
    inst = np.concatenate([np.full(k.sum(), i) for i, k in enumerate(m)])
    ts = np.concatenate([d["ts"][k] for d, k in zip(data, m)])
    return X, y, inst, ts


# ----------------------------------------------------------------------------------------------- models
def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def logit(p):
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def fit_logistic_raw(Z, y, l2, iters=30):
    """Newton's method on [1, Z] with an L2 penalty on the slopes (not the intercept)."""
    A = np.hstack([np.ones((len(Z), 1)), Z])
    w = np.zeros(A.shape[1])
    w[0] = logit(y.mean())
    pen = np.full(A.shape[1], l2); pen[0] = 0.0
    for _ in range(iters):
        p = sigmoid(A @ w)
        g = A.T @ (p - y) + pen * w
        H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(pen) + 1e-9 * np.eye(A.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


def fit_logistic(X, y, l2=1.0):
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    w = fit_logistic_raw((X - mean) / std, y, l2)
    return {"mean": mean, "std": std, "coef": w[1:], "intercept": float(w[0])}


def logistic_z(m, X):
    return ((X - m["mean"]) / m["std"]) @ m["coef"] + m["intercept"]


def platt(z, y):
    """Platt scaling p = σ(a z + c) fitted on a later fold; returns (a, c)."""
    w = fit_logistic_raw(z[:, None], y, 0.0)
    return float(w[1]), float(w[0])


def fold_platt(m, a, c):
    """A logistic model followed by Platt scaling is one logistic model: σ(a(w·z + b) + c)."""
    return {"mean": m["mean"], "std": m["std"], "coef": a * m["coef"], "intercept": a * m["intercept"] + c}


def isotonic(p, y):
    """Pool-adjacent-violators on (score, label); returns breakpoints (x, y) for np.interp."""
    o = np.argsort(p, kind="mergesort")
    xs, ys = p[o], y[o].astype(float)
    vals, wts, xlo, xhi = [], [], [], []
    for x, v in zip(xs, ys):
        vals.append(v); wts.append(1.0); xlo.append(x); xhi.append(x)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            w = wts[-2] + wts[-1]
            v2 = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            vals[-2:] = [v2]; wts[-2:] = [w]; xhi[-2:] = [xhi[-1]]; xlo[-2:] = [xlo[-2]]
    bx, by = [], []
    for v, lo, hi in zip(vals, xlo, xhi):
        bx += [lo, hi]; by += [v, v]
    return np.array(bx), np.array(by)


def fit_lgbm(X, y, seed=SEED):
    import lightgbm as lgb
    params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 500,
              "feature_fraction": 0.8, "bagging_fraction": 0.7, "bagging_freq": 1, "lambda_l2": 10.0,
              "verbose": -1, "seed": seed, "num_threads": 2, "deterministic": True, "force_row_wise": True}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=150)


# ----------------------------------------------------------------------------------------------- metrics
def auc(y, p):
    if y.min() == y.max():
        return float("nan")
    o = np.argsort(p, kind="mergesort")
    ps = p[o]
    ranks = np.empty(len(p))
    # average ranks for ties
    i = 0
    r = np.arange(1, len(p) + 1, dtype=float)
    uniq, start, counts = np.unique(ps, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[o] = np.repeat(avg, counts)
    pos = y == 1
    npos, nneg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def ece(y, p, bins=10):
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(y[m].mean() - p[m].mean())
    return total / len(y)


def metrics(y, p, const):
    trade = p >= THRESHOLD
    return {"n": int(len(y)), "base_rate": float(y.mean()), "brier": float(np.mean((p - y) ** 2)),
            "brier_const": float(np.mean((const - y) ** 2)), "ece": float(ece(y, p)),
            "coverage": float(trade.mean()), "precision": float(y[trade].mean()) if trade.any() else float("nan"),
            "auc": auc(y, p), "mean_score": float(p.mean())}


def block_bootstrap(y, p_a, p_b, inst, ts, block_ns=5_000_000_000, n=1000, seed=SEED):
    """95 % interval of Brier(b) − Brier(a) (positive: a is better), resampling 5 s blocks per instrument
    (rows inside one horizon share their future, so single rows are not independent)."""
    key = inst.astype(np.int64) * 10**6 + (ts // block_ns)
    _, blk = np.unique(key, return_inverse=True)
    nb = blk.max() + 1
    da = np.bincount(blk, weights=(p_a - y) ** 2, minlength=nb)
    db = np.bincount(blk, weights=(p_b - y) ** 2, minlength=nb)
    cnt = np.bincount(blk, minlength=nb).astype(float)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n)
    for i in range(n):
        s = rng.integers(0, nb, nb)
        c = cnt[s].sum()
        diffs[i] = (db[s].sum() - da[s].sum()) / c
    point = float(np.mean((p_b - y) ** 2) - np.mean((p_a - y) ** 2))
    return point, float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5)), int(nb)


# ----------------------------------------------------------------------------------------------- one fold
def run_fold(data, train_segs, calib_segs, test_segs, v1, v2, models_out=None, train_days=None, test_days=None):
    Xtr, ytr, _, _ = rows(data, train_segs, train_days)
    Xca, yca, _, _ = rows(data, calib_segs, train_days)
    Xte, yte, ite, tte = rows(data, test_segs, test_days)
    const = float(ytr.mean())
    t0 = time.time()
    lr = fit_logistic(Xtr, ytr)
    a, c = platt(logistic_z(lr, Xca), yca)
    lr_cal = fold_platt(lr, a, c)
    t_lr = time.time() - t0
    t0 = time.time()
    gbm = fit_lgbm(Xtr, ytr)
    iso = isotonic(gbm.predict(Xca), yca)
    t_gbm = time.time() - t0
    const_cal = float(yca.mean())  # the constant refitted on the calibration fold (the latest base rate)
    preds = {
        "constant (train base rate)": np.full(len(yte), const),
        "constant (calibration-fold base rate)": np.full(len(yte), const_cal),
        "v1 (served before)": sigmoid(logistic_z(v1, Xte)),
        "v2 (canary before)": sigmoid(logistic_z(v2, Xte)),
        "logistic (uncalibrated)": sigmoid(logistic_z(lr, Xte)),
        "logistic + Platt": sigmoid(logistic_z(lr_cal, Xte)),
        "LightGBM (uncalibrated)": gbm.predict(Xte),
        "LightGBM + isotonic": np.interp(gbm.predict(Xte), iso[0], iso[1]),
    }
    res = {k: metrics(yte, p, const) for k, p in preds.items()}
    if models_out is not None:
        models_out.update({"lr_cal": lr_cal, "lr": lr, "platt": (a, c), "gbm": gbm, "iso": iso, "const": const,
                           "const_cal": const_cal, "preds": preds, "yte": yte, "ite": ite, "tte": tte,
                           "Xtr": Xtr, "n_train": len(ytr), "n_calib": len(yca), "t_lr": t_lr, "t_gbm": t_gbm})
    return res


# ----------------------------------------------------------------------------------------------- artefact
def reference(X):
    """Per feature: decile cut points of the training distribution (`edges`, ascending, duplicates removed) and
    the training proportion of each bin: bin 0 = (-inf, e0), bin i = [e(i-1), e(i)), last = [e(last), inf), i.e. the
    bin of v is numpy.searchsorted(edges, v, side="right") — the outcome-tracker's rule."""
    ref = {}
    for i, name in enumerate(FEATURES):
        edges = np.unique(np.quantile(X[:, i], np.linspace(0.1, 0.9, 9)))
        idx = np.searchsorted(edges, X[:, i], side="right")
        prop = np.bincount(idx, minlength=len(edges) + 1) / len(X)
        ref[name] = {"edges": [float(e) for e in edges], "proportions": [float(p) for p in prop]}
    return {"features": ref, "binning": "bin of v = searchsorted(edges, v, side=right): bin 0 = (-inf, edges[0]), bin i = [edges[i-1], edges[i]), last = [edges[-1], inf)"}


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def set_config_hash(version, digest):
    path = os.path.join(MODEL_DIR, "config.pbtxt")
    config = open(path).read()
    key = f"artefact_sha256_v{version}"
    config, n = re.subn(r'(key: "%s"\s*value: \{\s*string_value: ")[0-9a-f]*(")' % key, r"\g<1>%s\2" % digest, config)
    if n != 1:
        sys.exit(f"train.py: config.pbtxt has no parameter {key}")
    with open(path, "w") as f:
        f.write(config)


def write_version(version, manifest, ref, blobs=None):
    """Writes one version directory: reference.json and the files in `blobs` (name -> bytes), then the manifest
    weights.json with `files` = {name: sha256} of all of them, so sha256(weights.json) — the artefact hash in
    config.pbtxt that model.py checks and the gateway reads — covers every file the version loads. Files of an
    earlier artefact that the new manifest does not name are removed (model.py stays)."""
    vdir = os.path.join(MODEL_DIR, str(version))
    blobs = dict(blobs or {}, **{"reference.json": (json.dumps(ref, indent=1, sort_keys=True) + "\n").encode()})
    files = {name: write_bytes(os.path.join(vdir, name), data) for name, data in sorted(blobs.items())}
    for name in os.listdir(vdir):
        if name not in files and name not in ("model.py", "weights.json", "__pycache__"):
            os.remove(os.path.join(vdir, name))
    manifest = dict(manifest, files=files)
    digest = write_bytes(os.path.join(vdir, "weights.json"), (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    set_config_hash(version, digest)
    return digest


def lightgbm_artefact(gbm, iso):
    """The booster in LightGBM's text format and its isotonic map (breakpoints for numpy.interp) as JSON."""
    booster = gbm.model_to_string().encode()
    cal = {"kind": "isotonic", "x": [float(v) for v in iso[0]], "y": [float(v) for v in iso[1]],
           "apply": "score = numpy.interp(booster.predict(x), x, y): piecewise linear, clamped at both ends"}
    return {"model.txt": booster, "calibration.json": (json.dumps(cal, indent=1) + "\n").encode()}


# ----------------------------------------------------------------------------------------------- report
def fmt(x, nd=4):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def table(title, res):
    out = [f"**{title}**", "", "| model | n | base rate | Brier | Brier const | ECE | coverage | precision@0.5 | AUC |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, m in res.items():
        out.append(f"| {k} | {m['n']} | {fmt(m['base_rate'], 3)} | {fmt(m['brier'])} | {fmt(m['brier_const'])} | "
                   f"{fmt(m['ece'], 3)} | {fmt(m['coverage'], 3)} | {fmt(m['precision'], 3)} | {fmt(m['auc'], 3)} |")
    return out + [""]


def reliability_png(path, y, preds):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for name, p in preds.items():
        idx = np.minimum((p * 10).astype(int), 9)
        xs, ys = [], []
        for b in range(10):
            m = idx == b
            if m.sum() >= 20:
                xs.append(p[m].mean()); ys.append(y[m].mean())
        ax.plot(xs, ys, "o-", label=name, ms=4)
        ax2.hist(p, bins=50, range=(0, 1), histtype="step", label=name)
    ax.set_xlabel("mean score (10 equal-width bins, >= 20 rows)"); ax.set_ylabel("observed eligible rate")
    ax.set_title("Reliability, out of time"); ax.legend(fontsize=7)
    ax2.set_yscale("log"); ax2.set_xlabel("score"); ax2.set_title("Score histogram, out of time")
    fig.tight_layout(); fig.savefig(path, dpi=90); plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--te", default=os.environ.get("TE", os.path.join(ROOT, ".build", "debug", "te")))
    ap.add_argument("--te-label", choices=["auto", "yes", "no"], default=os.environ.get("TE_LABEL", "auto"),
                    help="train on `te features --label` (auto: when this te has --label), else on label.py")
    ap.add_argument("--recordings", nargs="*", default=sorted(glob.glob(os.path.join(ROOT, "..", "shared", "data", "binance", "*.gz")))
                    or sorted(glob.glob("/work/shared/data/binance/*.gz")))
    ap.add_argument("--cache", default=os.path.join(ROOT, ".dev", "train-cache"))
    ap.add_argument("--horizon-ms", type=int, default=int(os.environ.get("OUTCOME_HORIZON_MS", 5000)))
    ap.add_argument("--cost-bps", type=float, default=float(os.environ.get("OUTCOME_COST_BPS", 4)))
    ap.add_argument("--no-write", action="store_true", help="report only; leave the model repository alone")
    args = ap.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    if args.te_label == "auto":
        helptext = subprocess.run([args.te, "features", "--help"], capture_output=True, text=True).stdout
        args.te_label = "--label" in helptext
    else:
        args.te_label = args.te_label == "yes"
    t_start = time.time()
    global LOAD_BEFORE
    LOAD_BEFORE = " / ".join(f"{x:.2f}" for x in os.getloadavg())

    data = load(args.te, args.recordings, args.cache, args.te_label, args.horizon_ms, args.cost_bps)
    t_load = time.time() - t_start
    edges = split(data, args.horizon_ms)
    days = sorted(edges)
    # The versions that served before this training (kept beside this script so re-running compares against the
    # same models): v1 the primary, v2 the canary.
    as_model = lambda w: {k: np.asarray(w[k], dtype=float) if k != "intercept" else float(w[k]) for k in ("mean", "std", "coef", "intercept")}
    v1 = as_model(json.load(open(os.path.join(HERE, "previous_v1_weights.json"))))
    v2 = as_model(json.load(open(os.path.join(HERE, "previous_v2_weights.json"))))

    folds = []
    for k in (2, 3):
        res = run_fold(data, list(range(k - 1)), [k - 1], [k], v1, v2)
        folds.append((f"fold {k - 1}: train B0..B{k - 2}, calibrate B{k - 1}, validate B{k} (every day)", res))
    final = {}
    oot = run_fold(data, [0, 1, 2], [3], [4, 5], v1, v2, final)
    # Leave one day out (diagnostic, not the gate): models that never saw the calm day, judged on all of it.
    calm, busy = days[0], days[-1]
    other_day = run_fold(data, [0, 1, 2], [3], list(range(N_BLOCKS)), v1, v2, train_days=[busy], test_days=[calm])

    # Candidate: the better calibrated learner on the validation folds (mean Brier), never chosen on out-of-time.
    cands = ["logistic + Platt", "LightGBM + isotonic"]
    cand = min(cands, key=lambda c: np.mean([r[c]["brier"] for _, r in folds]))
    y, inst, ts = final["yte"], final["ite"], final["tte"]
    P = final["preds"]
    ci_const = block_bootstrap(y, P[cand], P["constant (train base rate)"], inst, ts)
    ci_v1 = block_bootstrap(y, P[cand], P["v1 (served before)"], inst, ts)
    edge = ci_const[1] > 0 and ci_v1[1] > 0
    calibrated = lambda name: oot[name]["ece"] <= 0.05 and oot[name]["brier"] <= oot[name]["brier_const"]
    if edge:
        ship = cand
    else:
        ship = next((n for n in ["v1 (served before)", "logistic + Platt", "constant (calibration-fold base rate)"] if calibrated(n)),
                    "constant (calibration-fold base rate)")
    # The canary: the LightGBM candidate whenever it is not the primary already, so the quality-gated rollout judges
    # it against the primary on realised outcomes; if LightGBM ships as v1, the calibrated fallback is the canary.
    canary = "LightGBM + isotonic" if ship != "LightGBM + isotonic" else "constant (calibration-fold base rate)"
    ci_ship = block_bootstrap(y, P[ship], P["constant (train base rate)"], inst, ts)
    ci_ship_v1 = block_bootstrap(y, P[ship], P["v1 (served before)"], inst, ts)
    ci_canary = block_bootstrap(y, P[canary], P[ship], inst, ts)

    # Per day and per instrument, out of time.
    day_of = np.array([d["day"] for d in data])[inst]
    inst_of = np.array([instrument(d["name"]) for d in data])[inst]
    shown = ["constant (train base rate)", "constant (calibration-fold base rate)", "v1 (served before)",
             "logistic + Platt", "LightGBM + isotonic"]

    # --- the artefact: version 1 = primary, version 2 = canary.
    ref = reference(final["Xtr"])
    label_def = {"horizon_ms": args.horizon_ms, "cost_bps": args.cost_bps,
                 "definition": "eligible = |ln(mid_at_horizon/mid_at_decision)|*1e4 > spread_bps_at_decision/2 + cost_bps (DESIGN.md Model quality)",
                 "source": "te features --label" if args.te_label else "deploy/triton/label.py"}
    mean = final["Xtr"].mean(axis=0)
    std = np.where(final["Xtr"].std(axis=0) > 0, final["Xtr"].std(axis=0), 1.0)

    def artefact(version, name):
        """(manifest, blobs) of one shipped model; `mean`/`std` of the training rows are in every manifest."""
        training = {"shipped": name, "edge": bool(edge), "train": "B0..B2 of every day", "calibration": "B3 of every day",
                    "out_of_time": "B4..B5 of every day", "recordings": [d["name"] for d in data],
                    "oot_brier": oot[name]["brier"], "oot_brier_const": oot[name]["brier_const"],
                    "oot_ece": oot[name]["ece"], "oot_base_rate": oot[name]["base_rate"]}
        if name == "v1 (served before)":
            training.update(train="kept from the previous training (previous_v1_weights.json)", calibration=None)
        manifest = {"model": "trade_eligibility", "version": version, "features": FEATURES, "label": label_def,
                    "training": training, "mean": [float(x) for x in mean], "std": [float(x) for x in std]}
        if name == "LightGBM + isotonic":
            return dict(manifest, kind="lightgbm", booster="model.txt", calibration="calibration.json"), \
                lightgbm_artefact(final["gbm"], final["iso"])
        m = final["lr_cal"] if name == "logistic + Platt" else v1 if name == "v1 (served before)" else {
            "mean": mean, "std": std, "coef": np.zeros(len(FEATURES)), "intercept": logit(final["const_cal"])}
        training["platt"] = list(final["platt"]) if name == "logistic + Platt" else None
        return dict(manifest, kind="logistic_regression", mean=[float(x) for x in m["mean"]], std=[float(x) for x in m["std"]],
                    coef=[float(x) for x in m["coef"]], intercept=float(m["intercept"])), {}

    digests = {}
    if not args.no_write:
        for version, name in ((1, ship), (2, canary)):
            manifest, blobs = artefact(version, name)
            digests[version] = write_version(version, manifest, ref, blobs)
    t_total = time.time() - t_start

    # --- report
    fmt_t = lambda t: time.strftime("%H:%M:%S", time.gmtime(t / 1e9))
    L = ["# trade_eligibility: training report", "",
         "Generated by `make train` (deploy/triton/train.py); do not edit by hand.", "",
         f"Label: DESIGN.md \"Model quality\", H = {args.horizon_ms} ms, cost = {args.cost_bps} bps, "
         f"from {label_def['source']}. Threshold for \"trade\": {THRESHOLD}.", "",
         "## Data and splits", "",
         "| recording | day | quotes (rows) | labelled | base rate | label mismatches te vs label.py |", "| --- | --- | --- | --- | --- | --- |"]
    for d in data:
        L.append(f"| {d['name']} | {d['day']} | {d['rows']} | {d['labelled']} | {d['y'].mean():.3f} | "
                 f"{'not compared (te --label not used)' if d['mismatch'] is None else d['mismatch']} |")
    if LEFT_OUT:
        L += ["", "Left out (te features gave no rows: every message rejected): " + ", ".join(LEFT_OUT) + "."]
    L += [""]
    for day in days:
        e = edges[day]
        L.append(f"Day {day}: window {fmt_t(e[0])}–{fmt_t(e[-1])} UTC cut into {N_BLOCKS} blocks of "
                 f"{(e[1] - e[0]) / 1e9:.1f} s: " + ", ".join(f"B{i} from {fmt_t(x)}" for i, x in enumerate(e[:-1])) + ".")
    L += ["", f"Every day is cut the same way and block k of every day is one segment, so each fold trains, calibrates "
          f"and tests on both regimes (the calm {calm} and the busy {busy} evening). Before each boundary "
          f"{(args.horizon_ms * 1e6 + GAP_EXTRA_NS) / 1e9:.0f} s are purged (H + 5 s embargo). Out of time = B4+B5 "
          f"(the last third of each day), used once, for the gate. For {calm} the out-of-time rows are later than that "
          f"day's training rows but earlier than {busy}'s: out of sample, not a forecast; the leave-one-day-out table "
          "below is the stricter test for it.", "",
          "| segment | " + " | ".join(f"{day} rows | {day} base rate" for day in days) + " |",
          "| --- |" + " --- | --- |" * len(days)]
    for i in range(N_BLOCKS):
        cells = []
        for day in days:
            _, ys, _, _ = rows(data, [i], [day])
            cells += [str(len(ys)), f"{ys.mean():.3f}" if len(ys) else "—"]
        L.append(f"| B{i} | " + " | ".join(cells) + " |")
    # Why no feature carries over: the eligible rate by realized-volatility quintile (cut points from the final
    # training rows) moves from block to block more than between quintiles.
    vi = FEATURES.index("realized_vol_bps")
    q = np.quantile(final["Xtr"][:, vi], [0.2, 0.4, 0.6, 0.8])
    L += ["", "Eligible rate by `realized_vol_bps` quintile (cuts " + ", ".join(f"{x:.2f}" for x in q) +
          " bps from the final training rows; rows in parentheses):", "",
          "| segment | q1 | q2 | q3 | q4 | q5 |", "| --- | --- | --- | --- | --- | --- |"]
    for day in days:
        for i in range(N_BLOCKS):
            Xs, ys, _, _ = rows(data, [i], [day])
            b = np.searchsorted(q, Xs[:, vi])
            L.append(f"| {day} B{i} | " + " | ".join(f"{ys[b == k].mean():.3f} ({(b == k).sum()})" if (b == k).any() else "—"
                                                     for k in range(5)) + " |")
    L += ["", "Per-instrument normalisation: not applied. The serving input is the 8 features only (no symbol), "
          "so a per-instrument transform could not be reproduced by Triton; the features are already scale-free "
          "(bps, ratios) except `tick_rate`.", "", "## Per fold (walk-forward, validation)", ""]
    for title, res in folds:
        L += table(title, res)
    L += ["## Out of time (B4+B5 of every day; the gate)", ""]
    L += table("train B0..B2, calibrate B3, test B4+B5 (every day)", oot)
    L += ["### Per day and per instrument, out of time", "",
          "| model | group | n | base rate | Brier | Brier const | ECE |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in shown:
        for label_, mask in [(f"day {day}", day_of == day) for day in days] + \
                            [(f"{i}", inst_of == i) for i in sorted(set(inst_of))]:
            if mask.any():
                m = metrics(y[mask], P[name][mask], final["const"])
                L.append(f"| {name} | {label_} | {m['n']} | {fmt(m['base_rate'], 3)} | {fmt(m['brier'])} | "
                         f"{fmt(m['brier_const'])} | {fmt(m['ece'], 3)} |")
    # The aim (issue #17): ECE <= 0.05 out of time on every day; say which day misses and why.
    busy_rates = [rows(data, [i], [busy])[1].mean() for i in range(N_BLOCKS)]
    L += ["", "### Calibration across days", ""]
    for version, name in ((1, ship), (2, canary)):
        misses = []
        for day in days:
            m = day_of == day
            e = ece(y[m], P[name][m])
            if e > 0.05:
                misses.append(f"{day} (ECE {e:.3f}: mean score {P[name][m].mean():.3f} against an eligible rate of "
                              f"{y[m].mean():.3f})")
        L.append(f"* v{version} ({name}): " + ("ECE <= 0.05 on every day." if not misses else "misses on " + "; ".join(misses) + "."))
    raw_ece = {day: ece(y[day_of == day], P["LightGBM (uncalibrated)"][day_of == day]) for day in days}
    calib_rows = {day: len(rows(data, [3], [day])[1]) for day in days}
    L += ["", "Why a day misses. The uncalibrated booster does tell the calm day apart (its ECE there is "
          f"{raw_ece[calm]:.3f}) but not the busy evening's level ({raw_ece[busy]:.3f}); the busy evening's base rate "
          f"moves from block to block ({', '.join(f'B{i} {r:.3f}' for i, r in enumerate(busy_rates))}) more than any "
          "feature explains, so a probability calibrated on B3 is off on B4+B5. The calibration map is monotone in "
          f"the score and fitted on B3 pooled over days, which is {calib_rows[busy]} rows of {busy} and "
          f"{calib_rows[calm]} of {calm}: it lifts the calm day's low scores to the busy evening's rates for "
          "scores that low. Fitting the map differently (Platt, per volatility bucket) did not bring both days under 0.05 in trials outside this script either; that needs an input that carries the regime "
          "(e.g. volatility over minutes, or the instrument's recent eligible rate): a change to DESIGN.md's feature "
          "vector, not to training."]
    L += ["", f"## Another day (diagnostic, not the gate)", "",
          f"Trained on {busy} B0..B2 only, calibrated on {busy} B3, tested on all of {calm}: models that never saw "
          "the calm day.", ""]
    L += table(f"train {busy} B0..B2, calibrate B3, test {calm}", other_day)
    L += ["Brier const = Brier of the training base rate. ECE: 10 equal-width bins. precision@0.5: eligible rate among "
          "scores >= 0.5 (— when no score reaches it); coverage: share of scores >= 0.5.", "",
          "## Gate", "",
          f"Candidate (best mean validation Brier of the calibrated learners): **{cand}**.", "",
          "| comparison (out of time) | Brier difference (positive = first is better) | 95 % block-bootstrap interval | blocks |",
          "| --- | --- | --- | --- |",
          f"| {cand} vs constant | {ci_const[0]:+.5f} | [{ci_const[1]:+.5f}, {ci_const[2]:+.5f}] | {ci_const[3]} |",
          f"| {cand} vs v1 served before | {ci_v1[0]:+.5f} | [{ci_v1[1]:+.5f}, {ci_v1[2]:+.5f}] | {ci_v1[3]} |",
          f"| shipped v1 ({ship}) vs constant | {ci_ship[0]:+.5f} | [{ci_ship[1]:+.5f}, {ci_ship[2]:+.5f}] | {ci_ship[3]} |",
          f"| shipped v1 ({ship}) vs v1 served before | {ci_ship_v1[0]:+.5f} | [{ci_ship_v1[1]:+.5f}, {ci_ship_v1[2]:+.5f}] | {ci_ship_v1[3]} |",
          f"| canary v2 ({canary}) vs shipped v1 | {ci_canary[0]:+.5f} | [{ci_canary[1]:+.5f}, {ci_canary[2]:+.5f}] | {ci_canary[3]} |", "",
          "Bootstrap: 1000 resamples of 5 s blocks per instrument (rows within one horizon share their future).", ""]
    if edge:
        L.append(f"**Edge: {cand} beats both the constant and v1 out of time.** It replaces version 1.")
    else:
        L.append(f"**No edge.** {cand} does not beat both the constant base rate and the v1 served before out of time "
                 f"with an interval excluding zero. What ships as v1 is the calibrated **{ship}** "
                 f"(out-of-time ECE {oot[ship]['ece']:.3f}, Brier {oot[ship]['brier']:.4f} vs constant "
                 f"{oot[ship]['brier_const']:.4f}).")
    L += ["", "Shipping rule (fixed before the run): v1 = the candidate if it passes the gate; else the first of these "
          "that is calibrated out of time (ECE <= 0.05) and no worse than the constant by Brier: the v1 served before "
          "(it stays: its coefficients are rewritten in the current manifest form, with this run's reference.json), "
          "logistic + Platt, the constant refitted on the calibration fold (the most recent base rate before the "
          "test); else that constant. v2 (the canary) = "
          "LightGBM + isotonic unless it is v1, then the calibrated constant: the live rollout (outcome-tracker's "
          "CanaryJudge) then judges LightGBM against the primary on realised outcomes and rolls it back when it is "
          "worse.", "",
          "## What ships", "",
          f"| version | model | out-of-time Brier | ECE | artefact sha256 (weights.json) |", "| --- | --- | --- | --- | --- |",
          f"| 1 (primary) | {ship} | {oot[ship]['brier']:.4f} | {oot[ship]['ece']:.3f} | `{digests.get(1, 'not written')}` |",
          f"| 2 (canary) | {canary} | {oot[canary]['brier']:.4f} | {oot[canary]['ece']:.3f} | `{digests.get(2, 'not written')}` |",
          "", "Each version directory holds the manifest `weights.json` (kind, features, label, training summary and "
          "the sha256 of every other file), `reference.json` (decile edges and training proportions per feature, for "
          "PSI) and, for LightGBM, `model.txt` (the booster) and `calibration.json` (the isotonic map). "
          "`artefact_sha256_v<version>` = sha256(weights.json) therefore covers every file the version loads.", "",
          "![reliability](reliability.png)", "",
          "## Timing", "", f"Total {t_total:.1f} s (features + labels {t_load:.1f} s; final fold: logistic "
          f"{final['t_lr']:.1f} s, LightGBM {final['t_gbm']:.1f} s) on {final['n_train']} training rows, no subsampling, "
          f"{len(FRESH)} of {len(data) + len(LEFT_OUT)} `te features` runs in this run (the rest cached in "
          f"{os.path.relpath(args.cache, ROOT)}), "
          f"load average before the run {LOAD_BEFORE}.", ""]
    with open(os.path.join(HERE, "REPORT.md"), "w") as f:
        f.write("\n".join(L))
    plotted = ["v1 (served before)", "v2 (canary before)", "logistic + Platt", "LightGBM + isotonic", "constant (train base rate)", ship, canary]
    reliability_png(os.path.join(HERE, "reliability.png"), y,
                    {(k + " [v1]" if k == ship else k + " [v2]" if k == canary else k): P[k] for k in dict.fromkeys(plotted)})
    print("\n".join(L), file=sys.stderr)


if __name__ == "__main__":
    main()
