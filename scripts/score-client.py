#!/usr/bin/env python3
"""Persistent scoring client for scripts/demo.sh.

One keep-alive HTTP/1.1 connection to the gateway for the whole demo, so the latency it reports is the
decision's round trip (request written → response read), without the TCP connection set-up (and the
process start) that a `curl` per decision adds.

Reads one request per line on stdin: `SYMBOL FRESHNESS_MS`.
Writes one line per request on stdout: `ROUND_TRIP_US<TAB>GATEWAY_US<TAB>RESPONSE_BODY`, where
GATEWAY_US is the response's own `latency_us` (the gateway's decision time, without HTTP or this client;
`-` when absent, e.g. a 400), and `-<TAB>-<TAB>{"error":…}` when the call failed (the next request
reconnects).

    scripts/score-client.py PORT [HOST]
"""
import http.client
import json
import sys
import time

port = int(sys.argv[1])
host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
connection = None

for line in sys.stdin:
    parts = line.split()
    if len(parts) != 2:
        print("-\t-\t" + json.dumps({"error": f"expected 'SYMBOL FRESHNESS_MS', got {line.strip()!r}"}), flush=True)
        continue
    symbol, freshness_ms = parts[0], int(parts[1])
    # Bytes, so http.client sends headers and body in one write (no Nagle/delayed-ACK stall).
    body = json.dumps({"symbol": symbol, "freshness_ms": freshness_ms}).encode()
    # A reused connection the gateway closed while idle fails on first use: reconnect once and retry.
    for attempt in (0, 1):
        try:
            if connection is None:
                connection = http.client.HTTPConnection(host, port, timeout=5)
                connection.connect()
            start = time.perf_counter_ns()
            connection.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            micros = (time.perf_counter_ns() - start) // 1000
            text = data.decode(errors="replace").replace("\n", " ")
            try:
                gateway_us = int(json.loads(text)["latency_us"])
            except (ValueError, KeyError, TypeError):
                gateway_us = "-"
            print(f"{micros}\t{gateway_us}\t{text}", flush=True)
            break
        except (OSError, http.client.HTTPException) as error:
            if connection is not None:
                connection.close()
            connection = None
            if attempt == 1:
                print("-\t-\t" + json.dumps({"error": str(error)}), flush=True)
