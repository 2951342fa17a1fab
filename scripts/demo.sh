#!/usr/bin/env bash
# make demo: the whole pipeline on the shared Binance recordings, locally, without Docker.
#   scripts/demo.sh            release build, all recordings at --speed ${DEMO_SPEED:-20}, live summary, report
#   scripts/demo.sh --short    a few seconds of one recording, debug binaries, no live UI; exits non-zero
#                              unless every stage produced output, the report agrees with Redis and PostgreSQL
#                              and every metric name in deploy/ (dashboards, alerts, adapter) is exported live
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHORT=0
[ "${1:-}" = "--short" ] && SHORT=1
DATA=${DEMO_DATA:-$ROOT/../shared/data/binance}
[ -d "$DATA" ] || DATA=/work/shared/data/binance  # a worktree beside the shared checkout
DEV=$ROOT/.dev
LOGS=$DEV/logs
mkdir -p "$LOGS" "$DEV/run"
say() { printf '\033[1m%s\033[0m\n' "$*" >&2; }
[ -t 1 ] || say() { printf '%s\n' "$*" >&2; }

scripts/install-deps.sh
if [ $SHORT = 1 ]; then
  BIN=${TE_BIN_DIR:-$(swift build --show-bin-path)}
  [ -x "$BIN/gateway" ] || swift build
else
  say "building (release)…"
  scripts/build-release.sh 2>&1 | tail -n 3
  BIN=$(swift build -c release --show-bin-path)
fi

# Start the local servers unless they are already up; remember to stop only what we started.
STARTED_SERVERS=0
if [ ! -f "$DEV/env" ] || ! redis-cli -p "${DEV_REDIS_PORT:-16379}" ping >/dev/null 2>&1; then STARTED_SERVERS=1; fi
scripts/dev-up.sh
set -a; source "$DEV/env"; set +a

# The demo's Redis is a server of its own (DEMO_REDIS_PORT, default 16390), started empty with the strict
# store users (deploy/redis/users.acl: real key names only, as in production) and stopped at the end: each
# service runs as its own ACL user (REDIS_URL_<SERVICE> of .dev/env, pointed at this server), on db 0 — the
# only database a Redis Cluster has and the only one the users may SELECT. Nothing on the shared dev Redis
# (which tests use, with per-test `test:*` names) is read, flushed or deleted. PostgreSQL: a database of the
# demo's own (DEMO_PG_DB, default te_demo, dropped and created), written by audit-writer as
# te_audit_writer and read by `te` as te_reader. Kafka: a topic per run.
RUN_ID=$(date +%s)
DEMO_REDIS_PORT=${DEMO_REDIS_PORT:-16390}
if redis-cli -p "$DEMO_REDIS_PORT" ping >/dev/null 2>&1; then
  echo "demo: port $DEMO_REDIS_PORT is taken (another demo?); set DEMO_REDIS_PORT" >&2; exit 1
fi
redis-server --port "$DEMO_REDIS_PORT" --bind 127.0.0.1 --dir "$DEV/run" --daemonize yes --save "" --appendonly no \
  --pidfile "$DEV/run/demo-redis-$DEMO_REDIS_PORT.pid" --logfile "$LOGS/demo-redis.log" --aclfile "$REDIS_ACL_FILE_STRICT"
