#!/usr/bin/env bash
# Benchmark (not a test): webhook intake figures for the README.
#   `gantry serve` on a loopback port takes BENCH_DELIVERIES signed generic deliveries
#   (X-Gantry-Signature-256, a unique X-Gantry-Delivery each) from BENCH_CONCURRENCY
#   connections (examples/intake_bench.rs): deliveries/s and latency to the 202; then
#   every 202 must be a stored run row (queued, coalesced, running or done). With all
#   those runs stored it times GET /api/v1/runs and the dashboard home page.
# The pipeline has no `deploy:` section and the scheduler coalesces queued runs, so
# while the flood goes on the daemon builds and pushes at most a few images.
# Traffic goes to loopback only (the daemon, the local engine, the registry).
#
#   BENCH_DELIVERIES=10000   measured deliveries (after BENCH_WARMUP uncounted ones)
#   BENCH_CONCURRENCY=32     requests in flight at once (with BENCH_RATE: at most)
#   BENCH_RATE=5000          offer this many deliveries/s on a fixed schedule (an open
#                            loop; latency counts from when each was due) instead of
#                            sending each one as soon as the last is answered
#   BENCH_WARMUP=200         warm-up deliveries (stored and checked too, not timed)
#   BENCH_LOG=file           keep the daemon's log there
#   BENCH_TRACE=file         one line per measured delivery there: ms from the flood's
#                            start to its send, its latency in ms, its status (after
#                            a `# flood started at` line, to match the daemon's log)
#   BENCH_STATE=postgres     the state in the test PostgreSQL (GANTRY_TEST_POSTGRES, from
#                            scripts/test-env.sh), in a schema of its own; default SQLite
#   BENCH_REPLICAS=1         daemons sharing that state (PostgreSQL only); deliveries go
#                            to each in turn
#   GANTRY_BIN=path          use this gantry binary instead of the release build
#   BENCH_LOADGEN=path       with GANTRY_BIN: this load generator (a release build of
#                            examples/intake_bench.rs); nothing is compiled
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DELIVERIES="${BENCH_DELIVERIES:-10000}"
CONCURRENCY="${BENCH_CONCURRENCY:-32}"
WARMUP="${BENCH_WARMUP:-200}"
for pair in "BENCH_DELIVERIES=$DELIVERIES" "BENCH_CONCURRENCY=$CONCURRENCY"; do
  case "${pair#*=}" in '' | *[!0-9]* | 0) echo "bench: ${pair%%=*} must be a positive integer" >&2; exit 2 ;; esac
done
case "$WARMUP" in '' | *[!0-9]*) echo "bench: BENCH_WARMUP must be an integer" >&2; exit 2 ;; esac
RATE="${BENCH_RATE:-}"
case "$RATE" in '' ) ;; *[!0-9]* | 0) echo "bench: BENCH_RATE must be a positive integer" >&2; exit 2 ;; esac
STATE_KIND="${BENCH_STATE:-sqlite}"
REPLICAS="${BENCH_REPLICAS:-1}"
case "$STATE_KIND" in sqlite | postgres) ;; *) echo "bench: BENCH_STATE must be sqlite or postgres" >&2; exit 2 ;; esac
case "$REPLICAS" in 1 | 2 | 3 | 4) ;; *) echo "bench: BENCH_REPLICAS must be 1 to 4" >&2; exit 2 ;; esac
if [ "$REPLICAS" -gt 1 ] && [ "$STATE_KIND" != postgres ]; then
  echo "bench: several replicas need BENCH_STATE=postgres" >&2; exit 2
