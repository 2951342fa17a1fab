#!/usr/bin/env python3
"""Trains and evaluates `trade_eligibility` honestly, writes REPORT.md and the served version 1.

Features: `te features` over every Binance recording in ../shared/data/binance (the serving feature code).
Label: DESIGN.md "Model quality" (eligible = |ln(mid_{t+H}/mid_t)|*1e4 > spread_t/2 + cost), from
`te features --label` when TE_LABEL=1 (columns return_bps, eligible), else from label.py (independent Python);
when both exist they are compared and the mismatch count is reported.

Splits (by receive time, all instruments together): day 2024-07-18 is always training (the oldest data); the
2024-08-08 evening window is cut into 6 equal blocks B0..B5. Walk-forward folds: train on 07-18 + B0..B(k-2),
calibrate on B(k-1), validate on Bk (k = 2, 3); the final model trains on 07-18 + B0..B2, calibrates on B3 and is
tested once on B4+B5 (the latest ~115 s: out of time). Before every boundary the last H + 5 s of the earlier
segment are purged (its labels look across the boundary; 5 s more of embargo).

Models: constant (training base rate), v1 as committed, logistic regression (standardised, L2, Newton) + Platt,
LightGBM + isotonic. Calibration is always fitted on the fold after the training data.
Gate: a candidate replaces v1 only when its out-of-time Brier beats the constant's and v1's with a block-bootstrap
95 % interval of the difference excluding zero; otherwise the report says "no edge" and what ships is the
calibrated model that is no worse than the constant (ECE <= 0.05), a near-constant if need be.
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


# ----------------------------------------------------------------------------------------------- data
def te_features(te, path, cache_dir, with_label, horizon_ms, cost_bps):
    """The `te features` CSV of one recording (cached by recording name and options)."""
    tag = f"{os.path.basename(path)}.{'label' if with_label else 'plain'}.{horizon_ms}.{cost_bps}.csv"
    out = os.path.join(cache_dir, tag)
    if not os.path.exists(out):
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
    """Assigns each row a segment: 'D' (oldest day) or block index 0..N_BLOCKS-1 of the latest day; purges gaps."""
    latest = max(d["day"] for d in data)
    lo = min(d["ts"][0] for d in data if d["day"] == latest)
    hi = max(d["ts"][-1] for d in data if d["day"] == latest) + 1
    edges = np.linspace(lo, hi, N_BLOCKS + 1).astype(np.int64)
    gap = horizon_ms * 1_000_000 + GAP_EXTRA_NS
    for d in data:
        if d["day"] != latest:
            d["seg"] = np.full(len(d["ts"]), -1)  # -1: the older day, always training
            continue
        seg = np.searchsorted(edges, d["ts"], side="right") - 1
        seg = np.clip(seg, 0, N_BLOCKS - 1)
        purged = np.zeros(len(seg), dtype=bool)
        for e in edges[1:-1]:
            purged |= (d["ts"] >= e - gap) & (d["ts"] < e)
        seg[purged] = -99  # purged: in no segment
        d["seg"] = seg
    return latest, edges


def rows(data, segs):
    m = [np.isin(d["seg"], segs) for d in data]
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
def run_fold(data, train_segs, calib_segs, test_segs, v1, v2, models_out=None):
    Xtr, ytr, _, _ = rows(data, train_segs)
    Xca, yca, _, _ = rows(data, calib_segs)
    Xte, yte, ite, tte = rows(data, test_segs)
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
        "v1 (committed)": sigmoid(logistic_z(v1, Xte)),
        "v2 (canary, kept)": sigmoid(logistic_z(v2, Xte)),
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


def write_version(version, weights, ref):
    """weights.json names the sha256 of reference.json beside it, so sha256(weights.json) — the artefact hash
    in config.pbtxt that model.py checks and the gateway reads — covers both files."""
    vdir = os.path.join(MODEL_DIR, str(version))
    ref_sha = write_bytes(os.path.join(vdir, "reference.json"), (json.dumps(ref, indent=1, sort_keys=True) + "\n").encode())
    weights = dict(weights, reference_sha256=ref_sha)
    digest = write_bytes(os.path.join(vdir, "weights.json"), (json.dumps(weights, indent=2, sort_keys=True) + "\n").encode())
    set_config_hash(version, digest)
    return digest


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

    data = load(args.te, args.recordings, args.cache, args.te_label, args.horizon_ms, args.cost_bps)
    t_load = time.time() - t_start
    latest, edges = split(data, args.horizon_ms)
    # v1 as it served before this training (kept beside this script so re-running compares against the same model)
    v1 = json.load(open(os.path.join(HERE, "previous_v1_weights.json")))
    as_model = lambda w: {k: np.asarray(w[k], dtype=float) if k != "intercept" else float(w[k]) for k in ("mean", "std", "coef", "intercept")}
    v1 = as_model(v1)
    v2 = as_model(json.load(open(os.path.join(MODEL_DIR, "2", "weights.json"))))

    folds = []
    for k in (2, 3):
        res = run_fold(data, [-1] + list(range(k - 1)), [k - 1], [k], v1, v2)
        folds.append((f"fold {k - 1}: train 07-18 + B0..B{k - 2}, calibrate B{k - 1}, validate B{k}", res))
    final = {}
    oot = run_fold(data, [-1, 0, 1, 2], [3], [4, 5], v1, v2, final)
    # Another regime: the calm day, from models that never saw it (not out of time; not used by the gate).
    other_day = run_fold(data, [0, 1, 2], [3], [-1], v1, v2)

    # Candidate: the better calibrated learner on the validation folds (mean Brier), never chosen on out-of-time.
    cands = ["logistic + Platt", "LightGBM + isotonic"]
    cand = min(cands, key=lambda c: np.mean([r[c]["brier"] for _, r in folds]))
    y, inst, ts = final["yte"], final["ite"], final["tte"]
    P = final["preds"]
    ci_const = block_bootstrap(y, P[cand], P["constant (train base rate)"], inst, ts)
    ci_v1 = block_bootstrap(y, P[cand], P["v1 (committed)"], inst, ts)
    edge = ci_const[1] > 0 and ci_v1[1] > 0
    ship_ok = lambda name: oot[name]["ece"] <= 0.05 and oot[name]["brier"] <= oot[name]["brier_const"]
    if edge:
        ship = cand
    else:
        ship = next((n for n in ["logistic + Platt", "constant (calibration-fold base rate)"] if ship_ok(n)),
                    "constant (calibration-fold base rate)")
    ci_recent = block_bootstrap(y, P[cand], P["constant (calibration-fold base rate)"], inst, ts)
    ci_ship = block_bootstrap(y, P[ship], P["constant (train base rate)"], inst, ts)
    ci_ship_v1 = block_bootstrap(y, P[ship], P["v1 (committed)"], inst, ts)

    # --- the artefact (version 1 = primary); version 2 stays the committed, deliberately different canary.
    ref = reference(final["Xtr"])
    label_def = {"horizon_ms": args.horizon_ms, "cost_bps": args.cost_bps,
                 "definition": "eligible = |ln(mid_at_horizon/mid_at_decision)|*1e4 > spread_bps_at_decision/2 + cost_bps (DESIGN.md Model quality)",
                 "source": "te features --label" if args.te_label else "deploy/triton/label.py"}
    if ship == "LightGBM + isotonic":
        sys.exit("train.py: LightGBM passed the gate; serving it needs model.py's tree path (not written yet)")
    m = final["lr_cal"] if ship == "logistic + Platt" else {
        "mean": final["Xtr"].mean(axis=0), "std": np.where(final["Xtr"].std(axis=0) > 0, final["Xtr"].std(axis=0), 1.0),
        "coef": np.zeros(len(FEATURES)), "intercept": logit(final["const_cal"])}
    weights = {"model": "trade_eligibility", "version": 1, "kind": "logistic_regression", "features": FEATURES,
               "mean": [float(x) for x in m["mean"]], "std": [float(x) for x in m["std"]],
               "coef": [float(x) for x in m["coef"]], "intercept": float(m["intercept"]),
               "label": label_def,
               "training": {"shipped": ship, "edge": bool(edge), "platt": list(final["platt"]) if ship == "logistic + Platt" else None,
                            "train": "2024-07-18 + 2024-08-08 B0..B2", "calibration": "2024-08-08 B3",
                            "out_of_time": "2024-08-08 B4..B5", "recordings": [d["name"] for d in data],
                            "oot_brier": oot[ship]["brier"], "oot_brier_const": oot[ship]["brier_const"],
                            "oot_ece": oot[ship]["ece"], "oot_base_rate": oot[ship]["base_rate"]}}
    digest = None if args.no_write else write_version(1, weights, ref)
    if not args.no_write:
        # The canary keeps its committed weights (a deliberately different model); it gets its own reference.
        v2 = json.load(open(os.path.join(MODEL_DIR, "2", "weights.json")))
        v2.pop("reference_sha256", None)
        write_version(2, v2, ref)
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
    L += ["", f"Latest day {latest}: window {fmt_t(edges[0])}–{fmt_t(edges[-1])} UTC cut into {N_BLOCKS} blocks of "
          f"{(edges[1] - edges[0]) / 1e9:.1f} s: " + ", ".join(f"B{i} from {fmt_t(e)}" for i, e in enumerate(edges[:-1])) + ".",
          f"Before each boundary {(args.horizon_ms * 1e6 + GAP_EXTRA_NS) / 1e9:.0f} s are purged (H + 5 s embargo). "
          "2024-07-18 is the oldest day and always training. Out of time = B4+B5, used once, for the gate.", "",
          "| segment | rows | base rate |", "| --- | --- | --- |"]
    for s, nm in [([-1], "2024-07-18 (all)")] + [([i], f"B{i}") for i in range(N_BLOCKS)]:
        _, ys, _, _ = rows(data, s)
        L.append(f"| {nm} | {len(ys)} | {ys.mean():.3f} |")
    # Why no feature carries over: the eligible rate by realized-volatility quintile (cut points from the final
    # training rows) moves from block to block more than between quintiles.
    vi = FEATURES.index("realized_vol_bps")
    q = np.quantile(final["Xtr"][:, vi], [0.2, 0.4, 0.6, 0.8])
    L += ["", "Eligible rate by `realized_vol_bps` quintile (cuts " + ", ".join(f"{x:.2f}" for x in q) +
          " bps from the final training rows; rows in parentheses):", "",
          "| segment | q1 | q2 | q3 | q4 | q5 |", "| --- | --- | --- | --- | --- | --- |"]
    for s_, nm in [([-1], "2024-07-18")] + [([i], f"B{i}") for i in range(N_BLOCKS)]:
        Xs, ys, _, _ = rows(data, s_)
        b = np.searchsorted(q, Xs[:, vi])
        L.append(f"| {nm} | " + " | ".join(f"{ys[b == k].mean():.3f} ({(b == k).sum()})" if (b == k).any() else "—"
                                            for k in range(5)) + " |")
    L += ["", "Per-instrument normalisation: not applied. The serving input is the 8 features only (no symbol), "
          "so a per-instrument transform could not be reproduced by Triton; the features are already scale-free "
          "(bps, ratios) except `tick_rate`.", "", "## Per fold (walk-forward, validation)", ""]
    for title, res in folds:
        L += table(title, res)
    L += ["## Out of time (B4+B5, the latest data; the gate)", ""]
    L += table("train 07-18 + B0..B2, calibrate B3, test B4+B5", oot)
    L += ["## Another day (diagnostic, not the gate)", "",
          "Trained on 08-08 B0..B2 only, calibrated on B3, tested on 2024-07-18 (a calm day: no eligible quote). "
          "It shows what a model calibrated on one evening says on a different regime.", ""]
    L += table("train 08-08 B0..B2, calibrate B3, test 2024-07-18", other_day)
    L += ["Brier const = Brier of the training base rate. ECE: 10 equal-width bins. precision@0.5: eligible rate among "
          "scores >= 0.5 (— when no score reaches it); coverage: share of scores >= 0.5.", "",
          "## Gate", "",
          f"Candidate (best mean validation Brier of the calibrated learners): **{cand}**.", "",
          "| comparison (out of time) | Brier difference (positive = first is better) | 95 % block-bootstrap interval | blocks |",
          "| --- | --- | --- | --- |",
          f"| {cand} vs constant | {ci_const[0]:+.5f} | [{ci_const[1]:+.5f}, {ci_const[2]:+.5f}] | {ci_const[3]} |",
          f"| {cand} vs v1 | {ci_v1[0]:+.5f} | [{ci_v1[1]:+.5f}, {ci_v1[2]:+.5f}] | {ci_v1[3]} |",
          f"| {cand} vs constant (calibration-fold base rate) | {ci_recent[0]:+.5f} | [{ci_recent[1]:+.5f}, {ci_recent[2]:+.5f}] | {ci_recent[3]} |",
          f"| shipped ({ship}) vs constant | {ci_ship[0]:+.5f} | [{ci_ship[1]:+.5f}, {ci_ship[2]:+.5f}] | {ci_ship[3]} |",
          f"| shipped ({ship}) vs v1 | {ci_ship_v1[0]:+.5f} | [{ci_ship_v1[1]:+.5f}, {ci_ship_v1[2]:+.5f}] | {ci_ship_v1[3]} |", "",
          "Bootstrap: 1000 resamples of 5 s blocks per instrument (rows within one horizon share their future).", ""]
    if edge:
        L.append(f"**Edge: {cand} beats both the constant and v1 out of time.** It replaces version 1.")
    else:
        L.append(f"**No edge.** {cand} does not beat the constant base rate out of time with an interval excluding zero. "
                 f"Version 1 is replaced anyway because the committed v1 is not calibrated (out-of-time ECE "
                 f"{oot['v1 (committed)']['ece']:.3f}, Brier {oot['v1 (committed)']['brier']:.4f} vs constant "
                 f"{oot['v1 (committed)']['brier_const']:.4f}); what ships is the calibrated **{ship}** "
                 f"(out-of-time ECE {oot[ship]['ece']:.3f}, Brier {oot[ship]['brier']:.4f}).")
    L += ["", "Shipping rule (fixed before the run): the candidate if it passes the gate; else logistic + Platt if it is "
          "calibrated out of time (ECE <= 0.05) and no worse than the constant by Brier; else the constant refitted on the "
          "calibration fold (the most recent base rate before the test).", "",
          "## What ships", "",
          f"`model_repository/trade_eligibility/1/`: {ship}, in the same weights.json form as before "
          "(σ(intercept + Σ coef·(x − mean)/std); Platt scaling folded into coef and intercept), plus reference.json "
          "(decile edges and training proportions per feature, for PSI) whose sha256 weights.json names, so "
          f"`artefact_sha256_v1` = sha256(weights.json) = `{digest}` covers both. Version 2 keeps its committed "
          "weights (the deliberately different canary) and gets the same reference.json.", "",
          "![reliability](reliability.png)", "",
          "## Timing", "", f"Total {t_total:.1f} s (features + labels {t_load:.1f} s; final fold: logistic "
          f"{final['t_lr']:.1f} s, LightGBM {final['t_gbm']:.1f} s) on {final['n_train']} training rows, no subsampling.", ""]
    with open(os.path.join(HERE, "REPORT.md"), "w") as f:
        f.write("\n".join(L))
    shown = ["v1 (committed)", "v2 (canary, kept)", "logistic + Platt", "LightGBM + isotonic", "constant (train base rate)", ship]
    reliability_png(os.path.join(HERE, "reliability.png"), y,
                    {(k + " [shipped]" if k == ship else k): P[k] for k in dict.fromkeys(shown)})
    print("\n".join(L), file=sys.stderr)


if __name__ == "__main__":
    main()
