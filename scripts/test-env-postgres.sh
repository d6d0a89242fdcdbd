# Sourced by scripts/test-env.sh: a PostgreSQL cluster of the tests' own, from Debian's
# package, on 127.0.0.1:$PG_PORT only, with a user and a database the tests own. Tests
# on PostgreSQL make a schema each inside it (see src/store/testing.rs).

PG_PORT=5433
PG_USER=gantry
PG_PASSWORD=gantry-pg-secret
PG_DATABASE=gantry_test
PG_DIR="$STATE/postgres"
PG_URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DATABASE"

# The server is started without this script's descriptor 9 (test-env.sh's lock), as
# start_bg does for the others: a server holding it would block every later run.

# The newest installed server's programs (initdb, pg_ctl).
pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] || die "PostgreSQL is not installed (the postgresql package)"
  echo "$dir"
}

as_postgres() { runuser -u postgres -- "$@"; }

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }

ensure_postgres() {
  local bin
  bin=$(pg_bin)
  # Debian's own cluster (on 5432) is not ours: it stays stopped.
  if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
    log "postgres: creating a cluster in $PG_DIR"
    rm -rf "$PG_DIR"
    mkdir -p "$PG_DIR/run"
    printf '%s\n' "$PG_PASSWORD" >"$PG_DIR/pwfile"
    chown -R postgres:postgres "$PG_DIR"
    chmod 700 "$PG_DIR"
    as_postgres "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=scram-sha-256 \
      --pwfile="$PG_DIR/pwfile" -E UTF8 --no-instructions >"$PG_DIR/initdb.log" 2>&1 ||
      die "initdb failed: $(tail -n 5 "$PG_DIR/initdb.log")"
  fi
  if ! pg_ready; then
    log "postgres: starting on 127.0.0.1:$PG_PORT"
    as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DIR/run -c max_connections=300" \
      start >/dev/null 9>&- || die "postgres did not start: $(tail -n 5 "$PG_DIR/server.log")"
  fi
  wait_for 30 "" pg_ready || die "postgres does not answer on 127.0.0.1:$PG_PORT"
  # The role and database are made once; with the password from the cluster's pwfile.
  local psql=(env PGPASSWORD="$PG_PASSWORD" psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres)
  if [ -z "$("${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" ]; then
    "${psql[@]}" -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'" || die "cannot create the postgres role"
  fi
  if [ -z "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'")" ]; then
    "${psql[@]}" -c "CREATE DATABASE $PG_DATABASE OWNER $PG_USER" || die "cannot create the postgres database"
  fi
}

stop_postgres() {
  [ -s "$PG_DIR/data/PG_VERSION" ] || return 0
  as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}
