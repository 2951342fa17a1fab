#!/usr/bin/env python3
"""Compares two renders of one kustomization as sets of objects (order-insensitive).

Usage: compare_renders.py KUBECTL_OUTPUT PYTHON_OUTPUT
"""
import sys

import yaml


def objects(path):
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
            for d in yaml.safe_load_all(open(path)) if d}


a, b = objects(sys.argv[1]), objects(sys.argv[2])
problems = [f"only in kubectl: {k}" for k in a.keys() - b.keys()] + [f"only in fallback: {k}" for k in b.keys() - a.keys()]
problems += [f"differs: {k}" for k in a.keys() & b.keys() if a[k] != b[k]]
for p in sorted(problems):
    print(f"kustomize fallback: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
