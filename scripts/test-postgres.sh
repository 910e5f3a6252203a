#!/usr/bin/env bash
# Make sure a throwaway PostgreSQL server for the test suite runs on 127.0.0.1, and print its URL.
# Uses Debian's postgresql packages (apt-get install -y postgresql). Prints nothing and exits 0 when they are missing.
# `test-postgres.sh --stop` stops the server again if this script started it (`make test` does, after its passes);
# a server that was already running when the script was first called is left alone.
set -euo pipefail
PORT="${CURATE_TEST_PG_PORT:-55432}"
DATA="${CURATE_TEST_PG_DATA:-${TMPDIR:-/tmp}/curate-test-pg}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
[ -n "$BIN" ] && [ -x "$BIN/initdb" ] || exit 0
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "${1:-}" = "--stop" ]; then
  if [ -f "$DATA/started-by-test-postgres" ] && as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    rm -f "$DATA/started-by-test-postgres"
  fi
  exit 0
fi
if ! as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  if [ ! -f "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
  fi
  as_pg "$BIN/pg_ctl" -D "$DATA" -o "-h 127.0.0.1 -p $PORT -k $DATA -c fsync=off -c max_connections=200" \
    -l "$DATA/server.log" -w start >/dev/null
  as_pg touch "$DATA/started-by-test-postgres"
fi
as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='curate_test'" | grep -q 1 \
  || as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres curate_test
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/curate_test"