fi
# The goals: at least this many deliveries/s, p99 below this many ms (SQLite: issue 15;
# PostgreSQL: issue 14). With BENCH_RATE the rate to reach is the one offered.
if [ "$STATE_KIND" = sqlite ]; then GOAL_RATE=5000 GOAL_P99_MS=10; else GOAL_RATE=2000 GOAL_P99_MS=50; fi
GOAL_API_P99_MS=20
GOAL_HOME_MS=50
API_REQUESTS=200
API_TOKEN=bench-api-token
SECRET=bench-secret
# How long the daemon may take to answer /healthz, to drain its queue, to stop (s).
START_LIMIT=30
DRAIN_LIMIT=180
STOP_LIMIT=60

# The engine test-env.sh starts; the daemon's builds use it.
export DOCKER_HOST=unix:///var/run/docker.sock

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

# Everything this run creates is named after it: the pipeline (and so the image
# label gantry.pipeline) "$NAME", the image repository "$IMAGE".
NAME="intake-$$"
WORK=''
REGISTRY=''
IMAGE=''
DAEMON_PID=''
# Every daemon started (one per replica); DAEMON_PID is the first.
DAEMON_PIDS=()
SCHEMA=''

# psql_test SQL: runs SQL on the test PostgreSQL, printing bare values.
psql_test() { psql -X -q -tA -v ON_ERROR_STOP=1 -d "$GANTRY_TEST_POSTGRES" -c "$1"; }

