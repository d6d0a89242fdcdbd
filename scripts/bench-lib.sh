# Helpers the benchmark scripts share; sourced, not run.

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ms() { local us=${EPOCHREALTIME//[!0-9]/}; echo $((us / 1000)); }

# median: of the integers on stdin (the mean of the middle two for an even count).
median() {
  sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "n/a"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%d\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# goal VALUE OP LIMIT (OP: lt, le, ge, eq): met, missed, or n/a without a value.
goal() {
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
    ok = (op == "lt") ? v + 0 < l + 0 : (op == "le") ? v + 0 <= l + 0 : (op == "ge") ? v + 0 >= l + 0 : v == l
    print (v == "n/a" || v == "") ? "n/a" : ok ? "met" : "missed" }'
}

# Commits must not depend on (or be refused by) the caller's git identity or signing setup.
git_in() {
  git -C "$1" -c user.name="gantry bench" -c user.email=bench@gantry.invalid \
    -c commit.gpgsign=false "${@:2}"
}

# stop_daemon PID LIMIT: SIGTERM, then SIGKILL when it is still there after LIMIT
# seconds (for a cleanup: a benchmark that times the stop does its own).
stop_daemon() {
  kill -0 "$1" 2>/dev/null || return 0
  log "cleanup: stopping the daemon (pid $1)"
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq $(($2 * 10))); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# free_port: a TCP port nothing listens on at 127.0.0.1, below Docker's ephemeral range.
free_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 12000))
    if ! timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

# delete_pushed REPOSITORY: delete every manifest of one of our repositories from the
# registry at $REGISTRY (it runs with deletes enabled; the blobs go at its next
# garbage collection).
delete_pushed() {
  local path=${1#"$REGISTRY"/} tags tag digest
  tags=$(curl -s -m 5 --noproxy '*' "http://$REGISTRY/v2/$path/tags/list" |
    tr -d '[]{}"' | sed -n 's/.*tags://p' | tr ',' ' ') || return 0
  for tag in $tags; do
    digest=$(curl -s -m 5 --noproxy '*' -I \
      -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      "http://$REGISTRY/v2/$path/manifests/$tag" |
      tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p') || continue
    [ -z "$digest" ] ||
      curl -s -m 5 --noproxy '*' -o /dev/null -X DELETE "http://$REGISTRY/v2/$path/manifests/$digest" ||
      true
  done
}

# use_test_env [ARGUMENTS...]: starts the test environment (`scripts/test-env.sh
# ARGUMENTS...`) and reads its env file; sets STATE (its directory) and REGISTRY.
use_test_env() {
  bash scripts/test-env.sh "$@" >/dev/null
  STATE="${GANTRY_TEST_ENV_DIR:-/var/lib/gantry-test-env}"
  # shellcheck source=/dev/null
  source "$STATE/env"
  REGISTRY="${GANTRY_TEST_REGISTRY:-127.0.0.1:5115}"
}

# use_gantry: sets GANTRY to GANTRY_BIN, or to a release build of gantry (cargo
# rebuilds only when a source is newer than what it built last).
use_gantry() {
  if [ -n "${GANTRY_BIN:-}" ]; then
    GANTRY=$GANTRY_BIN
  else
    log "cargo build --release"
    cargo build --release --quiet --bin gantry
    GANTRY="$ROOT/target/release/gantry"
  fi
  [ -x "$GANTRY" ] || die "no gantry binary at $GANTRY"
}
