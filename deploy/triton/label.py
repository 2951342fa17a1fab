"""DESIGN.md's outcome label ("Model quality"), computed independently of the Swift `te features --label`.

For a decision on symbol S at market time t with horizon H: mid_at_decision is the mid of S's latest quote with
receive ts_ns <= t, mid_at_horizon that of the latest quote <= t + H, return_bps = ln(mid_at_horizon /
mid_at_decision) * 1e4, and eligible = |return_bps| > spread_bps_at_decision / 2 + cost_bps. A decision whose
horizon runs past the recording's last quote has no label (the horizon has not passed yet).

Quotes are a recording's Binance `bookTicker` messages (the quotes `te features` makes one row each for), in file
order, with a quote older than the latest seen dropped, as the pipeline does.
"""
import bisect
import gzip
import json
import math

# Pure Python (no numpy), so the label check in `make test` runs on any python3.


def read_quotes(path):
    """(symbol, ts_ns[], bid[], bid_size[], ask[], ask_size[]) of one single-symbol Binance recording, as lists."""
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
    return symbol, ts, b, bs, a, as_


def label(quote_ts, bid, ask, decision_ts, horizon_ms=5000, cost_bps=4.0):
    """(return_bps[], eligible[] 0/1, valid[] bool) for decisions at decision_ts on one symbol's quotes (lists)."""
    h = horizon_ms * 1_000_000
    rets, elig, valid = [], [], []
    for t in decision_ts:
        i = bisect.bisect_right(quote_ts, t) - 1
        if i < 0 or t + h > quote_ts[-1]:
            rets.append(0.0); elig.append(0.0); valid.append(False)
            continue
        j = bisect.bisect_right(quote_ts, t + h) - 1
        mid_t = (bid[i] + ask[i]) / 2.0
        mid_h = (bid[j] + ask[j]) / 2.0
        spread_bps = (ask[i] - bid[i]) / mid_t * 1e4
        r = math.log(mid_h / mid_t) * 1e4
        rets.append(r); elig.append(1.0 if abs(r) > spread_bps / 2.0 + cost_bps else 0.0); valid.append(True)
    return rets, elig, valid
