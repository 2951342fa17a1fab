#!/usr/bin/env bash
# Starts the Kafka dev broker (librdkafka's mock cluster hosted by `dev-broker`) in the background and prints
# `export KAFKA_BROKERS=…` on stdout (dev-up appends it to .dev/env). Idempotent: if the broker recorded in
# .dev/run/dev-broker.pid is alive, prints its bootstrap line again. Mock brokers bind ephemeral ports, so
# the bootstrap file is the source of truth.
#   DEV_KAFKA_BROKERS (default 1), DEV_KAFKA_PARTITIONS (default 3) configure a new broker.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=$PWD/.dev
mkdir -p "$DEV/run" "$DEV/logs"
PIDFILE=$DEV/run/dev-broker.pid
BOOT=$DEV/run/kafka-bootstrap
log() { printf 'dev-kafka: %s\n' "$*" >&2; }

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && [ -s "$BOOT" ]; then
  log "dev-broker already running (pid $(cat "$PIDFILE"))"
  echo "export KAFKA_BROKERS=$(cat "$BOOT")"
  exit 0
fi

BIN_DIR=$(swift build --product dev-broker --show-bin-path 2>/dev/null)
if [ ! -x "$BIN_DIR/dev-broker" ] || [ -n "$(find Services/dev-broker Shared/TEKafka -newer "$BIN_DIR/dev-broker" -name '*.swift' 2>/dev/null | head -1)" ]; then
  log "building dev-broker"
  swift build --product dev-broker >&2
fi

rm -f "$BOOT"
nohup "$BIN_DIR/dev-broker" --brokers "${DEV_KAFKA_BROKERS:-1}" --partitions "${DEV_KAFKA_PARTITIONS:-3}" \
  --topic ticks --bootstrap-file "$BOOT" >"$DEV/logs/dev-broker.log" 2>&1 &
echo $! > "$PIDFILE"
for _ in $(seq 100); do [ -s "$BOOT" ] && break; sleep 0.1; done
[ -s "$BOOT" ] || { log "dev-broker did not start (see .dev/logs/dev-broker.log)"; exit 1; }
log "dev-broker up at $(cat "$BOOT") (pid $(cat "$PIDFILE"))"
echo "export KAFKA_BROKERS=$(cat "$BOOT")"
