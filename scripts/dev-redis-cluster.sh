#!/usr/bin/env bash
# Starts a local Redis Cluster (redis-server's own cluster mode) for dev-up.sh: 3 masters, each with
# DEV_REDIS_CLUSTER_REPLICAS replicas (default 1: 6 nodes), on DEV_REDIS_CLUSTER_PORT and the ports after
# it (cluster bus: port + 10000). Prints the `export REDIS_CLUSTER_URL=…` line for .dev/env on stdout.
# Idempotent: nodes that answer are left alone; a node that is down is restarted from its own config
# (it rejoins the cluster from its nodes.conf); a cluster that cannot become healthy is rebuilt empty.
# Each node's pid file is .dev/run/redis-cluster-PORT.pid, so dev-down.sh stops them with the rest.
# The store users (.dev/redis/users.acl, rendered by dev-up.sh from deploy/redis/users.acl) are every
# node's ACL file, so a node restarted from its config has them, and are applied to running nodes too.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=$PWD/.dev
BASE=${DEV_REDIS_CLUSTER_PORT:-17001}
REPLICAS=${DEV_REDIS_CLUSTER_REPLICAS:-1}
MASTERS=3
NODES=$((MASTERS * (REPLICAS + 1)))
PORTS=$(seq "$BASE" $((BASE + NODES - 1)))
log() { printf 'dev-redis-cluster: %s\n' "$*" >&2; }
mkdir -p "$DEV/run" "$DEV/logs"

up() { redis-cli -p "$1" ping >/dev/null 2>&1; }
healthy() {
  local p
  for p in $PORTS; do
    redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    [ "$(redis-cli -p "$p" cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" = "$NODES" ] || return 1
  done
}
ACL_FILE=$DEV/redis/users.acl
start_node() {
  local p=$1 dir=$DEV/redis-cluster/$1
  mkdir -p "$dir"
  local acl=""
  [ -f "$ACL_FILE" ] && acl="aclfile $ACL_FILE"
  cat > "$dir/redis.conf" <<CONF
port $p
bind 127.0.0.1
dir $dir
daemonize yes
pidfile $DEV/run/redis-cluster-$p.pid
logfile $DEV/logs/redis-cluster-$p.log
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout ${DEV_REDIS_CLUSTER_NODE_TIMEOUT_MS:-3000}
cluster-replica-validity-factor 0
save ""
appendonly no
$acl
CONF
  redis-server "$dir/redis.conf"
}
wait_up() {
  local p
  for p in $PORTS; do
    for _ in $(seq 50); do up "$p" && break; sleep 0.1; done
    up "$p" || { log "node $p did not start (see .dev/logs/redis-cluster-$p.log)"; exit 1; }
  done
}

for p in $PORTS; do up "$p" || start_node "$p"; done
wait_up
if ! healthy; then
  # Nodes restarted from their nodes.conf find each other again within a few seconds.
  for _ in $(seq 30); do healthy && break; sleep 0.2; done
fi
if ! healthy; then
  log "building a fresh cluster on ports $BASE-$((BASE + NODES - 1))"
  for p in $PORTS; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  for p in $PORTS; do for _ in $(seq 50); do up "$p" || break; sleep 0.1; done; done
  rm -rf "$DEV/redis-cluster"
  for p in $PORTS; do start_node "$p"; done
  wait_up
  # shellcheck disable=SC2046
  redis-cli --cluster create $(for p in $PORTS; do printf '127.0.0.1:%s ' "$p"; done) \
    --cluster-replicas "$REPLICAS" --cluster-yes >"$DEV/logs/redis-cluster-create.log" 2>&1 \
    || { log "redis-cli --cluster create failed (see .dev/logs/redis-cluster-create.log)"; exit 1; }
  for _ in $(seq 100); do healthy && break; sleep 0.1; done
  healthy || { log "cluster did not become healthy"; exit 1; }
fi
if [ -f "$ACL_FILE" ]; then
  for p in $PORTS; do
    errors=$(sed -e 's/^user /ACL SETUSER /' -e 's/(\([^)]*\))/"(\1)"/g' "$ACL_FILE" | redis-cli -p "$p" | grep -v '^OK$' || true)
    [ -z "$errors" ] || { log "node $p refused the store users: $errors"; exit 1; }
  done
fi
log "redis cluster up on $BASE-$((BASE + NODES - 1)) ($MASTERS masters, $REPLICAS replica(s) each)"
echo "export REDIS_CLUSTER_URL=redis+cluster://$(for p in $(seq "$BASE" $((BASE + MASTERS - 1))); do printf '127.0.0.1:%s,' "$p"; done | sed 's/,$//')/0"
