#!/usr/bin/env bash
# `make up`: makes sure .env (beside docker-compose.yml, git-ignored) holds every password and key the
# compose stack needs, generating each missing one once (random hex), so compose carries no default
# password. Existing values are kept. The Redis users are those of deploy/redis/users.acl.
set -euo pipefail
cd "$(dirname "$0")/.."
touch .env
chmod 600 .env
vars="POSTGRES_PASSWORD POSTGRES_AUDIT_WRITER_PASSWORD POSTGRES_READER_PASSWORD GATEWAY_API_KEY"
for user in $(awk '/^user /{print $2}' deploy/redis/users.acl); do
  vars="$vars REDIS_PASSWORD_$(echo "$user" | tr 'a-z-' 'A-Z_')"
done
for var in $vars; do
  if ! grep -q "^$var=" .env; then
    echo "$var=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" >> .env
    echo "compose-env: generated $var into .env" >&2
  fi
done
