#!/usr/bin/env python3
"""Checks every PromQL expression the deployment relies on.

Sources: recording and alert rules (deploy/prometheus/rules), Grafana dashboards
(deploy/grafana/dashboards), prometheus-adapter rules (deploy/k8s/prometheus-adapter/rules.yaml,
templates expanded the way the adapter does).

1. Each expression parses: they are written as recording rules into a temporary file and checked with
   `promtool check rules` (Prometheus's own parser).
2. Each metric an expression selects is known: a name in deploy/metrics.txt (histograms also as
   _bucket/_sum/_count), a recording rule defined in deploy/prometheus/rules, or `up`.
3. With TE_METRICS_URLS set (space- or comma-separated /metrics URLs of running services), every
   te_*/canary_* metric the expressions use must be exported by at least one of them (a family marked
   `lazy` in deploy/metrics.txt — label values not known up front, e.g. per symbol — only gets a note),
   and every exported te_*/canary_* family must follow Prometheus naming conventions (counters end in
   _total, histograms in a unit, gauges not in _total); every family a service exports has HELP text, and
   every service exports the standard process_* families.
4. Dashboards load as JSON, have a uid, unique panel ids, and use the provisioned datasource or a
   `datasource` template variable of type prometheus (so the dashboard imports into any Grafana); their
   query variables are `namespace` and `pod` (Kubernetes; "All" also matches compose's unlabelled series),
   and every te_*/canary_* selector of a panel is scoped by them.

Usage: check_promql.py REPO_ROOT
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import promql_parser
import yaml

GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "${__rate_interval}": "1m"}
# The dashboard's own template variables (multi-value with an `All` of ".*"), as Grafana expands them.
DASHBOARD_VARS = {"namespace": ".*", "pod": ".*"}
ALWAYS_KNOWN = {"up"}
# What every service exports about its process (ServiceKit's ProcessMetrics).
PROCESS_FAMILIES = {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def contract(path: Path) -> tuple[dict[str, str], set[str]]:
    """Name -> type, and the names marked `lazy` (series appear with their first event)."""
    out, lazy = {}, set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, kind, *rest = line.split()
            out[name] = kind
            if "lazy" in rest:
                lazy.add(name)
    return out, lazy


HISTOGRAM_UNITS = ("_seconds", "_bytes", "_rows", "_entries", "_ratio")
# DESIGN.md names the canary delta without a unit (it is a difference of two scores, unitless).
CONVENTION_EXCEPTIONS = {"canary_abs_delta"}


def convention_errors(types: dict[str, str]) -> list[str]:
    errors = []
    for name, kind in sorted(types.items()):
        if not name.startswith(("te_", "canary_")) or name in CONVENTION_EXCEPTIONS:
            continue
        if kind == "counter" and not name.endswith("_total"):
            errors.append(f"live: counter {name} does not end in _total")
        elif kind != "counter" and name.endswith("_total"):
            errors.append(f"live: {kind} {name} ends in _total (only counters may)")
        elif kind == "histogram" and not name.endswith(HISTOGRAM_UNITS):
            errors.append(f"live: histogram {name} has no unit suffix ({', '.join(HISTOGRAM_UNITS)})")
    return errors


def series_names(contract_names: dict[str, str]) -> dict[str, str]:
    """Sample name -> contract (family) name."""
    out = {}
    for name, kind in contract_names.items():
        out[name] = name
        if kind == "histogram":
            for s in HISTOGRAM_SUFFIXES:
                out[name + s] = name
    return out


def selected_metrics(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:
                for m in node.matchers.matchers if hasattr(node.matchers, "matchers") else []:
                    if m.name == "__name__":
                        names.add(m.value)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def collect(root: Path, errors: list[str]) -> tuple[list[tuple[str, str]], set[str]]:
    """Returns [(where, expr)] and the set of recorded metric names."""
    exprs: list[tuple[str, str]] = []
    recorded: set[str] = set()
    for f in sorted((root / "deploy/prometheus/rules").glob("*.yml")):
        for g in yaml.safe_load(f.read_text())["groups"]:
            for r in g["rules"]:
                label = r.get("record") or r.get("alert")
                exprs.append((f"{f.relative_to(root)}:{label}", r["expr"]))
                if "record" in r:
                    recorded.add(r["record"])

    ds_file = root / "deploy/grafana/provisioning/datasources/prometheus.yml"
    ds_uids = {d["uid"] for d in yaml.safe_load(ds_file.read_text())["datasources"]}
    for f in sorted((root / "deploy/grafana/dashboards").glob("*.json")):
        try:
            dash = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            errors.append(f"{f}: not JSON: {e}")
            continue
        if not dash.get("uid") or not dash.get("title"):
            errors.append(f"{f}: dashboard needs uid and title")
        panels = []
        for p in dash.get("panels", []):
            panels.append(p)
            panels.extend(p.get("panels", []))
        ids = [p.get("id") for p in panels]
        if len(ids) != len(set(ids)) or None in ids:
            errors.append(f"{f}: panel ids must be present and unique")
        variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list", [])}
        ds_var = variables.get("datasource")
        allowed_uids = set(ds_uids)
        if ds_var and ds_var.get("type") == "datasource" and ds_var.get("query") == "prometheus":
            allowed_uids.add("${datasource}")
        for name in DASHBOARD_VARS:
            if name not in variables:
                errors.append(f"{f}: no `{name}` template variable")
        for name, v in variables.items():
            if v.get("type") == "query":
                q = (v.get("query") or {}).get("query", "") if isinstance(v.get("query"), dict) else v.get("query", "")
                inner = q.removeprefix("label_values(").rsplit(",", 1)[0] if q.startswith("label_values(") else q
                for var, value in DASHBOARD_VARS.items():
                    inner = inner.replace("$" + var, value)
                exprs.append((f"{f.relative_to(root)}:variable {name}", inner))
        n = 0
        for p in panels:
            if p.get("type") == "row":
                continue
            if "gridPos" not in p:
                errors.append(f"{f}: panel {p.get('title')!r} has no gridPos")
            uid = (p.get("datasource") or {}).get("uid")
            if uid not in allowed_uids:
                errors.append(f"{f}: panel {p.get('title')!r} uses datasource uid {uid!r}, allowed: {sorted(allowed_uids)}")
            if not p.get("targets"):
                errors.append(f"{f}: panel {p.get('title')!r} has no queries")
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                for var, value in DASHBOARD_VARS.items():
                    expr = expr.replace("$" + var, value)
                for sel in re.finditer(r"\b((?:te|canary)_[a-z0-9_]+|service:[a-z0-9_]+:[a-z0-9_]+)(\{[^}]*\})?", t.get("expr", "")):
                    if 'namespace=~"$namespace"' not in (sel.group(2) or ""):
                        errors.append(f"{f}: panel {p.get('title')!r}: {sel.group(1)} is not scoped by $namespace")
                if "$" in expr:
                    errors.append(f"{f}: panel {p.get('title')!r}: unknown Grafana variable in {t['expr']!r}")
                exprs.append((f"{f.relative_to(root)}:{p.get('title')}/{t.get('refId')}", expr))
                n += 1
        if n == 0:
            errors.append(f"{f}: no queries")

    adapter = yaml.safe_load((root / "deploy/k8s/prometheus-adapter/rules.yaml").read_text())
    for section in ("rules", "externalRules"):
        for r in adapter.get(section, []):
            series = selected_metrics(r["seriesQuery"])
            (series_name,) = series or {"?"}
            exprs.append((f"prometheus-adapter {section} seriesQuery {r['name']['as']}", r["seriesQuery"]))
            overrides = r.get("resources", {}).get("overrides", {})
            matchers = ",".join(f'{label}="x"' for label in overrides) or 'namespace="x"'
            group_by = ",".join(label for label, res in overrides.items() if res.get("resource") != "namespace") or "namespace"
            q = (r["metricsQuery"].replace("<<.Series>>", series_name).replace("<<.LabelMatchers>>", matchers)
                 .replace("<<.GroupBy>>", group_by))
            if "<<" in q:
                errors.append(f"prometheus-adapter {r['name']['as']}: unexpanded template in {r['metricsQuery']!r}")
            exprs.append((f"prometheus-adapter {section} metricsQuery {r['name']['as']}", q))
    return exprs, recorded


def promtool_parse(exprs: list[tuple[str, str]], errors: list[str]) -> None:
    def run(items):
        doc = {"groups": [{"name": "parse-check", "rules": [
            {"record": f"parse_check:expr_{i}", "expr": e} for i, (_, e) in enumerate(items)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            yaml.safe_dump(doc, f)
        try:
            return subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
        finally:
            os.unlink(f.name)

    if run(exprs).returncode == 0:
        return
    for where, e in exprs:  # locate the offenders
        r = run([(where, e)])
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            errors.append(f"{where}: promtool cannot parse {e!r}: {msg[-1] if msg else ''}")


def live_names(urls: list[str], errors: list[str], types: dict[str, str]) -> set[str]:
    names: set[str] = set()
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        except Exception as e:
            errors.append(f"live: cannot read {url}: {e}")
            continue
        typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
        helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ") and len(line.split()) > 3}
        for family in sorted(typed - helped):
            errors.append(f"live: {url}: family {family} has no HELP text")
        for family in PROCESS_FAMILIES - typed:
            errors.append(f"live: {url}: {family} is not exported")
        for line in text.splitlines():
            if line.startswith("# TYPE ") or line.startswith("# HELP "):
                names.add(line.split()[2])
                if line.startswith("# TYPE "):
                    types[line.split()[2]] = line.split()[3]
            elif line and not line.startswith("#"):
                names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def main(root: Path) -> int:
    errors: list[str] = []
    known, lazy = contract(root / "deploy/metrics.txt")
    samples = series_names(known)
    exprs, recorded = collect(root, errors)
    promtool_parse(exprs, errors)

    used_families: set[str] = set()
    for where, e in exprs:
        try:
            names = selected_metrics(e)
        except Exception as ex:  # promtool already reported the parse error
            errors.append(f"{where}: promql-parser: {ex}")
            continue
        for n in names:
            if n in samples:
                used_families.add(samples[n])
            elif n in recorded or n in ALWAYS_KNOWN:
                pass
            else:
                errors.append(f"{where}: metric {n!r} is neither in deploy/metrics.txt nor a recording rule")

    urls = [u for u in re.split(r"[\s,]+", os.environ.get("TE_METRICS_URLS", "")) if u]
    if urls:
        types: dict[str, str] = {}
        exported = live_names(urls, errors, types)
        errors.extend(convention_errors(types))
        for family in sorted(used_families):
            if family not in exported and not any(family + s in exported for s in HISTOGRAM_SUFFIXES):
                if family in lazy:
                    print(f"promql: note: {family} (lazy: label values not known up front) has no series yet", file=sys.stderr)
                else:
                    errors.append(f"live: {family} is used by dashboards/rules but no service in TE_METRICS_URLS exports it")
        unused_live = sorted(n for n in exported if n.startswith(("te_", "canary_")) and n not in samples)
        for n in unused_live:
            print(f"promql: note: live metric {n} is not in deploy/metrics.txt", file=sys.stderr)

    for e in errors:
        print(f"promql: {e}", file=sys.stderr)
    if errors:
        return 1
    unused = sorted(set(known) - used_families)
    print(f"promql: {len(exprs)} expressions parse and use known metrics"
          + (f"; verified against {len(urls)} live /metrics endpoints" if urls else "; live check skipped (TE_METRICS_URLS unset)")
          + (f"; contract metrics not charted or alerted on: {', '.join(unused)}" if unused else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))