for _ in $(seq 50); do redis-cli -p "$DEMO_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
# A service's own user on the demo's server: REDIS_URL_<SERVICE> with the host and port replaced.
redis_url() { local v=REDIS_URL_$1; printf '%s' "${!v%@*}@127.0.0.1:$DEMO_REDIS_PORT/0"; }
REDIS_URL=$(redis_url TE)  # `te` reads as te-reader
export REDIS_URL
DEMO_PG_DB=${DEMO_PG_DB:-te_demo}
PG_BASE=${POSTGRES_URL%/*}
psql "$PG_BASE/postgres" -qc "DROP DATABASE IF EXISTS $DEMO_PG_DB WITH (FORCE)" -c "CREATE DATABASE $DEMO_PG_DB" >/dev/null
OWNER_URL=$PG_BASE/$DEMO_PG_DB
export POSTGRES_URL=${POSTGRES_URL_READER%/*}/$DEMO_PG_DB
export KAFKA_TOPIC=demo-ticks-$RUN_ID
export STRATEGIES_FILE=${STRATEGIES_FILE:-$ROOT/deploy/strategies/default.json}
export HTTP_PORT=${DEMO_HTTP_PORT:-18080}
export LOG_LEVEL=${LOG_LEVEL:-info}
export CONSUMER_NAME=demo-$RUN_ID
export FEATURE_TTL_SEC=${FEATURE_TTL_SEC:-600}
export METRICS_PORT=  # each service uses its default port
GATEWAY=http://127.0.0.1:$HTTP_PORT

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  redis-cli -p "$DEMO_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  if [ $STARTED_SERVERS = 1 ]; then scripts/dev-down.sh; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() {
  local name=$1; shift
  env -u METRICS_PORT "$@" "$BIN/$name" >>"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
}
say "starting services (logs in .dev/logs/)…"
start ingest REDIS_URL="$(redis_url INGEST)"
start feature-pipeline REDIS_URL="$(redis_url FEATURE_PIPELINE)"
start strategy-engine REDIS_URL="$(redis_url STRATEGY_ENGINE)"
start opportunity-aggregator REDIS_URL="$(redis_url OPPORTUNITY_AGGREGATOR)"
start outcome-tracker REDIS_URL="$(redis_url OUTCOME_TRACKER)" \
  MODEL_REFERENCE_DIR="$ROOT/deploy/triton/model_repository/trade_eligibility"
start audit-writer REDIS_URL="$(redis_url AUDIT_WRITER)" POSTGRES_URL="${POSTGRES_URL_AUDIT_WRITER%/*}/$DEMO_PG_DB" \
  POSTGRES_MIGRATE_URL="$OWNER_URL"
start gateway REDIS_URL="$(redis_url GATEWAY)"
for _ in $(seq 100); do curl -fs "$GATEWAY/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

if [ $SHORT = 1 ]; then
  FILES=("$DATA/spot_btcusdt_20240808.gz"); REPLAY_ARGS=(--speed max --limit "${DEMO_LIMIT:-3000}")
else
  FILES=("$DATA"/*.gz); REPLAY_ARGS=(--speed "${DEMO_SPEED:-20}")
fi
REPLAY_PIDS=()
for f in "${FILES[@]}"; do
  "$BIN/te" replay "$f" "${REPLAY_ARGS[@]}" >>"$LOGS/replay.log" 2>&1 &
  REPLAY_PIDS+=($!)
done

rcli() { redis-cli -p "$DEMO_REDIS_PORT" "$@"; }  # the demo server's default user (dev only)
xlen() { rcli XLEN "$1" 2>/dev/null || echo 0; }
lag() { rcli XINFO GROUPS "$1" 2>/dev/null | awk -v g="$2" '$0==g{f=1} f&&$0=="lag"{getline; print; exit}'; }
SYMBOLS=(BTCUSDT ETHUSDT BTCUSDT-PERP)
: > "$DEV/demo-latency.txt"; : > "$DEV/demo-gateway-latency.txt"
# The demo's decisions go through one persistent keep-alive client (scripts/score-client.py): one TCP
# connection for the whole demo, so the latency is a decision's round trip, not a connection set-up (and a
# curl process) per call.
coproc SCORER { exec python3 "$ROOT/scripts/score-client.py" "$HTTP_PORT"; }
PIDS+=("$SCORER_PID")
LAST_DECISION=
# Scores SYMBOL; the answer goes to LAST_DECISION, the client's round trip (µs) to demo-latency.txt and
# the gateway's own decision time (the response's latency_us) to demo-gateway-latency.txt.
score_once() {
  local round_trip gateway_us body
  [ -n "${SCORER[1]:-}" ] || return 0  # the client exited (its errors are on the demo's stderr)
  printf '%s %s\n' "$1" "${DEMO_FRESHNESS_MS:-2000}" >&"${SCORER[1]}"
  IFS=$'\t' read -r -t 15 round_trip gateway_us body <&"${SCORER[0]}" || return 0
  LAST_DECISION=$body
  [ "$round_trip" = - ] || echo "$round_trip" >> "$DEV/demo-latency.txt"
  [ "$gateway_us" = - ] || echo "$gateway_us" >> "$DEV/demo-gateway-latency.txt"
}

# p50/p99 (ms) and count of the demo's own gateway calls so far, from FILE (µs per line).
latency_summary() {
  sort -n "$1" | awk '{a[NR]=$1} END{if(NR==0){print "-", "-", 0; exit} i50=int(0.5*NR); if(i50<1)i50=1; i99=int(0.99*NR+0.999); if(i99>NR)i99=NR; printf "%.2f %.2f %d\n", a[i50]/1000, a[i99]/1000, NR}'
}
running=1
while [ $running = 1 ]; do
  running=0
  for p in "${REPLAY_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
  for sym in "${SYMBOLS[@]}"; do score_once "$sym"; done
  last=$LAST_DECISION
  if [ $SHORT = 0 ]; then
    read -r gw50 gw99 gwn < <(latency_summary "$DEV/demo-latency.txt")
    read -r in50 in99 _ < <(latency_summary "$DEV/demo-gateway-latency.txt")
    printf '\033[2J\033[H'
    say "Trade Eligibility demo — replaying ${#FILES[@]} Binance recording(s) into Kafka topic $KAFKA_TOPIC"
    # The stages' view is `te top`'s (one frame, rates over the second it waits).
    "$BIN/te" top --once --interval 1 --targets "gateway=127.0.0.1:$HTTP_PORT" 2>/dev/null || true
    echo
    echo "gateway decisions by this demo: $gwn, round trip p50 $gw50 ms, p99 $gw99 ms (keep-alive client); in the gateway p50 $in50 ms, p99 $in99 ms"
    echo "last gateway decision: $last"
    echo; echo "look next: gateway $GATEWAY/v1/score · metrics $GATEWAY/metrics, :9101-9106/metrics"
    echo "           REDIS_URL=\$REDIS_URL_TE (port $DEMO_REDIS_PORT) $BIN/te streams · psql $OWNER_URL -c 'select source,count(*) from decisions group by 1'"
    echo "           Ctrl-C stops the demo"
  fi
  [ $SHORT = 0 ] || sleep 1  # the full demo's frame already waited its second in te top
done

say "replay finished; draining the pipeline…"
if [ $SHORT = 1 ]; then
  # The short replay is over in a blink: score against the features it left behind (their age is
  # measured from when they were written, so allow a minute).
  prev=-1
  for _ in $(seq 60); do now=$(xlen te:features); [ "$now" = "$prev" ] && [ "$now" -gt 0 ] && break; prev=$now; sleep 1; done
  for _ in 1 2 3 4 5; do DEMO_FRESHNESS_MS=60000 score_once BTCUSDT >/dev/null; done
fi
for _ in $(seq 60); do
  pending=0
  for sg in "te:ticks feature-pipeline" "te:features strategy-engine" "te:signals opportunity-aggregator" "te:audit audit-writer"; do
    set -- $sg; l=$(lag "$1" "$2"); [ "${l:-0}" != 0 ] && pending=1
  done
  [ $pending = 0 ] && break
  sleep 1
done
sleep 2

# Every metric name the dashboards, alerts and autoscaling rules use must be exported by a running service.
live_metrics=0
if [ $SHORT = 1 ]; then
  # ingest 9101, feature-pipeline 9102, strategy-engine 9103, opportunity-aggregator 9104, outcome-tracker 9105,
  # audit-writer 9106;
  # the gateway serves /metrics on its API port.
  urls="$GATEWAY/metrics"
  for port in 9101 9102 9103 9104 9105 9106; do urls="$urls http://127.0.0.1:$port/metrics"; done
  say "checking dashboard/alert metric names against live /metrics: $urls"
  TE_METRICS_URLS=$urls scripts/check-deploy.sh --promql-only || live_metrics=1
fi

ticks=$(xlen te:ticks); feat=$(xlen te:features); sig=$(xlen te:signals); opp=$(xlen te:opportunities)
audit=$(xlen te:audit); dlq=$(xlen te:dlq)
rows=$(psql "$OWNER_URL" -tAc "SELECT count(*) FROM decisions")
outcome_rows=$(psql "$OWNER_URL" -tAc "SELECT count(*) FROM outcomes")
uniq_opp=$(rcli XRANGE te:opportunities - + | awk 'p{print; p=0} $0=="id"{p=1}' | sort -u | wc -l)
percentiles_us() { sort -n "$1" | awk '{a[NR]=$1} END{if(NR==0){print 0,0,0; exit} i50=int(0.5*NR); if(i50<1)i50=1; i99=int(0.99*NR+0.999); if(i99>NR)i99=NR; print a[i50], a[i99], NR}'; }
read -r p50 p99 n < <(percentiles_us "$DEV/demo-latency.txt")
read -r in_p50 in_p99 _ < <(percentiles_us "$DEV/demo-gateway-latency.txt")
echo
say "Report"
printf '  %-34s %s\n' "ticks in te:ticks" "$ticks" "feature snapshots" "$feat" "signals" "$sig" \
  "opportunity emissions" "$opp" "distinct opportunities" "$uniq_opp" "dead letters" "$dlq" \
  "audit records on te:audit" "$audit" "rows in decisions" "$rows" \
  "rows in outcomes (horizon passed)" "$outcome_rows"
echo "  decisions by source:"
psql "$OWNER_URL" -tAc "SELECT source, decision, count(*) FROM decisions GROUP BY 1,2 ORDER BY 1,2" | sed 's/^/    /'
echo "  model quality (te model: labelled outcomes per version; edge = Brier below the base rate's):"
"$BIN/te" model 2>&1 | sed 's/^/    /'
printf '  gateway calls by the demo: %s, round trip p50 %s µs, p99 %s µs (one keep-alive connection, Python client)\n' "$n" "$p50" "$p99"
printf '  of which in the gateway (response latency_us): p50 %s µs, p99 %s µs\n' "$in_p50" "$in_p99"

if [ $SHORT = 1 ]; then
  fail=0
  for pair in "ticks:$ticks" "features:$feat" "signals:$sig" "opportunities:$opp" "audit:$audit" "decisions:$rows"; do
    [ "${pair#*:}" -gt 0 ] || { echo "demo check: no $pair output" >&2; fail=1; }
  done
  model=$(psql "$OWNER_URL" -tAc "SELECT count(*) FROM decisions WHERE source = 'model'")
  [ "$model" -gt 0 ] || { echo "demo check: no decision came from the model" >&2; fail=1; }
  [ "$rows" = "$audit" ] || { echo "demo check: decisions rows ($rows) != te:audit entries ($audit)" >&2; fail=1; }
  [ $live_metrics = 0 ] || { echo "demo check: dashboards/alerts use metric names no running service exports (above)" >&2; fail=1; }
  exit $fail
fi
