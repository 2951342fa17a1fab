#!/usr/bin/env bash
# Starts every backing server locally without Docker, on private ports under .dev/, and writes .dev/env.
# Idempotent: a server that already answers is left alone. `scripts/dev-down.sh` stops what this started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEV=$ROOT/.dev
mkdir -p "$DEV/logs" "$DEV/run"

REDIS_PORT=${DEV_REDIS_PORT:-16379}
PG_PORT=${DEV_PG_PORT:-15432}
TRITON_GRPC_PORT=${DEV_TRITON_GRPC_PORT:-18001}
TRITON_HTTP_PORT=${DEV_TRITON_HTTP_PORT:-18000}
TRITON_METRICS_PORT=${DEV_TRITON_METRICS_PORT:-18002}
WITH_TRITON=${DEV_WITH_TRITON:-1}
WITH_KAFKA=${DEV_WITH_KAFKA:-1}
WITH_REDIS_CLUSTER=${DEV_REDIS_CLUSTER:-0}

log() { printf 'dev-up: %s\n' "$*" >&2; }

scripts/install-deps.sh

# --- Store users: one password per Redis ACL user and PostgreSQL role, made once (.dev/secrets) ------
REDIS_USERS=$(awk '/^user /{print $2}' deploy/redis/users.acl)
PG_ROLES="te_audit_writer te_reader"
for f in $(for u in $REDIS_USERS; do echo "redis/$u"; done) $(for r in $PG_ROLES; do echo "postgres/$r"; done); do
  mkdir -p "$DEV/secrets/redis" "$DEV/secrets/postgres"
  [ -s "$DEV/secrets/$f" ] || { od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$DEV/secrets/$f"; chmod 600 "$DEV/secrets/$f"; }
done
mkdir -p "$DEV/redis"
# The dev server: per-test key names allowed (tests share it); private test servers: the real names only.
scripts/redis-acl.sh --default on --test-keys deploy/redis/users.acl "$DEV/secrets/redis" "$DEV/redis/users.acl"
scripts/redis-acl.sh --default on deploy/redis/users.acl "$DEV/secrets/redis" "$DEV/redis/users-strict.acl"

# --- Redis ---------------------------------------------------------------------------------------
if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "redis already up on $REDIS_PORT"
  # Started before the ACL file existed (or with another one): apply the users to the running server.
  sed -e 's/^user /ACL SETUSER /' -e 's/(\([^)]*\))/"(\1)"/g' "$DEV/redis/users.acl" | redis-cli -p "$REDIS_PORT" >/dev/null
else
  mkdir -p "$DEV/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DEV/redis" --daemonize yes \
    --pidfile "$DEV/run/redis.pid" --logfile "$DEV/logs/redis.log" --save "" --appendonly yes \
    --aclfile "$DEV/redis/users.acl"
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null || { log "redis did not start (see .dev/logs/redis.log)"; exit 1; }
  log "redis up on $REDIS_PORT"
fi

# --- PostgreSQL (private cluster; runs as the unprivileged 'postgres' user when we are root) ------
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGDATA=$DEV/pg
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if "$PGBIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q 2>/dev/null; then
  log "postgres already up on $PG_PORT"
else
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDATA" "$DEV/logs"
    echo te > "$DEV/pg.pw"; [ "$(id -u)" = 0 ] && chown postgres "$DEV/pg.pw"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U te --pwfile="$DEV/pg.pw" -A scram-sha-256 >"$DEV/logs/initdb.log" 2>&1
  fi
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$DEV/logs" && touch "$DEV/logs/postgres.log" && chown postgres "$DEV/logs/postgres.log"
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$DEV/logs/postgres.log" -w \
    -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  log "postgres up on $PG_PORT"
fi
PGPASSWORD=te psql -h 127.0.0.1 -p "$PG_PORT" -U te -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='te'" | grep -q 1 \
  || PGPASSWORD=te psql -h 127.0.0.1 -p "$PG_PORT" -U te -d postgres -qc "CREATE DATABASE te"

# PostgreSQL roles (migration 4 grants them their tables): the audit writer (INSERT/SELECT only) and a reader.
for role in $PG_ROLES; do
  PGPASSWORD=te psql -h 127.0.0.1 -p "$PG_PORT" -U te -d postgres -qc "DO \$\$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$role') THEN CREATE ROLE $role; END IF;
    ALTER ROLE $role LOGIN PASSWORD '$(cat "$DEV/secrets/postgres/$role")'; END \$\$"
done

{
  echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
  echo "export POSTGRES_URL=postgres://te:te@127.0.0.1:$PG_PORT/te"
  # Each service's own store user (README "Store users"): REDIS_URL_<SERVICE>, POSTGRES_URL_<ROLE>.
  for u in $REDIS_USERS; do
    var=$(echo "${u%-reader}" | tr 'a-z-' 'A-Z_')
    echo "export REDIS_URL_$var=redis://$u:$(cat "$DEV/secrets/redis/$u")@127.0.0.1:$REDIS_PORT/0"
  done
  echo "export REDIS_ACL_FILE_STRICT=$DEV/redis/users-strict.acl"
  echo "export POSTGRES_URL_AUDIT_WRITER=postgres://te_audit_writer:$(cat "$DEV/secrets/postgres/te_audit_writer")@127.0.0.1:$PG_PORT/te"
  echo "export POSTGRES_URL_READER=postgres://te_reader:$(cat "$DEV/secrets/postgres/te_reader")@127.0.0.1:$PG_PORT/te"
  echo "export KAFKA_TOPIC=ticks"
  echo "export MODEL_NAME=trade_eligibility"
} > "$DEV/env.new"

# --- Redis Cluster (DEV_REDIS_CLUSTER=1): 3 masters + replicas; REDIS_CLUSTER_URL for the tests -----
if [ "$WITH_REDIS_CLUSTER" = 1 ]; then
  scripts/dev-redis-cluster.sh >> "$DEV/env.new"
fi

# --- Kafka: librdkafka's mock cluster hosted by our dev-broker -----------------------------------
if [ "$WITH_KAFKA" = 1 ]; then
  scripts/dev-kafka.sh >> "$DEV/env.new"
fi

# --- Triton (real server from the nvidia-pytriton wheel, CPU, Python backend) ----------------------
if [ "$WITH_TRITON" = 1 ] && [ -d deploy/triton/model_repository ]; then
  scripts/dev-triton.sh "$TRITON_GRPC_PORT" "$TRITON_HTTP_PORT" "$TRITON_METRICS_PORT"
  echo "export TRITON_URL=127.0.0.1:$TRITON_GRPC_PORT" >> "$DEV/env.new"
  echo "export TRITON_HTTP_URL=127.0.0.1:$TRITON_HTTP_PORT" >> "$DEV/env.new"
fi

mv "$DEV/env.new" "$DEV/env"
log "wrote .dev/env:"
sed 's/^/  /' "$DEV/env" >&2
