#!/usr/bin/env python3
"""Scale-out benchmark (issue #16), driven by bench/run-scaleout.sh.

Everything runs on private servers started here: a redis-server, a 3-master Redis Cluster with a replica
each (redis-server's cluster mode, `redis-cli --cluster create`), and a dev-broker. The input is preloaded
through the real path (`te replay` → ingest with STREAM_SHARDS=4 → te:ticks:{k}); each measurement then
resets the stage's consumer group and outputs and drains that same input again:

1. feature-pipeline with 1 and 2 replicas (throughput: input entries / first-to-last output write, from
   the output stream ids, which are Redis's clock), on the single redis-server and on the cluster;
2. opportunity-aggregator the same way over te:signals:{k} (strategy-engine makes them once); 2 replicas
   only when the aggregator shares its shards across replicas (leases), else marked not applicable;
3. rebalance of feature-pipeline: a replica added to a running one (scale-up), and a replica SIGKILLed:
   the time until a shard's lease names its new holder, and until the new holder's first write to it
   (the first te:features:{k} id after the move).
Writes bench/results/scaleout.json and scaleout.md. Nothing is asserted.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SHARDS = 4
STAGES = {
    "feature-pipeline": ("te:ticks", "te:features"),
    "strategy-engine": ("te:features", "te:signals"),
    "opportunity-aggregator": ("te:signals", "te:opportunities"),
}


def free_port(pair=False):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if not pair or (port + 10000 < 65536 and port < 55535 and port_free(port + 10000)):
            return port


def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def shard_key(base, k):
    return f"{base}:{{{k}}}"


def now_ms():
    return int(time.time() * 1000)


class Redis:
    """A private redis-server or cluster, reached with redis-cli."""

    def __init__(self, work, cluster):
        self.cluster = cluster
        self.procs = []
        self.ports = []
        for i in range(6 if cluster else 1):
            port = free_port(pair=cluster)
            d = os.path.join(work, f"redis-{port}")
            os.makedirs(d)
            args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", d, "--daemonize", "no"]
            if cluster:
                args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-node-timeout", "3000"]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.ports.append(port)
        for port in self.ports:
            for _ in range(100):
                if self.raw(["PING"], port=port) == ["PONG"]:
                    break
                time.sleep(0.1)
        if cluster:
            subprocess.run(["redis-cli", "--cluster", "create"] + [f"127.0.0.1:{p}" for p in self.ports]
                           + ["--cluster-replicas", "1", "--cluster-yes"], check=True, stdout=subprocess.DEVNULL)
            for _ in range(300):
                if all("cluster_state:ok" in "\n".join(self.raw(["CLUSTER", "INFO"], port=p)) for p in self.ports):
                    break
                time.sleep(0.1)

    @property
    def url(self):
        if self.cluster:
            return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/0"
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def raw(self, args, port=None):
        cmd = ["redis-cli", "-p", str(port or self.ports[0])]
        if self.cluster and port is None:
            cmd.append("-c")
        out = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True).stdout
        return out.splitlines()

    def masters(self):
        if not self.cluster:
            return self.ports
        return [p for p in self.ports if self.raw(["ROLE"], port=p)[:1] == ["master"]]

    def xlen(self, key):
        out = self.raw(["XLEN", key])
        return int(out[0]) if out and out[0].lstrip("-").isdigit() else 0

    def edge_id(self, key, last):
        out = self.raw(["XREVRANGE", key, "+", "-", "COUNT", "1"] if last else ["XRANGE", key, "-", "+", "COUNT", "1"])
        return out[0] if out else None

    def first_id_after(self, key, ms):
        out = self.raw(["XRANGE", key, f"{ms}-0", "+", "COUNT", "1"])
        return out[0] if out else None

    def group(self, key, name):
        lines = self.raw(["XINFO", "GROUPS", key])
        # raw mode: one group's fields as name/value lines, groups one after another
        groups, cur = [], {}
        i = 0
        while i + 1 < len(lines):
            if lines[i] == "name" and cur:
                groups.append(cur)
                cur = {}
            cur[lines[i]] = lines[i + 1]
            i += 2
        if cur:
            groups.append(cur)
        return next((g for g in groups if g.get("name") == name), None)

    def delete_matching(self, pattern):
        for port in self.masters():
            keys = subprocess.run(["redis-cli", "-p", str(port), "--scan", "--pattern", pattern],
                                  capture_output=True, text=True).stdout.split()
            for key in keys:
                self.raw(["DEL", key])

    def stop(self):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


class Bench:
    def __init__(self, args):
        self.bin = args.bin
        self.root = args.root
        self.data = args.data
        self.work = tempfile.mkdtemp(prefix="scaleout-")
        self.children = []
        boot = os.path.join(self.work, "boot")
        self.broker = subprocess.Popen([os.path.join(self.bin, "dev-broker"), "--bootstrap-file", boot],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(boot) and open(boot).read().strip():
                break
            time.sleep(0.1)
        self.brokers = open(boot).read().strip()

    def start(self, product, redis, name, extra=None):
        env = dict(os.environ, REDIS_URL=redis.url, KAFKA_BROKERS=self.brokers, CONSUMER_NAME=name,
                   STREAM_SHARDS=str(SHARDS), METRICS_PORT=str(free_port()), LOG_LEVEL="info", STREAM_BLOCK_MS="100",
                   STRATEGIES_FILE=os.path.join(self.root, "deploy/strategies/default.json"))
        env.update(extra or {})
        log = open(os.path.join(self.work, f"{product}-{name}.log"), "a")
        p = subprocess.Popen([os.path.join(self.bin, product)], env=env, stdout=log, stderr=log)
        p.log_path = log.name
        self.children.append(p)
        return p

    def stop(self, procs):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def preload(self, redis, recordings):
        """te replay → ingest (STREAM_SHARDS=4) → te:ticks:{k}; returns the ticks per shard."""
        topic = f"scaleout-{os.getpid()}-{now_ms()}"
        metrics = free_port()
        ingest = self.start("ingest", redis, topic, {"KAFKA_TOPIC": topic, "KAFKA_GROUP": topic,
                                                     "KAFKA_CONF_allow_auto_create_topics": "true",
                                                     "METRICS_PORT": str(metrics)})
        for _ in range(600):
            if "kafka partitions assigned" in open(ingest.log_path).read():
                break
            time.sleep(0.1)
        for r in recordings:
            subprocess.run([os.path.join(self.bin, "te"), "replay", "--topic", topic, "--speed", "max", "--quiet",
                            os.path.join(self.data, r)], env=dict(os.environ, KAFKA_BROKERS=self.brokers),
                           check=True, stdout=subprocess.DEVNULL)
        def lag():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2).read().decode()
            except OSError:
                return None
            for line in text.splitlines():
                if line.startswith("te_ingest_kafka_lag_messages"):
                    return float(line.split()[-1])
            return None

        # Done once ingest reports no Kafka lag and the streams have stopped growing for 3 s.
        last, stable = -1, 0
        while stable < 30 or lag() != 0:
            total = sum(redis.xlen(shard_key("te:ticks", k)) for k in range(SHARDS))
            stable = stable + 1 if total == last else 0
            last = total
            time.sleep(0.1)
        self.stop([ingest])
        return {k: redis.xlen(shard_key("te:ticks", k)) for k in range(SHARDS)}

    def reset(self, redis, stage):
        source, output = STAGES[stage]
        for k in range(SHARDS):
            redis.raw(["XGROUP", "DESTROY", shard_key(source, k), stage])
            if output != "te:opportunities":
                redis.raw(["DEL", shard_key(output, k)])
            redis.raw(["DEL", f"te:lease:{stage}:{shard_key(source, k)}"])
        redis.raw(["DEL", f"te:replicas:{stage}:{source}"])
        if stage == "opportunity-aggregator":
            redis.raw(["DEL", "te:opportunities"])
            redis.delete_matching("te:agg:*")

    def drained(self, redis, stage, shards):
        source = STAGES[stage][0]
        for k in shards:
            key = shard_key(source, k)
            g = redis.group(key, stage)
            if g is None or g.get("pending") != "0" or g.get("last-delivered-id") != redis.edge_id(key, last=True):
                return False
        return True

    def drain(self, redis, stage, replicas, timeout=600):
        """Resets the stage, starts `replicas` replicas and waits until every shard is drained."""
        source, output = STAGES[stage]
        shards = [k for k in range(SHARDS) if redis.xlen(shard_key(source, k)) > 0]
        entries = sum(redis.xlen(shard_key(source, k)) for k in shards)
        self.reset(redis, stage)
        t0 = time.time()
        procs = [self.start(stage, redis, f"{stage}-r{i}") for i in range(replicas)]
        deadline = t0 + timeout
        while not self.drained(redis, stage, shards):
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                self.stop(procs)
                raise RuntimeError(f"{stage} x{replicas} did not drain; logs in {self.work}")
            time.sleep(0.05)
        wall = time.time() - t0
        holders = self.lease_holders(redis, stage)
        self.stop(procs)
        outs = [shard_key(output, k) for k in shards] if output != "te:opportunities" else [output]
        ids = [(redis.edge_id(o, last=False), redis.edge_id(o, last=True)) for o in outs]
        ids = [(a, b) for a, b in ids if a and b]
        first = min(int(a.split("-")[0]) for a, _ in ids) if ids else None
        last = max(int(b.split("-")[0]) for _, b in ids) if ids else None
        span = (last - first) / 1000 if ids and last > first else None
        return {"replicas": replicas, "entries": entries, "shards_with_input": len(shards),
                "first_to_last_write_s": span, "wall_s_incl_start": round(wall, 2),
                "entries_per_s": round(entries / span) if span else None,
                # Which replica held each shard with input at the end (a replica idle for want of input
                # shards cannot add throughput).
                "holders": {str(k): holders[k] for k in shards}}

    def lease_holders(self, redis, stage="feature-pipeline"):
        out = {}
        for k in range(SHARDS):
            holder = redis.raw(["HGET", f"te:lease:{stage}:{shard_key(STAGES[stage][0], k)}", "holder"])
            out[k] = holder[0] if holder else ""
        return out

    def wait_move(self, redis, shards, to, since, timeout=30):
        """Polls the leases until one of `shards` is held by `to`; (shard, seconds since `since`, ms)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            holders = self.lease_holders(redis)
            for k in shards:
                if holders[k] == to:
                    return k, time.time() - since, now_ms()
            time.sleep(0.02)
        return None, None, None

    def first_write(self, redis, k, after_ms, since, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            i = redis.first_id_after(shard_key("te:features", k), after_ms)
            if i:
                return int(i.split("-")[0]) / 1000 - since
            time.sleep(0.02)
        return None

    def rebalance(self, redis, lease_ms):
        shards = [k for k in range(SHARDS) if redis.xlen(shard_key("te:ticks", k)) > 0]
        extra = {"SHARD_LEASE_MS": str(lease_ms)}
        out = {"lease_ms": lease_ms, "shards_with_input": len(shards)}
        # Scale-up: r0 holds every shard and is writing; r1 starts.
        self.reset(redis, "feature-pipeline")
        r0 = self.start("feature-pipeline", redis, "up-r0", extra)
        while not (all(h == "up-r0" for k, h in self.lease_holders(redis).items() if k in shards)
                   and any(redis.xlen(shard_key("te:features", k)) for k in shards)):
            time.sleep(0.02)
        t_up = time.time()
        r1 = self.start("feature-pipeline", redis, "up-r1", extra)
        k, moved, moved_ms = self.wait_move(redis, shards, "up-r1", t_up)
        write = self.first_write(redis, k, moved_ms - 20, t_up) if k is not None else None
        out["scale_up"] = {"moved_s": moved, "first_write_s": write, "input_left": not self.drained(
            redis, "feature-pipeline", shards)}
        self.stop([r0, r1])
        # SIGKILL: two replicas share the shards and write; one is killed.
        self.reset(redis, "feature-pipeline")
        a = self.start("feature-pipeline", redis, "kill-a", extra)
        b = self.start("feature-pipeline", redis, "kill-b", extra)
        while True:
            holders = self.lease_holders(redis)
            held_b = [k for k in shards if holders[k] == "kill-b"]
            if held_b and all(holders[k] in ("kill-a", "kill-b") for k in shards) and any(
                    redis.xlen(shard_key("te:features", k)) for k in held_b):
                break
            time.sleep(0.02)
        t_kill = time.time()
        b.kill()
        k, moved, moved_ms = self.wait_move(redis, held_b, "kill-a", t_kill)
        write = self.first_write(redis, k, moved_ms - 20, t_kill) if k is not None else None
        out["sigkill"] = {"moved_s": moved, "first_write_s": write, "input_left": not self.drained(
            redis, "feature-pipeline", shards)}
        self.stop([a, b])
        return out

    def close(self):
        self.stop(self.children)
        self.broker.kill()
        self.broker.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def aggregator_shared_across_replicas(root):
    """True once opportunity-aggregator holds its shards under leases (ShardedStreamWorker)."""
    path = os.path.join(root, "Services/opportunity-aggregator/main.swift")
    return "ShardedStreamWorker" in open(path).read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    # BTCUSDT and ETHUSDT (spot) fall in shard 0 of 4, BTCUSDT-PERP and ETHUSDT-PERP (USD-M) in shard 2.
    ap.add_argument("--recordings", nargs="+", default=[
        "binance/spot_btcusdt_20240808.gz", "binance/usdm_btcusdt_20240808.gz", "binance/spot_ethusdt_20240808.gz",
        "binance/usdm_ethusdt_20240808.gz"])
    ap.add_argument("--lease-ms", type=int, default=3000)
    ap.add_argument("--redis", nargs="+", default=["single", "cluster"], choices=["single", "cluster"])
    args = ap.parse_args()
    bench = Bench(args)
    result = {"shards": SHARDS, "recordings": args.recordings,
              "load_before": open("/proc/loadavg").read().split()[:3], "cores": os.cpu_count()}
    aggregator_replicas = [1, 2] if aggregator_shared_across_replicas(args.root) else [1]
    try:
        for kind in args.redis:
            redis = Redis(bench.work, cluster=(kind == "cluster"))
            try:
                per = {"ticks_per_shard": bench.preload(redis, args.recordings)}
                print(f"scaleout: {kind}: preloaded {per['ticks_per_shard']}", file=sys.stderr)
                per["feature-pipeline"] = [bench.drain(redis, "feature-pipeline", n) for n in (1, 2)]
                bench.drain(redis, "strategy-engine", 1)
                per["signals"] = sum(redis.xlen(shard_key("te:signals", k)) for k in range(SHARDS))
                per["opportunity-aggregator"] = []
                for n in aggregator_replicas:
                    try:
                        per["opportunity-aggregator"].append(bench.drain(redis, "opportunity-aggregator", n, 180))
                    except RuntimeError as error:  # e.g. an aggregator that cannot run on a cluster
                        per["opportunity-aggregator"].append({"replicas": n, "error": str(error)})
                if kind == "single":
                    per["rebalance"] = bench.rebalance(redis, args.lease_ms)
                result[kind] = per
                print(f"scaleout: {kind}: {json.dumps(per)}", file=sys.stderr)
            finally:
                redis.stop()
    finally:
        bench.close()
    result["load_after"] = open("/proc/loadavg").read().split()[:3]
    result["aggregator_shared_across_replicas"] = len(aggregator_replicas) == 2
    json.dump(result, open(os.path.join(args.out, "scaleout.json"), "w"), indent=2)
    open(os.path.join(args.out, "scaleout.md"), "w").write(markdown(result))
    print(markdown(result))


def markdown(r):
    def rate(row):
        return f"{row['entries_per_s']:,}" if row.get("entries_per_s") else "n/a"

    def secs(v):
        return f"{v:.2f}" if isinstance(v, (int, float)) else "n/a"

    lines = [
        "## scaleout",
        "",
        f"STREAM_SHARDS={r['shards']}, input preloaded through te replay → ingest ({', '.join(r['recordings'])}); "
        f"each row drains the same input again after its group and outputs are reset. Throughput = input entries "
        f"/ first-to-last output write (Redis stream ids). {r['cores']} cores, load average "
        f"{' '.join(r['load_before'])} before, {' '.join(r['load_after'])} after.",
        "",
        "| stage | replicas | Redis | entries | input shards per replica | entries/s | wall incl. start (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage in ("feature-pipeline", "opportunity-aggregator"):
        for kind in ("single", "cluster"):
            for row in r.get(kind, {}).get(stage, []):
                if "error" in row:
                    lines.append(f"| {stage} | {row['replicas']} | {kind} | — | — | failed: did not drain | — |")
                    continue
                held = {}
                for holder in row.get("holders", {}).values():
                    held[holder] = held.get(holder, 0) + 1
                split = " + ".join(str(n) for n in sorted(held.values(), reverse=True)) or str(row["shards_with_input"])
                lines.append(f"| {stage} | {row['replicas']} | {kind} | {row['entries']:,} | {split} | {rate(row)} | "
                             f"{row['wall_s_incl_start']} |")
        if stage == "opportunity-aggregator" and not r["aggregator_shared_across_replicas"]:
            lines.append("| opportunity-aggregator | 2 | — | — | — | n/a: this tree's aggregator is one replica "
                         "(no shard leases) | — |")
    rb = r.get("single", {}).get("rebalance")
    if rb:
        lines += [
            "",
            f"Rebalance of feature-pipeline (single redis-server, SHARD_LEASE_MS={rb['lease_ms']}): seconds from the "
            "event until a shard's lease names its new holder, and until that holder's first write to the shard.",
            "",
            "| event | lease moved (s) | first write by the new owner (s) |",
            "| --- | --- | --- |",
            f"| scale-up: a 2nd replica started | {secs(rb['scale_up']['moved_s'])} | "
            f"{secs(rb['scale_up']['first_write_s'])} |",
            f"| SIGKILL of one of 2 replicas | {secs(rb['sigkill']['moved_s'])} | "
            f"{secs(rb['sigkill']['first_write_s'])} |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
