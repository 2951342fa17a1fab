#!/usr/bin/env bash
# Starts a real Triton server (from the nvidia-pytriton wheel: CPU, Python backend) serving
# deploy/triton/model_repository, and waits until trade_eligibility versions 1 and 2 are READY.
# The venv holds nvidia-pytriton plus what model.py imports (deploy/triton/requirements-serve.txt: numpy, lightgbm),
# pinned; it is (re)installed whenever that file changes.
# Usage: scripts/dev-triton.sh [GRPC_PORT HTTP_PORT METRICS_PORT]   (default 18001 18000 18002)
# Idempotent: when the model already answers READY on HTTP_PORT, does nothing.
# Env: TRITON_VENV (default .dev/venv), TRITON_STATE (dir for logs/ and run/, default .dev),
#      TRITON_PID_NAME (default triton), TRITON_MODEL_REPOSITORY (default deploy/triton/model_repository) —
#      the test suite uses these to run a private server (on a tampered copy of the repository, too).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GRPC_PORT=${1:-18001}
HTTP_PORT=${2:-18000}
METRICS_PORT=${3:-18002}
VENV=${TRITON_VENV:-$ROOT/.dev/venv}
STATE=${TRITON_STATE:-$ROOT/.dev}
NAME=${TRITON_PID_NAME:-triton}
REPO=${TRITON_MODEL_REPOSITORY:-$ROOT/deploy/triton/model_repository}
PYTRITON=nvidia-pytriton==0.7.0
REQUIREMENTS=$ROOT/deploy/triton/requirements-serve.txt
MODEL=trade_eligibility
log() { printf 'dev-triton: %s\n' "$*" >&2; }

model_ready() {
  for v in 1 2; do
    curl -fs -o /dev/null "http://127.0.0.1:$HTTP_PORT/v2/models/$MODEL/versions/$v/ready" || return 1
  done
}

if model_ready; then
  log "triton already serving $MODEL 1,2 on grpc $GRPC_PORT / http $HTTP_PORT"
  exit 0
fi

mkdir -p "$STATE/logs" "$STATE/run"
if ! [ -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
fi
# The stamp is the requirements file the venv was installed from; `python -m pip` installs into this venv even
# when it is a copy of another one (a copied venv's pip script still names the original interpreter).
if ! cmp -s "$REQUIREMENTS" "$VENV/.requirements-serve" || ! "$VENV/bin/python" -c 'import pytriton' 2>/dev/null; then
  log "installing $PYTRITON and $(grep -v '^#' "$REQUIREMENTS" | tr '\n' ' ')into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$PYTRITON" -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/.requirements-serve"
fi
PYVER=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
SITE=$VENV/lib/python$PYVER/site-packages
TS=$SITE/pytriton/tritonserver
# The wheel ships the Python backend stub per interpreter version; the backend expects it beside libtriton_python.so.
if ! [ -x "$TS/backends/python/triton_python_backend_stub" ]; then
  cp "$TS/python_backend_stubs/$PYVER/triton_python_backend_stub" "$TS/backends/python/"
fi

PIDFILE=$STATE/run/$NAME.pid
# tritonserver leads a process group of its own (setsid): its Python backend stubs are in it, so
# dev-down.sh and the tests stop the whole group (signalling the server alone leaves the stubs running).
PGIDFILE=$STATE/run/$NAME.pgid
if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  log "triton pid $(cat "$PIDFILE") is running but the model is not ready yet; waiting"
else
  # No job control in this script, so the background child is no group leader and setsid(1) runs
  # tritonserver in that same process (no fork): $! is the server's pid, its session id and its pgid.
  LD_LIBRARY_PATH="$SITE/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PATH="$VENV/bin:$PATH" \
    setsid "$TS/bin/tritonserver" --model-repository="$REPO" --backend-directory="$TS/backends" \
      --model-control-mode=none --grpc-port="$GRPC_PORT" --http-port="$HTTP_PORT" --metrics-port="$METRICS_PORT" \
      --log-verbose=0 --exit-on-error=true >"$STATE/logs/$NAME.log" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  echo $! > "$PGIDFILE"
  log "started tritonserver pid $(cat "$PIDFILE"), process group $(cat "$PGIDFILE") (log $STATE/logs/$NAME.log)"
fi

for _ in $(seq 600); do
  if model_ready; then
    log "triton ready: $MODEL 1,2 on grpc $GRPC_PORT / http $HTTP_PORT"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "tritonserver exited; last log lines:"; tail -20 "$STATE/logs/$NAME.log" >&2; exit 1
  fi
  sleep 0.2
done
log "timed out waiting for $MODEL to be ready (see $STATE/logs/$NAME.log)"
exit 1
