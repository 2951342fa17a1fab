#!/bin/sh
# First start of the postgres container (docker-entrypoint-initdb.d): the login roles of DESIGN.md's
# least privilege. Their grants come from migration 4 (audit-writer applies it as the owner `te`).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v writer="$POSTGRES_AUDIT_WRITER_PASSWORD" -v reader="$POSTGRES_READER_PASSWORD" <<'SQL'
CREATE ROLE te_audit_writer LOGIN PASSWORD :'writer';
CREATE ROLE te_reader LOGIN PASSWORD :'reader';
SQL
