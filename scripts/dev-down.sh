#!/usr/bin/env bash
# Stops exactly what scripts/dev-up.sh started (pid files under .dev/run), leaving data in place.
set -uo pipefail
cd "$(dirname "$0")/.."
DEV=$PWD/.dev
[ -d "$DEV" ] || exit 0
# Process groups first (tritonserver and its Python backend stubs): TERM to the group, KILL what is left.
for pgidfile in "$DEV"/run/*.pgid; do
  [ -e "$pgidfile" ] || continue
  name=$(basename "$pgidfile" .pgid)
  pgid=$(cat "$pgidfile" 2>/dev/null || true)
  if [ -n "$pgid" ] && kill -0 -- "-$pgid" 2>/dev/null; then
    kill -TERM -- "-$pgid" && echo "dev-down: stopped $name (process group $pgid)" >&2
    for _ in $(seq 100); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  rm -f "$pgidfile"
done
for pidfile in "$DEV"/run/*.pid; do
  [ -e "$pidfile" ] || continue
  name=$(basename "$pidfile" .pid)
  [ "$name" = postmaster ] && continue
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" && echo "dev-down: stopped $name ($pid)" >&2
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
done
if [ -s "$DEV/pg/postmaster.pid" ]; then
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DEV/pg" -m fast stop >/dev/null
  else "$PGBIN/pg_ctl" -D "$DEV/pg" -m fast stop >/dev/null; fi && echo "dev-down: stopped postgres" >&2
fi
