#!/bin/sh
# First start: create the cluster, the user and the database from POSTGRES_* (as the official
# image does), with password authentication over the network. Then run the server.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  postgres -D "$PGDATA" -c listen_addresses='' &
  pid=$!
  until pg_isready -q -h /run/postgresql -U "$user" -d postgres; do sleep 0.2; done
  [ "$db" = postgres ] || psql -q -h /run/postgresql -U "$user" -d postgres -c "CREATE DATABASE \"$db\""
  kill -INT "$pid"
  wait "$pid" || true
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
