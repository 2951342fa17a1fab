#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests against the service contract (the schema check is separate).

Every service has a Deployment whose container listens on its DESIGN.md port, probes /readyz
(readiness) and /healthz (liveness) on it, has resource requests and limits, runs non-root with a
read-only root filesystem, and has terminationGracePeriodSeconds >= 30 (the graceful drain); a
Service and a PodDisruptionBudget select its pods; its environment (ConfigMap + env) covers every
variable DESIGN.md lists; the gateway runs >= 2 replicas with an autoscaling/v2 HPA on a custom
metric; every HPA custom/external metric is served by a prometheus-adapter rule whose source series is a
metric the services export (deploy/metrics.txt) with every label the HPA selects on; every stage but
those in SINGLE_REPLICA has an HPA, a shard-owned stage scales to at most STREAM_SHARDS replicas, and
the PDB of an autoscaled stage lets at least one pod go (a rebalance). NetworkPolicies deny
by default; clients reach only the gateway's API port; Prometheus (namespace monitoring) reaches the
metrics ports; each service's egress is exactly DNS plus the stores it uses (EGRESS). Every pod carries the
label `service: <name>` that the Prometheus rules and the dashboard select on. With --monitoring, the
rendered deploy/k8s/monitoring: a PodMonitor that selects every service's pods on their metrics port and
copies `service` (podTargetLabels), and a PrometheusRule holding exactly deploy/prometheus/rules.

Usage: check_k8s.py RENDERED.yaml ADAPTER_RULES.yaml [--prod] [--monitoring MONITORING.yaml RULES_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import re

import yaml

# Stages that stay at one replica, and why (deploy/k8s/README.md): outcome-tracker holds each symbol's
# quotes from its te:ticks group in one process.
SINGLE_REPLICA = {
    "outcome-tracker": "its te:ticks quotes and held decisions are per process",
}
# Stages whose replicas own symbol shards (DESIGN.md "Shards"): more replicas than shards own nothing.
SHARD_OWNED = {"feature-pipeline", "strategy-engine", "opportunity-aggregator"}
METRICS_TXT = Path(__file__).resolve().parents[2] / "deploy" / "metrics.txt"


def exported_metrics() -> dict[str, set[str]]:
    """deploy/metrics.txt: metric name -> its labels."""
    out: dict[str, set[str]] = {}
    for line in METRICS_TXT.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#"):
            out[parts[0]] = set(parts[2].split(",")) if len(parts) > 2 else set()
    return out


def source_series(rule: dict) -> str | None:
    """The metric a prometheus-adapter rule reads (the name in its seriesQuery)."""
    m = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule.get("seriesQuery", ""))
    return m.group(1) if m else None


def hpa_metric_errors(hname: str, kind: str, metric: dict, rules: list[dict], exported: dict[str, set[str]]) -> list[str]:
    """The rule producing `metric` reads a series the services export, with the labels the HPA selects on."""
    errors = []
    producing = [r for r in rules if r["name"]["as"] == metric["name"]]
    for r in producing:
        series = source_series(r)
        base = re.sub(r"_(bucket|sum|count)$", "", series or "")
        if series not in exported and base not in exported:
            errors.append(f"HPA {hname}: {kind} metric {metric['name']} reads {series}, which no service exports (deploy/metrics.txt)")
            continue
        labels = exported.get(series, exported.get(base, set())) | {"namespace", "pod", "le"}
        for label in (metric.get("selector") or {}).get("matchLabels", {}):
            if label not in labels:
                errors.append(f"HPA {hname}: selects {metric['name']} on label {label}, which {series} does not carry")
    return errors

PORTS = {"ingest": 9101, "feature-pipeline": 9102, "strategy-engine": 9103, "opportunity-aggregator": 9104, "outcome-tracker": 9105,
         "gateway": 8080, "audit-writer": 9106}