cleanup() {
  local status=$? pid
  for pid in "${DAEMON_PIDS[@]}"; do stop_daemon "$pid" "$STOP_LIMIT"; done
  [ -z "$SCHEMA" ] || psql_test "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  if [ -n "$IMAGE" ]; then
    # Containers: none without a deploy section, but a build interrupted by the
    # cleanup may leave one of ours behind.
    local ids
    ids=$(docker ps -aq --filter "label=gantry.pipeline=$NAME" 2>/dev/null) || true
    [ -z "$ids" ] || printf '%s\n' "$ids" | xargs docker rm -f >/dev/null 2>&1 || true
    docker image ls --digests --format '{{.Repository}} {{.Tag}} {{.Digest}}' 2>/dev/null |
      while read -r repo tag digest; do
        [ "$repo" = "$IMAGE" ] || continue
        [ "$tag" = '<none>' ] || docker rmi "$repo:$tag" >/dev/null 2>&1 || true
        [ "$digest" = '<none>' ] || docker rmi "$repo@$digest" >/dev/null 2>&1 || true
      done
    delete_pushed "$IMAGE"
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# field NAME FILE: a top-level number or string of the load generator's pretty JSON.
field() { sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$2" | head -n 1; }
# status_count STATUS FILE: the measured answers with that HTTP status (0 when none).
status_count() {
  awk -v s="$1" '/^  "statuses": \{/ { on = 1; next } on && /^  \}/ { on = 0 }
    on { gsub(/[",]/, ""); if ($1 == s ":") n = $2 } END { print n + 0 }' "$2"
}
# run_states FILE: "state count" for each run state in a `gantry --json runs` answer.
run_states() {
  awk '/^    "state": / { gsub(/[",]/, "", $2); n[$2]++ } END { for (s in n) print s, n[s] }' "$1" | sort
}
# run_count FILE: the runs (top-level array entries) in a `gantry --json runs` answer.
run_count() { grep -c '^  {$' "$1" || true; }
# gantry_runs OUT: every run of the pipeline, as JSON.
gantry_runs() {
  "$GANTRY" -c "$CONFIG" --json runs "$NAME" --limit 1000000 >"$1" 2>>"$LOG" ||
    { tail -n 20 "$LOG" >&2; die "gantry runs failed"; }
}

# ------------------------------------------------------------------ setup
log "test environment"
use_test_env

LOADGEN="${BENCH_LOADGEN:-$ROOT/target/release/examples/intake_bench}"
if [ -n "${GANTRY_BIN:-}" ] && [ -n "${BENCH_LOADGEN:-}" ]; then
  log "gantry: $GANTRY_BIN; load generator: $LOADGEN (nothing built)"
  GANTRY=$GANTRY_BIN
elif [ -n "${GANTRY_BIN:-}" ]; then
  log "cargo build --release (examples/intake_bench.rs); gantry: $GANTRY_BIN"
  cargo build --release --quiet --example intake_bench
  GANTRY=$GANTRY_BIN
else
  log "cargo build --release (gantry and examples/intake_bench.rs)"
  cargo build --release --quiet --bin gantry --example intake_bench
  GANTRY="$ROOT/target/release/gantry"
fi
[ -x "$GANTRY" ] || die "no gantry binary at $GANTRY"
[ -x "$LOADGEN" ] || die "no load generator at $LOADGEN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-intake.XXXXXX")
REPO="$WORK/repo"
CONFIG="$WORK/config"
LOG="${BENCH_LOG:-$WORK/serve.log}"
: >"$LOG"
IMAGE="$REGISTRY/bench/$NAME"

mkdir -p "$REPO"
cp -R fixtures/hello/. "$REPO/"
git_in "$REPO" init -q
git_in "$REPO" symbolic-ref HEAD refs/heads/main
git_in "$REPO" add -A
git_in "$REPO" commit -q -m "bench: fixture"
COMMIT=$(git_in "$REPO" rev-parse HEAD)

mkdir -p "$CONFIG/pipelines"
# keep_runs: the scheduler prunes all but the newest keep_runs finished runs whenever a
# run ends; the check below counts every run row, so none may be pruned.
cat >"$CONFIG/gantry.yaml" <<EOF
server:
  max_builds: 1
  keep_runs: 1000000
  token: $API_TOKEN
EOF
if [ "$STATE_KIND" = postgres ]; then
  [ -n "${GANTRY_TEST_POSTGRES:-}" ] || [ ! -f /var/lib/gantry-test-env/env ] ||
    . /var/lib/gantry-test-env/env
  [ -n "${GANTRY_TEST_POSTGRES:-}" ] || die "BENCH_STATE=postgres needs GANTRY_TEST_POSTGRES (scripts/test-env.sh)"
  SCHEMA="bench_intake_$$"
  psql_test "CREATE SCHEMA $SCHEMA" >/dev/null || die "cannot create a schema in the test PostgreSQL"
  printf 'state: "%s?options=-c%%20search_path%%3D%s${BENCH_PG_OPTIONS:-}"\n' "$GANTRY_TEST_POSTGRES" "$SCHEMA" >>"$CONFIG/gantry.yaml"
fi
cat >"$CONFIG/pipelines/$NAME.yaml" <<EOF
source:
  repo: $REPO
  branch: main
  webhook: { secret: $SECRET }
image:
  repository: $IMAGE
  tags: ["{{ commit.short }}"]
EOF
"$GANTRY" -c "$CONFIG" validate >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "the bench config does not validate"; }

# ------------------------------------------------------------------ daemon
URLS=()
for replica in $(seq "$REPLICAS"); do
  port=$(free_port)
  log "gantry serve on 127.0.0.1:$port (pipeline $NAME, state $STATE_KIND, replica $replica of $REPLICAS)"
  GANTRY_LOG="${GANTRY_LOG:-warn}" "$GANTRY" -c "$CONFIG" serve --listen "127.0.0.1:$port" >>"$LOG" 2>&1 &
  pid=$!
  DAEMON_PIDS+=("$pid")
  deadline=$(($(now_ms) + START_LIMIT * 1000))
  until curl -s -f -m 1 --noproxy '*' "http://127.0.0.1:$port/healthz" 2>/dev/null | grep -q '"status":"ok"'; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$LOG" >&2; die "gantry serve exited"; }
    [ "$(now_ms)" -lt "$deadline" ] || { tail -n 20 "$LOG" >&2; die "gantry serve did not answer /healthz in ${START_LIMIT}s"; }
    sleep 0.1
  done
  URLS+=(--url "http://127.0.0.1:$port/hooks/$NAME")
  [ -n "$DAEMON_PID" ] || { DAEMON_PID=$pid; PORT=$port; }
done
# cpu_ticks: user + system ticks of every daemon.
cpu_ticks() { local pid sum=0; for pid in "${DAEMON_PIDS[@]}"; do sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done; echo "$sum"; }
DAEMON_RSS_START=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DAEMON_PID/status" 2>/dev/null || echo 0)

# ------------------------------------------------------------------ flood
log "$WARMUP warm-up + $DELIVERIES measured deliveries at concurrency $CONCURRENCY"
RESULT="$WORK/result.json"
CPU_BEFORE=$(cpu_ticks)
loadgen_status=0
TRACE_ARGS=()
[ -z "${BENCH_TRACE:-}" ] || TRACE_ARGS=(--trace "$BENCH_TRACE")
[ -z "$RATE" ] || TRACE_ARGS+=(--rate "$RATE")
"$LOADGEN" "${URLS[@]}" --secret "$SECRET" --commit "$COMMIT" \
  --deliveries "$DELIVERIES" --concurrency "$CONCURRENCY" --warmup "$WARMUP" \
  --timeout 10s "${TRACE_ARGS[@]}" >"$RESULT" 2>"$WORK/loadgen.err" || loadgen_status=$?
CPU_AFTER=$(cpu_ticks)
DAEMON_RSS_END=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DAEMON_PID/status" 2>/dev/null || echo 0)
[ -s "$RESULT" ] || { cat "$WORK/loadgen.err" >&2; die "the load generator printed nothing (exit $loadgen_status)"; }
cat "$WORK/loadgen.err" >&2

per_second=$(field per_second "$RESULT")
seconds=$(field seconds "$RESULT")
p50=$(field p50_ms "$RESULT")
p90=$(field p90_ms "$RESULT")
p99=$(field p99_ms "$RESULT")
max=$(field max_ms "$RESULT")
mean=$(field mean_ms "$RESULT")
errors=$(field errors "$RESULT")
distinct_runs=$(field distinct_runs "$RESULT")
accepted=$(status_count 202 "$RESULT")
accepted_total=$(field accepted_total "$RESULT")
statuses=$(awk '/^  "statuses": \{/ { on = 1; next } on && /^  \}/ { on = 0 } on { gsub(/[",]/, ""); printf "%s%s %s", sep, $1, $2; sep = ", " }' "$RESULT")
# The daemon's CPU during warm-up + flood, in seconds of CPU per wall second (2 = both cores).
ticks=$(getconf CLK_TCK)
daemon_cpu=$(awk -v a="$CPU_BEFORE" -v b="$CPU_AFTER" -v t="$ticks" 'BEGIN { printf "%.1f", (b - a) / t }')

# ------------------------------------------------------------------ every delivery stored?
log "counting stored runs"
gantry_runs "$WORK/runs.json"
stored=$(run_count "$WORK/runs.json")
states=$(run_states "$WORK/runs.json" | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')
# Second witness, when the sqlite3 CLI is there: remembered deliveries that point at a run.
deliveries_rows='n/a'
if [ "$STATE_KIND" = postgres ]; then
  deliveries_rows=$(psql_test "SELECT COUNT(*) FROM $SCHEMA.deliveries WHERE pipeline = '$NAME' AND run_id IS NOT NULL" 2>>"$LOG") ||
    deliveries_rows='n/a'
elif command -v sqlite3 >/dev/null 2>&1; then
  deliveries_rows=$(sqlite3 -readonly "$CONFIG/.gantry/state.db" \
    "SELECT COUNT(*) FROM deliveries WHERE pipeline = '$NAME' AND run_id IS NOT NULL" 2>>"$LOG") ||
    deliveries_rows='n/a'
fi
if [ "$stored" -eq "$accepted_total" ] && [ "$stored" -gt 0 ]; then stored_goal=met; else stored_goal=missed; fi
case "$deliveries_rows" in n/a) ;; *) [ "$deliveries_rows" -eq "$accepted_total" ] || stored_goal=missed ;; esac

# Let the coalesced queue drain, so the number of builds is known and none is cut short.
log "waiting for the queue to drain (builds coalesce)"
deadline=$(($(now_ms) + DRAIN_LIMIT * 1000))
while :; do
  gantry_runs "$WORK/runs-after.json"
  pending=$(run_states "$WORK/runs-after.json" | awk '$1 == "queued" || $1 == "running" { n += $2 } END { print n + 0 }')
  [ "$pending" -gt 0 ] || break
  [ "$(now_ms)" -lt "$deadline" ] || { log "still $pending run(s) queued or running after ${DRAIN_LIMIT}s"; break; }
  sleep 1
done
final_states=$(run_states "$WORK/runs-after.json" | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')
builds=$(run_states "$WORK/runs-after.json" | awk '$1 == "succeeded" || $1 == "failed" { n += $2 } END { print n + 0 }')

# time_gets FILE URL CURL_ARGS...: API_REQUESTS GETs of URL, one "status seconds" line each
# in FILE, timed by curl (connection included).
time_gets() {
  local file=$1 url=$2
  shift 2
  : >"$file"
  for _ in $(seq "$API_REQUESTS"); do
    curl -s -o /dev/null -m 5 --noproxy '*' "$@" -w '%{http_code} %{time_total}\n' "$url" >>"$file"
  done
}
# ok_count FILE / percentile_ms FILE P: the 200 answers, and their P-th percentile in ms.
ok_count() { awk '$1 == 200' "$1" | wc -l | tr -d ' '; }
percentile_ms() {
  awk '$1 == 200 { printf "%.2f\n", $2 * 1000 }' "$1" | sort -n |
    awk -v p="$2" '{ v[NR] = $1 } END { i = int(NR * p / 100 + 0.5); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }'
}

# The API with every delivery's run stored: one page of runs, as the dashboard and
# `gantry --server ... runs` ask for it.
log "timing GET /api/v1/runs with $stored runs stored ($API_REQUESTS requests)"
api_times="$WORK/api-times"
time_gets "$api_times" "http://127.0.0.1:$PORT/api/v1/runs?limit=50" -H "Authorization: Bearer $API_TOKEN"
api_ok=$(ok_count "$api_times")
api_p50=$(percentile_ms "$api_times" 50)
api_p99=$(percentile_ms "$api_times" 99)
api_goal=$(goal "$api_p99" lt "$GOAL_API_P99_MS")
[ "$api_ok" -eq "$API_REQUESTS" ] || api_goal=missed

# The dashboard's home page at that size, logged in with the operator token (a
# session cookie), rendered in full each time, as a browser or its refresh asks for it.
log "timing the dashboard home page with $stored runs stored ($API_REQUESTS requests)"
jar="$WORK/cookies"
curl -s -o /dev/null -m 5 --noproxy '*' -c "$jar" --data "token=$API_TOKEN&next=/" \
  "http://127.0.0.1:$PORT/login" || die "logging in to the dashboard failed"
home_times="$WORK/home-times"
time_gets "$home_times" "http://127.0.0.1:$PORT/" -b "$jar"
home_ok=$(ok_count "$home_times")
home_p50=$(percentile_ms "$home_times" 50)
home_p99=$(percentile_ms "$home_times" 99)
home_goal=$(goal "$home_p99" lt "$GOAL_HOME_MS")
[ "$home_ok" -eq "$API_REQUESTS" ] || home_goal=missed

log "stopping the daemon (SIGTERM)"
stop_start=$(now_ms)
kill -TERM "$DAEMON_PID"
daemon_status=0
wait "$DAEMON_PID" || daemon_status=$?
stop_ms=$(($(now_ms) - stop_start))
DAEMON_PID=''
[ "$daemon_status" -eq 0 ] || { tail -n 20 "$LOG" >&2; die "gantry serve exited with $daemon_status after SIGTERM"; }

# ------------------------------------------------------------------ report
engine=$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')
revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || revision+="+changes"
if [ -n "$RATE" ]; then
  # An open loop cannot go faster than it offers: the goal is to keep up with the
  # offered rate (2 % for the start and the last answers), offering at least the goal.
  LOAD="offered at $RATE/s on a fixed schedule (at most $CONCURRENCY in flight)"
  rate_goal=$(goal "$per_second" ge "$(awk -v r="$RATE" 'BEGIN { print r * 0.98 }')")
  [ "$RATE" -ge "$GOAL_RATE" ] || rate_goal="offered below the goal"
else
  LOAD="at concurrency $CONCURRENCY"
  rate_goal=$(goal "$per_second" ge "$GOAL_RATE")
fi
p99_goal=$(goal "$p99" lt "$GOAL_P99_MS")
all_202=met
[ "$accepted" -eq "$DELIVERIES" ] && [ "$errors" -eq 0 ] || all_202=missed

cat <<EOF

gantry webhook intake benchmark ($DELIVERIES signed deliveries after $WARMUP warm-up ones,
$LOAD, one keep-alive connection per task, loopback; state $STATE_KIND, $REPLICAS daemon(s))
  wall clock:            $seconds s  ->  $per_second deliveries/s
  latency to the 202:    mean $mean ms, p50 $p50 ms, p90 $p90 ms, p99 $p99 ms, max $max ms
  answers:               $statuses; transport errors $errors; distinct run ids $distinct_runs
  stored:                $stored run rows for $accepted_total 202 answers (warm-up included); deliveries rows $deliveries_rows
  run states then:       $states
  after the queue drained: $final_states ($builds build(s) ran)
  daemon:                $daemon_cpu CPU-s during warm-up + flood; RSS $((DAEMON_RSS_START / 1024)) -> $((DAEMON_RSS_END / 1024)) MiB; stopped $stop_ms ms after SIGTERM (exit $daemon_status)

| Figure | Value |
| --- | --- |
| Webhook intake, $DELIVERIES signed deliveries $LOAD over loopback (goal ≥ $GOAL_RATE/s) | $per_second deliveries/s ($rate_goal) |
| Latency to the 202, p50 / p90 | $p50 / $p90 ms |
| Latency to the 202, p99 (goal < $GOAL_P99_MS ms) | $p99 ms ($p99_goal) |
| Latency to the 202, max | $max ms |
| Deliveries answered 202 | $accepted of $DELIVERIES ($all_202) |
| Every delivery stored: run rows / 202 answers, warm-up included (goal: equal) | $stored / $accepted_total ($stored_goal) |
| Builds the flood caused (queued runs coalesce; a commit already deployed is skipped; max_builds 1) | $builds |
| \`GET /api/v1/runs?limit=50\` with $stored runs stored, p50 / p99 over $api_ok requests (goal p99 < $GOAL_API_P99_MS ms) | $api_p50 / $api_p99 ms ($api_goal) |
| Dashboard home page with $stored runs stored, p50 / p99 over $home_ok requests (goal < $GOAL_HOME_MS ms) | $home_p50 / $home_p99 ms ($home_goal) |

Measured on $(nproc) CPU(s) shared by the daemon and the load generator, Docker engine $engine,
local registry $REGISTRY, gantry $revision, SQLite state in $(df -P "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $1 }') (${TMPDIR:-/tmp}), GANTRY_LOG=${GANTRY_LOG:-warn}.
EOF

[ "$all_202" = met ] || die "not every delivery was answered 202 (load generator exit $loadgen_status)"
[ "$stored_goal" = met ] || die "stored $stored run rows (deliveries rows $deliveries_rows) for $accepted_total 202 answers"
