#!/usr/bin/env python3
"""Checks docker-compose.yml beyond the Compose JSON schema.

1. Interpolates ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$ the way Compose does (with
   an empty environment, so the committed defaults are what gets checked; a required variable, a secret
   `make up` generates into .env, gets a stand-in value) and parses the result with the strict
   Rust `compose_spec` parser (PyPI `compose-spec`), which rejects bad image references, durations,
   port syntax and unknown keys.
2. Asserts the contract with DESIGN.md: every service has an image or build; every Trade Eligibility
   service runs the shared image with its name as command, has the full environment, publishes its
   port, has a health check on /readyz of that port and waits for what it depends on with
   `condition: service_healthy` (or `service_completed_successfully` for one-shots); backing servers
   have health checks; mounted host paths exist.

Usage: check_compose.py docker-compose.yml
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import yaml

SERVICE_PORTS = {  # DESIGN.md: default ports
    "ingest": 9101,
    "feature-pipeline": 9102,
    "strategy-engine": 9103,
    "opportunity-aggregator": 9104,
    "outcome-tracker": 9105,
    "gateway": 8080,
    "audit-writer": 9106,
}
REQUIRED_ENV = [  # DESIGN.md "Environment" plus the strategies file
    "REDIS_URL", "KAFKA_BROKERS", "KAFKA_TOPIC", "POSTGRES_URL", "TRITON_URL", "TRITON_SECONDARY_URL",
    "MODEL_NAME", "MODEL_VERSION", "CANARY_ENABLED", "CANARY_VERSION", "CANARY_FRACTION", "SHADOW_ENABLED",
    "SCORE_TIMEOUT_MS", "SPREAD_TTL_SEC", "FEATURE_TTL_SEC", "FEATURE_WINDOW_MS", "STREAM_MAXLEN",
    "LOG_LEVEL", "GATEWAY_API_KEYS", "STRATEGIES_FILE",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SERVICE_NAME",
]
BACKING = ["redpanda", "redis", "postgres", "triton", "prometheus", "grafana", "otel-collector", "jaeger"]
ONE_SHOTS = {"redpanda-init", "replay"}
# Services with no health check, and why (anything else without one fails the check).
NO_HEALTHCHECK_OK: dict[str, str] = {
    "otel-collector": "distroless image (no shell, no HTTP client); its health_check extension is published on 13133",
}

_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, env: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        expr = m.group("braced") if m.group("braced") is not None else m.group("plain")
        for op in (":-", "-", ":?", "?"):
            if op in expr:
                name, arg = expr.split(op, 1)
                present = name in env and (env[name] != "" or op in ("-", "?"))
                if op in (":-", "-"):
                    return env[name] if present else arg
                if not present:
                    # A secret without a default (`make up` generates it into .env): checked with a stand-in.
                    return "required-value"
                return env[name]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", expr):
            raise ValueError(f"invalid interpolation ${{{expr}}}")
        return env.get(expr, "")

    return _VAR.sub(repl, value)


def walk(node, env):
    if isinstance(node, dict):
        return {k: walk(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [walk(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def env_names(service: dict) -> set[str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {e.split("=", 1)[0] for e in env}
    return set(env)


def published(service: dict) -> set[int]:
    ports = set()
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            ports.add(int(p["target"]))
        else:
            ports.add(int(str(p).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def main(path: str) -> int:
    root = Path(path).resolve().parent
    raw = yaml.safe_load(Path(path).read_text())
    # Compose reads .env beside the file; checking the committed defaults means ignoring any local one.
    doc = walk(raw, {})
    # Compose casts an interpolated value to the field's type (`replicas: ${TE_STAGE_REPLICAS:-1}` is an int).
    for svc in (doc.get("services") or {}).values():
        deploy = svc.get("deploy") or {}
        if isinstance(deploy.get("replicas"), str) and deploy["replicas"].isdigit():
            deploy["replicas"] = int(deploy["replicas"])
    errors: list[str] = []

    try:
        import compose_spec  # PyPI compose-spec: the Rust compose_spec parser

        text = yaml.safe_dump({k: v for k, v in doc.items() if not k.startswith("x-")}, sort_keys=False)
        compose_spec.PyCompose.from_yaml(text).validate()
    except ImportError:
        errors.append("python package compose-spec is missing (scripts/check-deploy.sh installs it)")
    except Exception as e:  # the parser's message names the offending key and line
        errors.append(f"compose_spec parser: {e}")

    services: dict = doc.get("services", {})
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            errors.append(f"{name}: neither image nor build")
        if name not in NO_HEALTHCHECK_OK and name not in ONE_SHOTS and "healthcheck" not in svc:
            errors.append(f"{name}: no healthcheck")
        hc = svc.get("healthcheck")
        if hc and not hc.get("disable") and not hc.get("test"):
            errors.append(f"{name}: healthcheck without test")
        for dep, spec in (svc.get("depends_on") or {}).items() if isinstance(svc.get("depends_on"), dict) else []:
            if dep not in services:
                errors.append(f"{name}: depends on unknown service {dep}")
                continue
            want = "service_completed_successfully" if dep in ONE_SHOTS else "service_healthy"
            if spec.get("condition") != want:
                errors.append(f"{name}: depends_on {dep} should use condition {want}")
            if want == "service_healthy" and "healthcheck" not in services[dep]:
                errors.append(f"{name}: waits for {dep} to be healthy but {dep} has no healthcheck")
        if isinstance(svc.get("depends_on"), list):
            errors.append(f"{name}: depends_on must use the long form with a condition")
        for vol in svc.get("volumes") or []:
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")) and src.startswith("./"):
                if not (root / src).exists():
                    errors.append(f"{name}: mounted path {src} does not exist in the repository")
        if "build" in svc:
            b = svc["build"]
            ctx = root / (b.get("context", ".") if isinstance(b, dict) else b)
            df = ctx / (b.get("dockerfile", "Dockerfile") if isinstance(b, dict) else "Dockerfile")
            if not df.is_file():
                errors.append(f"{name}: build file {df} missing")

    images = {services[s].get("image") for s in SERVICE_PORTS if s in services}
    if len(images) != 1:
        errors.append(f"the services should share one image, found {images}")
    for name, port in SERVICE_PORTS.items():
        svc = services.get(name)
        if svc is None:
            errors.append(f"service {name} missing")
            continue
        if svc.get("command", [None])[0] != name:
            errors.append(f"{name}: command should start with '{name}' (the entrypoint picks the executable)")
        missing = [v for v in REQUIRED_ENV if v not in env_names(svc)]
        if missing:
            errors.append(f"{name}: environment lacks {', '.join(missing)}")
        port_var = "HTTP_PORT" if name == "gateway" else "METRICS_PORT"
        env = svc.get("environment") or {}
        if str(env.get(port_var)) != str(port):
            errors.append(f"{name}: {port_var} should be {port}, is {env.get(port_var)}")
        if port not in published(svc):
            errors.append(f"{name}: port {port} not published")
        test = " ".join((svc.get("healthcheck") or {}).get("test") or [])
        if f"localhost:{port}/readyz" not in test:
            errors.append(f"{name}: healthcheck should probe http://localhost:{port}/readyz, is {test!r}")
    for name in BACKING:
        if name not in services:
            errors.append(f"backing service {name} missing")

    # Prometheus must scrape every service: compose targets in deploy/prometheus/prometheus.yml.
    prom = yaml.safe_load((root / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in prom.get("scrape_configs", []) for sc in job.get("static_configs", [])
               for t in sc.get("targets", [])}
    for name, port in SERVICE_PORTS.items():
        if f"{name}:{port}" not in targets:
            errors.append(f"prometheus.yml does not scrape {name}:{port}")

    for e in errors:
        print(f"compose: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"compose: ok ({len(services)} services; contract and strict parse)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml"))
