#!/usr/bin/env python3
"""Trains the `trade_eligibility` model versions (logistic regression, numpy only) and writes the model repository.

Input, either:
  --features-csv FILE...  CSV written by `te features` (columns: symbol,ts_ns,<8 features in model order>,
                          n_quotes,n_trades,trade_volume); the label needs the mid, which is recovered from
                          the recordings, so the CSV is joined with them on (symbol, ts_ns) when given; or
  --recordings FILE...    Binance recordings (`<ts_ns> <json>` lines, gzip; default: ../shared/data/binance/*.gz),
                          from which this script computes DESIGN.md's 8 features itself (`features_from_quotes`, a
                          faithful re-implementation of the feature contract over bookTicker quotes; depth is not
                          reconstructed here, so `depth_imbalance` equals `imbalance`, as DESIGN.md prescribes for
                          quotes without depth).

Label (see README.md): 1 when, within HORIZON seconds after the quote (receive time), the mid moves away from the
current mid by more than the current spread + COST_BPS basis points (max absolute log move), else 0.

Writes, per version V: model_repository/trade_eligibility/V/weights.json, and updates the
`artefact_sha256_vV` parameters in config.pbtxt to the sha256 of that weights file.
"""
import argparse
import collections
import glob
import gzip
import hashlib
import json
import math
import os
import re
import sys

import numpy as np

FEATURES = [
    "spread_bps", "imbalance", "depth_imbalance", "ofi_norm",
    "realized_vol_bps", "mid_return_bps", "tick_rate", "microprice_offset_bps",
]
HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.path.join(HERE, "model_repository", "trade_eligibility")

# Version 1 (primary) and 2 (canary): same features, different label horizon and regularisation.
VARIANTS = {
    "1": {"horizon_s": 2.0, "cost_bps": 1.0, "l2": 1.0},
    "2": {"horizon_s": 5.0, "cost_bps": 1.0, "l2": 10.0},
}


def read_quotes(path):
    """Yields (ts_ns, bid, bid_size, ask, ask_size) for each bookTicker message of one recording, in file order."""
    with gzip.open(path, "rt") as f:
        for line in f:
            sp = line.find(" ")
            if sp < 0 or '"bookTicker"' not in line and "@bookTicker" not in line:
                continue
            ts = int(line[:sp])
            msg = json.loads(line[sp + 1:])
            d = msg.get("data", {})
            if "b" not in d or "a" not in d or "B" not in d:
                continue
            yield ts, float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"])


def features_from_quotes(quotes, window_ms=5000):
    """DESIGN.md's feature vector after each quote of one symbol (W = window_ms, event time = receive time).

    Returns (ts_ns[], mid[], spread_bps[], X[n, 8]). A quote older than the latest seen is dropped, as the
    streaming pipeline does.
    """
    w_ns = window_ms * 1_000_000
    win = collections.deque()  # (ts, e_n or None, r2 or None, half_depth, mid)
    sum_e = 0.0
    sum_r2 = 0.0
    sum_depth = 0.0
    prev = None
    out_ts, out_mid, out_sp, rows = [], [], [], []
    for ts, b, bs, a, as_ in quotes:
        if prev is not None and ts < prev[0]:
            continue
        mid = (a + b) / 2.0
        e = r2 = None
        if prev is not None:
            _, pb, pbs, pa, pas, pmid = prev
            e = (bs if b >= pb else 0.0) - (pbs if b <= pb else 0.0) - (as_ if a <= pa else 0.0) + (pas if a >= pa else 0.0)
            r = math.log(mid / pmid) if pmid > 0 and mid > 0 else 0.0
            r2 = r * r
        half_depth = (bs + as_) / 2.0
        win.append((ts, e, r2, half_depth, mid))
        sum_e += e or 0.0
        sum_r2 += r2 or 0.0
        sum_depth += half_depth
        while win and win[0][0] <= ts - w_ns:
            _, oe, or2, od, _ = win.popleft()
            sum_e -= oe or 0.0
            sum_r2 -= or2 or 0.0
            sum_depth -= od
        n = len(win)
        mean_depth = sum_depth / n
        spread_bps = (a - b) / mid * 1e4 if mid else 0.0
        imb = (bs - as_) / (bs + as_) if bs + as_ else 0.0
        ofi = sum_e / mean_depth if mean_depth else 0.0
        vol = math.sqrt(max(sum_r2, 0.0)) * 1e4
        first_mid = win[0][4]
        ret = math.log(mid / first_mid) * 1e4 if first_mid > 0 and mid > 0 else 0.0
        rate = n / (window_ms / 1000.0)
        micro = (b * as_ + a * bs) / (bs + as_) if bs + as_ else mid
        micro_off = (micro - mid) / mid * 1e4 if mid else 0.0
        rows.append([spread_bps, imb, imb, ofi, vol, ret, rate, micro_off])
        out_ts.append(ts)
        out_mid.append(mid)
        out_sp.append(spread_bps)
        prev = (ts, b, bs, a, as_, mid)
    return np.array(out_ts, dtype=np.int64), np.array(out_mid), np.array(out_sp), np.array(rows, dtype=np.float64)


def labels(ts, mid, spread_bps, horizon_s, cost_bps):
    """1 where the max |ln(mid_j / mid_i)| × 1e4 over quotes j with ts in (t_i, t_i + horizon] exceeds spread + cost."""
    h = int(horizon_s * 1e9)
    end = np.searchsorted(ts, ts + h, side="right")
    logm = np.log(mid)
    y = np.zeros(len(ts), dtype=np.float64)
    valid = end < len(ts)  # a quote whose horizon runs past the recording's end has no complete label
    for i in range(len(ts)):
        j = end[i]
        if j > i + 1:
            move = np.max(np.abs(logm[i + 1:j] - logm[i])) * 1e4
            y[i] = 1.0 if move > spread_bps[i] + cost_bps else 0.0
    return y, valid


