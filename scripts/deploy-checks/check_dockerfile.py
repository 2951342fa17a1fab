#!/usr/bin/env python3
"""Checks deploy/Dockerfile against the repository (hadolint checks the Dockerfile itself).

Parses it with Docker's own parser (PyPI `dockerfile`, BuildKit's Go parser) and asserts:
- it is multi-stage, the build stage on an official swift bookworm image, the runtime on debian:bookworm-slim;
- it builds every executable product of Package.swift except the dev-only ones;
- every runtime library the build stage links has its Debian runtime package in the runtime stage
  (from `apt-cache show`: each -dev package must have one of its direct dependencies installed);
- every COPY source exists and is not excluded by .dockerignore;
- the final stage runs as a numeric non-root user, with the entrypoint script.

Usage: check_dockerfile.py REPO_ROOT
"""
from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path

import dockerfile

DEV_ONLY_PRODUCTS = {"dev-broker"}


def apt_packages(run: str) -> list[str]:
    m = re.search(r"apt-get install ([^&;]*)", run)
    return [w for w in shlex.split(m.group(1)) if not w.startswith("-")] if m else []


def dockerignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(pre, pat) or fnmatch.fnmatch(pre, pat.replace("**/", "")) for pre in prefixes):
            ignored = not neg
    return ignored


def main(root: Path) -> int:
    errors: list[str] = []
    cmds = dockerfile.parse_file(str(root / "deploy/Dockerfile"))
    args = {}
    for c in cmds:
        if c.cmd.upper() == "ARG" and "=" in c.value[0]:
            k, v = c.value[0].split("=", 1)
            args[k] = v.strip('"')
    stages: list[list] = []
    for c in cmds:
        if c.cmd.upper() == "FROM":
            stages.append([c])
        elif stages:
            stages[-1].append(c)
    if len(stages) < 2:
        errors.append("Dockerfile is not multi-stage")
        stages += [[]] * (2 - len(stages))
    base = lambda st: re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), st[0].value[0]) if st else ""
    if not re.fullmatch(r"swift:6\.\d+(\.\d+)?-bookworm", base(stages[0])):
        errors.append(f"build stage base {base(stages[0])!r} is not an official swift:6.x-bookworm image")
    if base(stages[-1]) != "debian:bookworm-slim":
        errors.append(f"runtime stage base {base(stages[-1])!r} is not debian:bookworm-slim")

    products = set(re.findall(r'\.executable\(\s*name:\s*"([^"]+)"', (root / "Package.swift").read_text()))
    built = set(args.get("PRODUCTS", "").split())
    if products - DEV_ONLY_PRODUCTS - built:
        errors.append(f"Dockerfile does not build {sorted(products - DEV_ONLY_PRODUCTS - built)}")
    if built - products:
        errors.append(f"Dockerfile builds products Package.swift does not declare: {sorted(built - products)}")

    build_pkgs = [p for c in stages[0] if c.cmd.upper() == "RUN" for p in apt_packages(c.value[0])]
    runtime_pkgs = {p for c in stages[-1] if c.cmd.upper() == "RUN" for p in apt_packages(c.value[0])}
    for dev in (p for p in build_pkgs if p.endswith("-dev")):
        r = subprocess.run(["apt-cache", "show", "--no-all-versions", dev], capture_output=True, text=True)
        deps_line = next((l for l in r.stdout.splitlines() if l.startswith("Depends:")), None)
        if r.returncode != 0 or deps_line is None:
            errors.append(f"apt-cache knows no package {dev} (run apt-get update?)")
            continue
        deps = {d.strip().split()[0].split(":")[0] for alt in deps_line[len("Depends:"):].split(",") for d in alt.split("|")}
        if not deps & runtime_pkgs:
            errors.append(f"runtime stage lacks the runtime library of {dev} (one of {sorted(deps)})")
    for needed in ("ca-certificates", "curl", "zstd", "gzip"):
        if needed not in runtime_pkgs:
            errors.append(f"runtime stage lacks {needed}")

    ignore = [l.strip() for l in (root / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    for c in cmds:
        if c.cmd.upper() in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags):
            for src in c.value[:-1]:
                if src == ".":
                    continue
                if not list(root.glob(src.rstrip("/"))):
                    errors.append(f"COPY source {src} does not exist in the repository")
                elif dockerignored(src.rstrip("/"), ignore):
                    errors.append(f"COPY source {src} is excluded by .dockerignore")

    final_user = [c.value[0] for c in stages[-1] if c.cmd.upper() == "USER"]
    if not final_user or not re.fullmatch(r"[1-9]\d*(:\d+)?", final_user[-1]):
        errors.append("runtime stage must end with a numeric non-root USER")
    entry = [c.value for c in stages[-1] if c.cmd.upper() == "ENTRYPOINT"]
    if not entry or "docker-entrypoint.sh" not in entry[-1][0]:
        errors.append("runtime stage has no ENTRYPOINT docker-entrypoint.sh")
    script = (root / "deploy/docker-entrypoint.sh").read_text()
    for p in built:
        if p not in script:
            errors.append(f"docker-entrypoint.sh does not dispatch {p}")

    for e in errors:
        print(f"dockerfile: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"dockerfile: ok ({len(stages)} stages, {len(built)} products, runtime libraries match the build stage)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))