REQUIRED_ENV = {
    "common": ["REDIS_URL", "KAFKA_BROKERS", "KAFKA_TOPIC", "TRITON_URL", "TRITON_SECONDARY_URL", "MODEL_NAME",
               "MODEL_VERSION", "CANARY_ENABLED", "CANARY_VERSION", "CANARY_FRACTION", "SHADOW_ENABLED",
               "SCORE_TIMEOUT_MS", "SPREAD_TTL_SEC", "FEATURE_TTL_SEC", "FEATURE_WINDOW_MS", "STREAM_MAXLEN",
               "LOG_LEVEL", "STRATEGIES_FILE"],
    "gateway": ["GATEWAY_API_KEYS", "HTTP_PORT"],
    "audit-writer": ["POSTGRES_URL"],
}
MIN_GRACE = 30
# What each service may reach (NetworkPolicy egress ports): DNS and the stores and peers it uses.
EGRESS = {
    "ingest": {53, 6379, 9092},
    "feature-pipeline": {53, 6379},
    "strategy-engine": {53, 6379},
    "opportunity-aggregator": {53, 6379},
    "outcome-tracker": {53, 6379},
    "gateway": {53, 6379, 8001},
    "audit-writer": {53, 6379, 5432},
}


def selector_matches(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        value, op = labels.get(e["key"]), e["operator"]
        if (op == "In" and value not in e["values"]) or (op == "NotIn" and value in e["values"]) \
                or (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def network_errors(name: str, labels: dict, port: int, policies: list[dict]) -> list[str]:
    """Default deny, clients only to the gateway's API, Prometheus to the metrics port, egress as EGRESS."""
    errors = []
    mine = [p for p in policies if selector_matches(p["spec"]["podSelector"], labels)]
    types = {t for p in mine for t in p["spec"].get("policyTypes", [])}
    if not {"Ingress", "Egress"} <= types:
        errors.append(f"{name}: not isolated by NetworkPolicies in both directions (default deny missing)")
    egress_ports: set[int] = set()
    for p in mine:
        for rule in p["spec"].get("ingress", []):
            ports = {x["port"] for x in rule.get("ports", [])}
            if not rule.get("from"):
                if not (name == "gateway" and ports == {port}):
                    errors.append(f"{name}: {p['metadata']['name']} admits any source on {sorted(ports) or 'every port'}")
            else:
                for peer in rule["from"]:
                    ns = (peer.get("namespaceSelector") or {}).get("matchLabels", {})
                    if ns.get("kubernetes.io/metadata.name") != "monitoring" or "ipBlock" in peer:
                        errors.append(f"{name}: {p['metadata']['name']} admits {peer} (only Prometheus may)")
                if port not in ports and name != "gateway":
                    errors.append(f"{name}: {p['metadata']['name']} does not open the metrics port {port}")
        for rule in p["spec"].get("egress", []):
            if not rule.get("to"):
                errors.append(f"{name}: {p['metadata']['name']} allows egress to anywhere")
            ports = {x["port"] for x in rule.get("ports", [])}
            if not ports:
                errors.append(f"{name}: {p['metadata']['name']} allows egress on every port")
            egress_ports |= ports
    if not any(not r.get("from") for p in mine for r in p["spec"].get("ingress", [])) and name == "gateway":
        errors.append("gateway: clients cannot reach the API port (no ingress rule for it)")
    if name != "gateway" and not any(r.get("from") for p in mine for r in p["spec"].get("ingress", [])):
        errors.append(f"{name}: Prometheus cannot reach the metrics port")
    want = EGRESS.get(name, set())
    if egress_ports != want:
        errors.append(f"{name}: egress ports {sorted(egress_ports)}, expected exactly {sorted(want)}")
    return errors


def main(rendered: str, adapter: str, prod: bool, monitoring: tuple[str, str] | None = None) -> int:
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    errors: list[str] = []
    configmaps = by.get("ConfigMap", {})
    pod_labels: dict[str, dict] = {}
    pod_ports: dict[str, set[str]] = {}
    secrets = by.get("Secret", {})

    for name, port in PORTS.items():
        dep = by.get("Deployment", {}).get(name)
        if dep is None:
            errors.append(f"{name}: no Deployment")
            continue
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        sel = dep["spec"]["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            errors.append(f"{name}: selector does not match the pod labels")
        if labels.get("service") != name:
            errors.append(f"{name}: pod label service={name} missing (Prometheus rules select on it)")
        pod_labels[name] = labels
        errors.extend(network_errors(name, labels, port, list(by.get("NetworkPolicy", {}).values())))
        if pod.get("terminationGracePeriodSeconds", 30) < MIN_GRACE:
            errors.append(f"{name}: terminationGracePeriodSeconds below {MIN_GRACE}")
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
            errors.append(f"{name}: pod must set runAsNonRoot and a numeric runAsUser")
        (c,) = [c for c in pod["containers"] if c["name"] == name] or [None]
        if c is None:
            errors.append(f"{name}: no container named {name}")
            continue
        if (c.get("args") or c.get("command") or [None])[0] != name:
            errors.append(f"{name}: container args should start with {name} (the image entrypoint picks it)")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        pod_ports[name] = {n for n, p in ports.items() if p == port}
        if port not in ports.values():
            errors.append(f"{name}: containerPort {port} missing")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            target = ports.get(get.get("port"), get.get("port"))
            if get.get("path") != path or target != port:
                errors.append(f"{name}: {probe} should GET {path} on {port}, is {get}")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(kind, {})):
                errors.append(f"{name}: resources.{kind} needs cpu and memory")
        csc = c.get("securityContext", {})
        if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{name}: container needs readOnlyRootFilesystem and allowPrivilegeEscalation: false")
        if "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
            errors.append(f"{name}: container should drop ALL capabilities")
        # environment
        env = {e["name"] for e in c.get("env", [])}
        for ef in c.get("envFrom", []):
            ref = ef.get("configMapRef", {}).get("name")
            if ref is not None:
                if ref not in configmaps:
                    errors.append(f"{name}: envFrom ConfigMap {ref} not in the render")
                else:
                    env |= set(configmaps[ref].get("data", {}))
        want = REQUIRED_ENV["common"] + REQUIRED_ENV.get(name, []) + ([] if name == "gateway" else ["METRICS_PORT"])
        missing = [v for v in want if v not in env]
        if missing:
            errors.append(f"{name}: environment lacks {', '.join(missing)}")
        for e in c.get("env", []):
            port_var = "HTTP_PORT" if name == "gateway" else "METRICS_PORT"
            if e["name"] == port_var and e.get("value") != str(port):
                errors.append(f"{name}: {port_var} should be {port}")
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                s = secrets.get(ref["name"])
                if prod and s is not None:
                    errors.append(f"{name}: prod render must not contain Secret {ref['name']} (operator-managed)")
                if not prod and (s is None or ref["key"] not in {**s.get("data", {}), **s.get("stringData", {})}):
                    errors.append(f"{name}: Secret {ref['name']} lacks key {ref['key']}")
        # service and PDB
        def selects(obj_sel):
            return obj_sel and all(labels.get(k) == v for k, v in obj_sel.items())
        svcs = [s for s in by.get("Service", {}).values() if selects(s["spec"].get("selector"))]
        if not any(p.get("port") == port for s in svcs for p in s["spec"]["ports"]):
            errors.append(f"{name}: no Service exposing port {port}")
        pdbs = [p for p in by.get("PodDisruptionBudget", {}).values() if selects(p["spec"]["selector"].get("matchLabels"))]
        if not pdbs:
            errors.append(f"{name}: no PodDisruptionBudget")

    gw = by.get("Deployment", {}).get("gateway")
    if gw and gw["spec"].get("replicas", 1) < 2:
        errors.append("gateway: fewer than 2 replicas")

    rules = yaml.safe_load(open(adapter))
    custom = {r["name"]["as"] for r in rules.get("rules", [])}
    external = {r["name"]["as"] for r in rules.get("externalRules", [])}
    hpas = by.get("HorizontalPodAutoscaler", {})
    if "gateway" not in hpas:
        errors.append("gateway: no HorizontalPodAutoscaler")
    elif hpas["gateway"]["spec"].get("minReplicas", 1) < 2:
        errors.append("gateway: HPA minReplicas below 2")
    for hname, h in hpas.items():
        if h["apiVersion"] != "autoscaling/v2":
            errors.append(f"HPA {hname}: apiVersion should be autoscaling/v2")
        target = h["spec"]["scaleTargetRef"]["name"]
        if target not in by.get("Deployment", {}):
            errors.append(f"HPA {hname}: targets unknown Deployment {target}")
        kinds = set()
        for m in h["spec"]["metrics"]:
            kinds.add(m["type"])
            if m["type"] == "Pods" and m["pods"]["metric"]["name"] not in custom:
                errors.append(f"HPA {hname}: Pods metric {m['pods']['metric']['name']} has no prometheus-adapter rule")
            if m["type"] == "External" and m["external"]["metric"]["name"] not in external:
                errors.append(f"HPA {hname}: External metric {m['external']['metric']['name']} has no prometheus-adapter externalRule")
        if not kinds & {"Pods", "External", "Object"}:
            errors.append(f"HPA {hname}: no custom or external metric")
        exported = exported_metrics()
        for m in h["spec"]["metrics"]:
            if m["type"] == "Pods":
                errors.extend(hpa_metric_errors(hname, "Pods", m["pods"]["metric"], rules.get("rules", []), exported))
            if m["type"] == "External":
                errors.extend(hpa_metric_errors(hname, "External", m["external"]["metric"], rules.get("externalRules", []), exported))
        if target in SHARD_OWNED:
            shards = int(configmaps.get("te-config", {}).get("data", {}).get("STREAM_SHARDS", "1"))
            if h["spec"]["maxReplicas"] > shards:
                errors.append(f"HPA {hname}: maxReplicas {h['spec']['maxReplicas']} above STREAM_SHARDS {shards} (replicas would own no shard)")
        for pdb in by.get("PodDisruptionBudget", {}).values():
            dep = by.get("Deployment", {}).get(target)
            if dep is None or pdb["spec"]["selector"].get("matchLabels") != dep["spec"]["selector"]["matchLabels"]:
                continue
            spec = pdb["spec"]
            lets_one_go = ("maxUnavailable" in spec and str(spec["maxUnavailable"]) not in ("0", "0%")) or (
                "minAvailable" in spec and isinstance(spec["minAvailable"], int) and spec["minAvailable"] < h["spec"].get("minReplicas", 1))
            if not lets_one_go:
                errors.append(f"HPA {hname}: PodDisruptionBudget {pdb['metadata']['name']} lets no pod go (a rebalance could never drain one)")
    for name in PORTS:
        if name not in {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} and name not in SINGLE_REPLICA:
            errors.append(f"{name}: no HorizontalPodAutoscaler (every stage scales on its lag; SINGLE_REPLICA lists the exceptions)")
    if "STREAM_SHARDS" not in configmaps.get("te-config", {}).get("data", {}):
        errors.append("te-config: no STREAM_SHARDS")

    if monitoring:
        errors.extend(monitoring_errors(monitoring, pod_labels, pod_ports))

    for e in errors:
        print(f"k8s ({rendered}): {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"k8s: {rendered}: {len(docs)} objects satisfy the service contract")
    return 0


def monitoring_errors(files: tuple[str, str], pod_labels: dict[str, dict], pod_ports: dict[str, set[str]]) -> list[str]:
    rendered, rules_dir = files
    errors = []
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    if not monitors:
        errors.append("monitoring: no PodMonitor")
    for name, labels in pod_labels.items():
        covering = [m for m in monitors
                    if all(labels.get(k) == v for k, v in m["spec"]["selector"].get("matchLabels", {}).items())]
        if not covering:
            errors.append(f"monitoring: no PodMonitor selects the {name} pods")
        for m in covering:
            if "service" not in m["spec"].get("podTargetLabels", []):
                errors.append(f"monitoring: PodMonitor {m['metadata']['name']} does not copy the service label")
            scraped = {e.get("port") for e in m["spec"].get("podMetricsEndpoints", [])}
            if not scraped & pod_ports.get(name, set()):
                errors.append(f"monitoring: PodMonitor {m['metadata']['name']} scrapes none of {name}'s metrics port names")
    want = []
    for f in sorted(Path(rules_dir).glob("*.yml")):
        want.extend(yaml.safe_load(f.read_text())["groups"])
    got = [g for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"]]
    if got != want:
        errors.append(f"monitoring: PrometheusRule groups differ from {rules_dir} (run `make k8s-rules`)")
    return errors


if __name__ == "__main__":
    args = sys.argv[3:]
    mon = None
    if "--monitoring" in args:
        i = args.index("--monitoring")
        mon = (args[i + 1], args[i + 2])
    sys.exit(main(sys.argv[1], sys.argv[2], "--prod" in args, mon))