def fit_logistic(X, y, l2, iters=3000, lr=0.5):
    """Full-batch gradient descent on standardised features; L2 penalty on the coefficients (not the intercept)."""
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    Z = (X - mean) / std
    n, d = Z.shape
    w = np.zeros(d)
    b = math.log(max(y.mean(), 1e-6) / max(1 - y.mean(), 1e-6))
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(Z @ w + b)))
        g = p - y
        w -= lr * (Z.T @ g / n + l2 * w / n)
        b -= lr * g.mean()
    return mean, std, w, b


def predict(model, X):
    z = (X - model["mean"]) / model["std"] @ model["coef"] + model["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


def auc(y, p):
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    pos = y == 1
    npos, nneg = pos.sum(), (~pos).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    return float((ranks[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def load_csv_features(paths):
    """`te features` CSV rows keyed by (symbol, ts_ns) → the 8 features."""
    table = {}
    for path in paths:
        with open(path) as f:
            header = f.readline().strip().split(",")
            idx = [header.index(n) for n in FEATURES]
            for line in f:
                cols = line.strip().split(",")
                table[(cols[0], int(cols[1]))] = [float(cols[i]) for i in idx]
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", nargs="*",
                    default=sorted(glob.glob(os.path.join(HERE, "..", "..", "..", "shared", "data", "binance", "*.gz")))
                    or sorted(glob.glob("/work/shared/data/binance/*.gz")))
    ap.add_argument("--features-csv", nargs="*", default=[])
    args = ap.parse_args()
    if not args.recordings:
        sys.exit("train.py: no recordings found; pass --recordings FILE...")

    csv = load_csv_features(args.features_csv) if args.features_csv else None
    series = []
    for path in args.recordings:
        quotes = list(read_quotes(path))
        ts, mid, sp, X = features_from_quotes(quotes)
        if csv is not None:
            base = os.path.basename(path)
            # ingest/te features name the USD-M perpetual BTCUSDT-PERP (a different instrument from spot).
            sym = base.split("_")[1].upper() + ("-PERP" if base.startswith("usdm") else "")
            keep = [i for i, t in enumerate(ts) if (sym, int(t)) in csv]
            X = np.array([csv[(sym, int(ts[i]))] for i in keep])
            ts, mid, sp = ts[keep], mid[keep], sp[keep]
        series.append((os.path.basename(path), ts, mid, sp, X))
        print(f"{os.path.basename(path)}: {len(ts)} quotes", file=sys.stderr)

    config_path = os.path.join(MODEL_DIR, "config.pbtxt")
    config = open(config_path).read()
    for version, v in VARIANTS.items():
        Xtr, ytr, Xte, yte = [], [], [], []
        for name, ts, mid, sp, X in series:
            y, valid = labels(ts, mid, sp, v["horizon_s"], v["cost_bps"])
            X, y = X[valid], y[valid]
            cut = int(len(y) * 0.7)  # time split per recording: train on the first 70 %, evaluate on the rest
            Xtr.append(X[:cut]); ytr.append(y[:cut]); Xte.append(X[cut:]); yte.append(y[cut:])
        Xtr, ytr, Xte, yte = map(np.concatenate, (Xtr, ytr, Xte, yte))
        mean, std, coef, intercept = fit_logistic(Xtr, ytr, v["l2"])
        model = {"mean": mean, "std": std, "coef": coef, "intercept": intercept}
        p = predict(model, Xte)
        eps = 1e-12
        logloss = float(-np.mean(yte * np.log(p + eps) + (1 - yte) * np.log(1 - p + eps)))
        weights = {
            "model": "trade_eligibility",
            "version": int(version),
            "kind": "logistic_regression",
            "features": FEATURES,
            "mean": [float(x) for x in mean],
            "std": [float(x) for x in std],
            "coef": [float(x) for x in coef],
            "intercept": float(intercept),
            "label": {"horizon_s": v["horizon_s"], "cost_bps": v["cost_bps"],
                      "definition": "max |ln(mid_t'/mid_t)|*1e4 over t' in (t, t+horizon] > spread_bps_t + cost_bps"},
            "training": {"l2": v["l2"], "source": "te features CSV" if csv is not None else "train.py features_from_quotes",
                         "recordings": [s[0] for s in series], "train_rows": int(len(ytr)), "test_rows": int(len(yte)),
                         "train_positive_rate": float(ytr.mean()), "test_positive_rate": float(yte.mean()),
                         "test_auc": auc(yte, p), "test_logloss": logloss},
        }
        path = os.path.join(MODEL_DIR, version, "weights.json")
        data = (json.dumps(weights, indent=2, sort_keys=True) + "\n").encode()
        with open(path, "wb") as f:
            f.write(data)
        digest = hashlib.sha256(data).hexdigest()
        key = f"artefact_sha256_v{version}"
        config, n = re.subn(r'(key: "%s"\s*value: \{\s*string_value: ")[0-9a-f]*(")' % key, r"\g<1>%s\2" % digest, config)
        if n != 1:
            sys.exit(f"train.py: config.pbtxt has no parameter {key}")
        print(f"version {version}: auc={weights['training']['test_auc']:.3f} logloss={logloss:.4f} "
              f"pos={ytr.mean():.3f} sha256={digest}", file=sys.stderr)
    with open(config_path, "w") as f:
        f.write(config)


if __name__ == "__main__":
    main()
