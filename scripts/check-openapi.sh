#!/usr/bin/env bash
# Checks the running gateway against deploy/openapi.yaml: schemathesis (from PyPI, in .dev/venv-schemathesis)
# generates valid and invalid requests from the document, sends them to the built gateway binary running on
# the dev servers (.dev/env, from scripts/dev-up.sh) on a free port, and fails on any answer the document does
# not describe (status, content type, headers, body schema), on a 5xx, on valid input refused or invalid input
# accepted, and on a wrong method not answered 405 with Allow. `make test` runs it after the Swift tests.
# Env: TE_BIN_DIR (default: `swift build --show-bin-path`), SCHEMATHESIS_MAX_EXAMPLES (default 100 per operation; about 20 s).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.dev/venv-schemathesis
VERSION=4.32.5
log() { printf 'check-openapi: %s\n' "$*" >&2; }

if ! [ -x "$VENV/bin/st" ] || [ "$("$VENV/bin/st" --version 2>/dev/null)" != "st, version $VERSION" ]; then
  log "installing schemathesis $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$VERSION"
fi
[ -f .dev/env ] || { log ".dev/env is missing: run scripts/dev-up.sh first"; exit 1; }
set -a; source .dev/env; set +a
BIN_DIR=${TE_BIN_DIR:-$(swift build --show-bin-path)}
[ -x "$BIN_DIR/gateway" ] || { log "no gateway binary in $BIN_DIR: run swift build first"; exit 1; }

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WORK=$(mktemp -d)
# te:audit capped: nothing consumes it here. As its own Redis user (README "Store users").
REDIS_URL=${REDIS_URL_GATEWAY:?.dev/env lacks REDIS_URL_GATEWAY: rerun scripts/dev-up.sh} HTTP_PORT=$PORT HTTP_HOST=127.0.0.1 LOG_LEVEL=warning STREAM_MAXLEN=10000 "$BIN_DIR/gateway" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
cleanup() { kill "$GW_PID" 2>/dev/null; wait "$GW_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null || { log "gateway did not start:"; cat "$WORK/gateway.log" >&2; exit 1; }

log "schemathesis against the gateway on port $PORT"
# Run from the scratch directory: schemathesis keeps its example database in the working directory.
# The push streams never end, so schemathesis leaves them out; GatewayPushTests check them.
ROOT=$PWD
if ! (cd "$WORK" && timeout 170 "$ROOT/$VENV/bin/st" --no-color run "$ROOT/deploy/openapi.yaml" \
  --url "http://127.0.0.1:$PORT" --exclude-path-regex '/stream$' --checks all --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}" --workers 1 \
  --seed 18 --request-timeout 10 --report-dir "$WORK/report" >"$WORK/st.log" 2>&1); then
  cat "$WORK/st.log" >&2
  log "FAILED: the gateway gave answers deploy/openapi.yaml does not describe (above)"
  exit 1
fi
tail -n 15 "$WORK/st.log" >&2
