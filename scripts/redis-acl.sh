#!/bin/sh
# Renders deploy/redis/users.acl into a Redis ACL file: each user switched on with its password (stored
# as its SHA-256, so the rendered file holds no secret), plus the default user. POSIX sh + awk, so it
# also runs in the redis image (docker-compose) and in a Kubernetes init container.
#
#   redis-acl.sh [--default on|off] [--test-keys] SOURCE PASSWORD_DIR OUTPUT
#
# PASSWORD_DIR/<user> holds each user's password (a mounted secret, or .dev/secrets/redis in dev);
# PASSWORD_DIR `-`: from the environment, REDIS_PASSWORD_<USER> (upper case, `-` as `_`; compose).
# --default on: the default user keeps full access without a password (dev and tests only: the test
#   harness and redis-cli use it); off (the default): it is disabled.
# --test-keys: every key pattern also allows `test:*`, the per-test names integration tests use on
#   the shared dev server (commands stay as granted; the real names are checked on private servers).
set -eu
default=off
test_keys=0
while [ $# -gt 3 ]; do
  case "$1" in
    --default) default=$2; shift 2 ;;
    --test-keys) test_keys=1; shift ;;
    *) echo "redis-acl.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 3 ] || { echo "usage: redis-acl.sh [--default on|off] [--test-keys] SOURCE PASSWORD_DIR OUTPUT" >&2; exit 2; }
source=$1 passwords=$2 output=$3

tmp=$output.tmp.$$
: > "$tmp"
grep -E '^user ' "$source" | while read -r _ name rules; do
  if [ "$passwords" = - ]; then
    var=REDIS_PASSWORD_$(echo "$name" | tr 'a-z-' 'A-Z_')
    password=$(printenv "$var" || true)
  else
    password=$(cat "$passwords/$name" 2>/dev/null || true)
  fi
  [ -n "$password" ] || { echo "redis-acl.sh: no password for $name" >&2; rm -f "$tmp"; exit 1; }
  hash=$(printf '%s' "$password" | tr -d '\n' | sha256sum | cut -d' ' -f1)
  if [ "$test_keys" = 1 ]; then
    rules=$(printf '%s\n' "$rules" | awk '{ gsub(/~[^ )]+/, "& ~test:*"); print }')
  fi
  printf 'user %s reset on #%s %s\n' "$name" "$hash" "$rules" >> "$tmp"
done
[ -f "$tmp" ] || exit 1
if [ "$default" = on ]; then
  echo 'user default reset on nopass ~* &* +@all' >> "$tmp"
else
  echo 'user default reset off' >> "$tmp"
fi
mv "$tmp" "$output"
