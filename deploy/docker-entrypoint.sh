#!/bin/sh
# Chooses the executable by the first argument: `docker run IMAGE gateway`, `docker run IMAGE te replay ...`.
# `exec` makes the service PID 1, so it receives SIGTERM itself and drains gracefully.
set -eu

usage() {
  cat <<'USAGE'
usage: IMAGE SERVICE [ARGS...]
services: ingest feature-pipeline strategy-engine opportunity-aggregator outcome-tracker gateway audit-writer
cli:      te <command> [ARGS...]   (te replay FILE... --speed N, te streams, te dlq, ...)
anything else is executed as given (e.g. sh).
USAGE
}

if [ "$#" -eq 0 ]; then
  usage >&2
  exit 64
fi

case "$1" in
  ingest|feature-pipeline|strategy-engine|opportunity-aggregator|outcome-tracker|gateway|audit-writer|te)
    service="$1"
    shift
    exec "/usr/local/bin/$service" "$@"
    ;;
  -h|--help|help)
    usage
    exit 0
    ;;
  *)
    exec "$@"
    ;;
esac
