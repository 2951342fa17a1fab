"""DESIGN.md's outcome label ("Model quality"), computed independently of the Swift `te features --label`.

For a decision on symbol S at market time t with horizon H: mid_at_decision is the mid of S's latest quote with
receive ts_ns <= t, mid_at_horizon that of the latest quote <= t + H, return_bps = ln(mid_at_horizon /
mid_at_decision) * 1e4, and eligible = |return_bps| > spread_bps_at_decision / 2 + cost_bps. A decision whose
horizon runs past the recording's last quote has no label (the horizon has not passed yet).

Quotes are a recording's Binance `bookTicker` messages (the quotes `te features` makes one row each for), in file
order, with a quote older than the latest seen dropped, as the pipeline does.
"""
import gzip
import json

import numpy as np


def read_quotes(path):
    """(symbol, ts_ns[], bid[], bid_size[], ask[], ask_size[]) of one single-symbol Binance recording."""
    symbol, ts, b, bs, a, as_ = None, [], [], [], [], []
    last = None
    with gzip.open(path, "rt") as f:
        for line in f:
            if "bookTicker" not in line:
                continue
            sp = line.find(" ")
            t = int(line[:sp])
            d = json.loads(line[sp + 1:]).get("data", {})
            if not all(k in d for k in ("b", "B", "a", "A", "s")):
                continue
            if last is not None and t < last:
                continue
            last = t
            symbol = d["s"]
            ts.append(t); b.append(float(d["b"])); bs.append(float(d["B"])); a.append(float(d["a"])); as_.append(float(d["A"]))
    return symbol, np.array(ts, dtype=np.int64), np.array(b), np.array(bs), np.array(a), np.array(as_)


def label(quote_ts, bid, ask, decision_ts, horizon_ms=5000, cost_bps=4.0):
    """(return_bps[], eligible[] as 0/1 floats, valid[] bool) for decisions at decision_ts on one symbol's quotes."""
    mid = (bid + ask) / 2.0
    spread_bps = (ask - bid) / mid * 1e4
    i = np.searchsorted(quote_ts, decision_ts, side="right") - 1
    j = np.searchsorted(quote_ts, decision_ts + horizon_ms * 1_000_000, side="right") - 1
    valid = (i >= 0) & (decision_ts + horizon_ms * 1_000_000 <= quote_ts[-1])
    i = np.clip(i, 0, None)
    ret = np.log(mid[j] / mid[i]) * 1e4
    eligible = (np.abs(ret) > spread_bps[i] / 2.0 + cost_bps).astype(np.float64)
    return ret, eligible, valid
