#!/usr/bin/env python3
"""Renders a kustomization without the kustomize binary, for machines that lack kubectl.

Implements exactly the subset deploy/k8s uses: `resources` (files and kustomization directories),
`namespace`, `images` (newName/newTag), `patches` with `path` (strategic merge, including
`$patch: delete`, lists of objects merged by their Kubernetes merge key) and `configMapGenerator`
(files/literals, with `options.disableNameSuffixHash: true`). Anything else in a kustomization is
rejected, so a new feature cannot be silently ignored. scripts/check-deploy.sh compares this output
with `kubectl kustomize` wherever kubectl exists, which keeps the two in step.

Usage: render_kustomize.py DIR  (multi-document YAML on stdout)
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "images", "patches", "configMapGenerator"}
CLUSTER_SCOPED = {"Namespace", "APIService", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}
# Strategic-merge keys for the lists this repository patches (from the Kubernetes API's patchMergeKey).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "env": "name", "volumes": "name", "volumeMounts": "mountPath",
    "ports": "containerPort", "topologySpreadConstraints": "topologyKey", "imagePullSecrets": "name",
}


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def merge(base, patch, key: str | None = None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS \
            and all(isinstance(x, dict) for x in base + patch):
        mk = MERGE_KEYS[key]
        if key == "ports" and any("containerPort" not in x for x in base + patch):
            mk = "port"  # Service ports
        out = [copy.deepcopy(x) for x in base]
        added = []
        for item in patch:
            for i, existing in enumerate(out):
                if existing.get(mk) == item.get(mk):
                    out[i] = merge(existing, item)
                    break
            else:
                added.append(copy.deepcopy(item))
        return added + out  # like kustomize: items new in the patch come first
    return copy.deepcopy(patch)


def ident(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def render(directory: Path) -> list[dict]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise SystemExit(f"render_kustomize: {directory}: unsupported fields {sorted(unknown)}")
    docs: list[dict] = []
    for res in k.get("resources", []):
        p = (directory / res).resolve()
        docs.extend(render(p) if p.is_dir() else load_docs(p))
    for gen in k.get("configMapGenerator", []):
        if not (gen.get("options") or {}).get("disableNameSuffixHash"):
            raise SystemExit("render_kustomize: configMapGenerator needs options.disableNameSuffixHash: true")
        data = {}
        for f in gen.get("files", []):
            name, _, src = f.partition("=") if "=" in f else (Path(f).name, "", f)
            data[name] = (directory / src).read_text()
        for lit in gen.get("literals", []):
            name, _, value = lit.partition("=")
            data[name] = value
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        if gen.get("namespace"):
            cm["metadata"]["namespace"] = gen["namespace"]
        docs.append(cm)
    for patch_ref in k.get("patches", []):
        if set(patch_ref) != {"path"}:
            raise SystemExit(f"render_kustomize: only `patches: - path: FILE` is supported, got {patch_ref}")
        for patch in load_docs(directory / patch_ref["path"]):
            target = ident(patch)
            matches = [i for i, d in enumerate(docs) if ident(d) == target]
            if len(matches) != 1:
                raise SystemExit(f"render_kustomize: patch {patch_ref['path']} matches {len(matches)} objects {target}")
            i = matches[0]
            if patch.get("$patch") == "delete":
                del docs[i]
            else:
                docs[i] = merge(docs[i], patch)
    if "namespace" in k:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = k["namespace"]
    for img in k.get("images", []):
        for d in docs:
            pod = (d.get("spec") or {}).get("template", {}).get("spec")
            for c in (pod or {}).get("containers", []) + (pod or {}).get("initContainers", []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = img.get("newName", name) + ":" + img.get("newTag", tag or "latest")
    return docs


def main() -> int:
    docs = render(Path(sys.argv[1]))
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
