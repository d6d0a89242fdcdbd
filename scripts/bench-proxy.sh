#!/usr/bin/env bash
# Benchmark (not a test): figures of a service behind gantry's proxy, for the README.
#   1. push-to-live through `gantry serve`: a one-line commit, a signed GitHub push
#      webhook, and the time from the POST until the proxy's fixed port serves the new
#      line; against git + the docker CLI doing the same work on the same engine
#      (`clone --depth 1`, `build`, `push`, `pull`, `rm -f`, `run -d -p`, poll the page)
#   2. requests during redeploys on the fixed port: exactly LOAD_REQUESTS requests
#      through the proxy (half on one keep-alive connection, half on a new connection
#      each) while pushes redeploy the service; failed requests and the versions seen
# Traffic goes to loopback only (the daemon, the local engine's proxy and containers,
# the registry). Uses the local engine's `gantry-proxy` container, its volumes and its
# network: it refuses to start when another proxy is there, and removes them when done.
#
#   BENCH_RUNS=5      measured push-to-live runs of each side (after one untimed warm-up each)
#   GANTRY_BIN=path   benchmark this binary instead of `cargo build --release`
#   BENCH_LOG=file    keep the daemon's log and the output of every command there
#   BENCH_BUILDER=classic  gantry builds with the engine's classic builder, as the CLI does
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS="${BENCH_RUNS:-5}"
case "$RUNS" in '' | *[!0-9]* | 0) echo "bench: BENCH_RUNS must be a positive integer" >&2; exit 2 ;; esac
# The fixed port the proxy holds, and the one the CLI side publishes its container on.
PROXY_PORT=18480
CLI_PORT=18481
# The service's `proxy.drain` (the old container keeps its requests this long after the
# switch) and `stop_timeout` (busybox httpd ignores SIGTERM, so each stop takes all of it).
DRAIN=1s
STOP_TIMEOUT=1s
# The goal (from the issue): gantry's push-to-live at most this fraction of the CLI's.
GOAL_RATIO=0.8
# Part 2: this many requests in all, at this many a second in all, split over two
# loops; at most LOAD_PUSHES redeploys while they run; every request times out after
# LOAD_REQUEST_TIMEOUT s and each loop is stopped after LOAD_LIMIT s whatever happens.
LOAD_REQUESTS=1000
LOAD_RATE=100
LOAD_PUSHES=10
LOAD_REQUEST_TIMEOUT=2
LOAD_LIMIT=120
# Polls of a page: one request every PROBE_SLEEP s, never for longer than PROBE_LIMIT_MS.
PROBE_SLEEP=0.02
PROBE_LIMIT_MS=60000
# How long the daemon may take to answer /healthz, to finish a run, to stop (s).
START_LIMIT=30
RUN_LIMIT=120
STOP_LIMIT=60
API_TOKEN=bench-proxy-api-token
SECRET=bench-proxy-secret

# The engine test-env.sh starts; gantry's `local` host and the docker CLI use the same one.
export DOCKER_HOST=unix:///var/run/docker.sock
# The CLI side is the plain sequence a team scripts: `docker build` with the engine's
# legacy builder (the 20.10 CLI's default). gantry builds as its pipeline says: BuildKit
# by default (`build.builder: auto`); BENCH_BUILDER=classic measures it on the same
# builder as the CLI.
export DOCKER_BUILDKIT=0
BUILDER="${BENCH_BUILDER:-auto}"

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# Everything this run creates is named after it: the pipeline (and so the label
# gantry.pipeline of its containers) "$NAME", the image repositories "$IMAGE" (gantry's)
# and "$CLI_IMAGE".
NAME="bench-proxy-$$"
CLI_CONTAINER="$NAME-cli"
PROXY_CONTAINER=gantry-proxy
PROXY_VOLUMES=(gantry-proxy-config gantry-proxy-data)
PROXY_NETWORK=gantry-proxy
WORK=''
REGISTRY=''
IMAGE=''
CLI_IMAGE=''
DAEMON_PID=''
LOAD_PIDS=()
# Set once this run owns the local engine's proxy (none was there when it started).
OWN_PROXY=''
OWN_NETWORK=''
OWN_PROXY_IMAGE=''

cleanup() {
  local status=$?
  local pid
  for pid in "${LOAD_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [ -z "$DAEMON_PID" ] || stop_daemon "$DAEMON_PID" "$STOP_LIMIT"
  if [ -n "$IMAGE" ]; then
    log "cleanup: containers and images of $NAME"
    local ids
    ids=$(docker ps -aq --filter "label=gantry.pipeline=$NAME" 2>/dev/null) || true
    [ -z "$ids" ] || printf '%s\n' "$ids" | xargs docker rm -f >/dev/null 2>&1 || true
    docker rm -f "$CLI_CONTAINER" >/dev/null 2>&1 || true
  fi
  # The local engine's proxy only (never another engine's), and only when this run made it.
  if [ -n "$OWN_PROXY" ]; then
    log "cleanup: the local engine's $PROXY_CONTAINER, its volumes${OWN_NETWORK:+ and network}"
    docker rm -f "$PROXY_CONTAINER" >/dev/null 2>&1 || true
    docker volume rm "${PROXY_VOLUMES[@]}" >/dev/null 2>&1 || true
    [ -z "$OWN_NETWORK" ] || docker network rm "$PROXY_NETWORK" >/dev/null 2>&1 || true
    # The proxy image, when gantry pulled it for this run (it fails while another container uses it).
    [ -z "$OWN_PROXY_IMAGE" ] || docker rmi "$OWN_PROXY_IMAGE" >/dev/null 2>&1 || true
  fi
  if [ -n "$IMAGE" ]; then
    docker image ls --digests --format '{{.Repository}} {{.Tag}} {{.Digest}}' 2>/dev/null |
      while read -r repo tag digest; do
        [ "$repo" = "$IMAGE" ] || [ "$repo" = "$CLI_IMAGE" ] || continue
        [ "$tag" = '<none>' ] || docker rmi "$repo:$tag" >/dev/null 2>&1 || true
        [ "$digest" = '<none>' ] || docker rmi "$repo@$digest" >/dev/null 2>&1 || true
      done
    delete_pushed "$IMAGE"
    delete_pushed "$CLI_IMAGE"
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# port_open PORT: something listens on 127.0.0.1:PORT.
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# ------------------------------------------------------------------ setup
command -v jq >/dev/null || die "jq is needed to read gantry's JSON"
command -v openssl >/dev/null || die "openssl is needed to sign the webhooks"
log "test environment"
use_test_env
PROXY_IMAGE="${GANTRY_TEST_PROXY_IMAGE:-$REGISTRY/gantry-test/caddy:2.6.2}"

# The local engine's proxy is shared by every config that proxies a service there:
# never take over (or remove) one this run did not create.
if docker container inspect "$PROXY_CONTAINER" >/dev/null 2>&1; then
  die "a $PROXY_CONTAINER container already runs on the local engine; stop what uses it (or remove it: docker rm -f $PROXY_CONTAINER; docker volume rm ${PROXY_VOLUMES[*]}) first"
fi
for volume in "${PROXY_VOLUMES[@]}"; do
  ! docker volume inspect "$volume" >/dev/null 2>&1 ||
    die "the volume $volume is left on the local engine; its routes would be loaded into this run's proxy (docker volume rm ${PROXY_VOLUMES[*]})"
done
for port in "$PROXY_PORT" "$CLI_PORT"; do
  ! port_open "$port" || die "127.0.0.1:$port is taken"
done
docker network inspect "$PROXY_NETWORK" >/dev/null 2>&1 || OWN_NETWORK=yes
docker image inspect "$PROXY_IMAGE" >/dev/null 2>&1 || OWN_PROXY_IMAGE=$PROXY_IMAGE
OWN_PROXY=yes

use_gantry

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-proxy.XXXXXX")
REPO="$WORK/repo"
CONFIG="$WORK/config"
LOG="${BENCH_LOG:-$WORK/bench.log}"
: >"$LOG"
IMAGE="$REGISTRY/bench/$NAME"
CLI_IMAGE="$IMAGE-cli"

# The page's version line: the one line each commit changes.
mkdir -p "$REPO"
cp -R fixtures/hello/. "$REPO/"
echo '<p id="version">start</p>' >>"$REPO/www/index.html"
git_in "$REPO" init -q
git_in "$REPO" symbolic-ref HEAD refs/heads/main
git_in "$REPO" add -A
git_in "$REPO" commit -q -m "bench: fixture"

mkdir -p "$CONFIG/pipelines"
cat >"$CONFIG/gantry.yaml" <<EOF
hosts:
  local: { docker: "$DOCKER_HOST" }
proxy:
  image: "$PROXY_IMAGE"
server:
  token: $API_TOKEN
EOF
cat >"$CONFIG/pipelines/$NAME.yaml" <<EOF
source:
  repo: $REPO
  branch: main
  webhook: { secret: $SECRET }
build:
  builder: $BUILDER
image:
  repository: $IMAGE
  tags: ["{{ commit.short }}"]
deploy:
  services:
    web:
      proxy: { port: $PROXY_PORT, drain: $DRAIN }
      stop_timeout: $STOP_TIMEOUT
      health:
        http: { port: 8080, path: /healthz }
        interval: 100ms
        timeout: 30s
      instances:
        $NAME-1: { host: local }
EOF
"$GANTRY" -c "$CONFIG" validate >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "the bench config does not validate"; }

# ------------------------------------------------------------------ daemon
PORT=$(free_port)
API="http://127.0.0.1:$PORT"
log "gantry serve on 127.0.0.1:$PORT (pipeline $NAME)"
GANTRY_LOG="${GANTRY_LOG:-info}" "$GANTRY" -c "$CONFIG" serve --listen "127.0.0.1:$PORT" >>"$LOG" 2>&1 &
DAEMON_PID=$!
deadline=$(($(now_ms) + START_LIMIT * 1000))
until curl -s -f -m 1 --noproxy '*' "$API/healthz" 2>/dev/null | grep -q '"status":"ok"'; do
  kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 20 "$LOG" >&2; die "gantry serve exited"; }
  [ "$(now_ms)" -lt "$deadline" ] || { tail -n 20 "$LOG" >&2; die "gantry serve did not answer /healthz in ${START_LIMIT}s"; }
  sleep 0.1
done

# api ARGS...: gantry through the daemon's API (the operator token), JSON on stdout.
api() { "$GANTRY" --server "$API" --token "$API_TOKEN" --json "$@" 2>>"$LOG"; }

# ------------------------------------------------------------------ helpers
# fetch URL: the page, or nothing (never fails).
fetch() { curl -s -f -m 1 --noproxy '*' "$1" 2>/dev/null || true; }

# wait_for_text URL TEXT: poll until the page contains TEXT (at most PROBE_LIMIT_MS).
wait_for_text() {
  local deadline=$(($(now_ms) + PROBE_LIMIT_MS)) body
  while [ "$(now_ms)" -lt "$deadline" ]; do
    body=$(fetch "$1")
    case "$body" in *"$2"*) return 0 ;; esac
    sleep "$PROBE_SLEEP"
  done
  return 1
}

# set_version TEXT: commit a one-line change, the page's version line; sets SHA.
set_version() {
  sed -i "s|^<p id=\"version\">.*</p>\$|<p id=\"version\">$1</p>|" "$REPO/www/index.html"
  git_in "$REPO" commit -q -a -m "bench: $1"
  SHA=$(git_in "$REPO" rev-parse HEAD)
}

# sign_push SHA: the body of GitHub's push of SHA to main in BODY, its signature in
# SIGNATURE (done before the clock starts: the forge signs, not gantry).
DELIVERIES=0
sign_push() {
  BODY=$(printf '{"ref":"refs/heads/main","before":"%s","after":"%s","created":false,"deleted":false,"forced":false,"repository":{"name":"%s","full_name":"bench/%s","clone_url":"file://%s"},"head_commit":{"id":"%s","message":"bench"},"pusher":{"name":"bench"}}' \
    "$(git_in "$REPO" rev-parse HEAD~1)" "$1" "$NAME" "$NAME" "$REPO" "$1")
  SIGNATURE="sha256=$(printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)"
  DELIVERIES=$((DELIVERIES + 1))
}

# post_push: POST the signed push; sets RUN_NUMBER from the 202's answer.
post_push() {
  local answer status
  answer=$(curl -s -m 10 --noproxy '*' -w '\n%{http_code}' -X POST \
    -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' \
    -H "X-GitHub-Delivery: $NAME-$DELIVERIES" -H "X-Hub-Signature-256: $SIGNATURE" \
    --data-binary "$BODY" "$API/hooks/$NAME") || true
  status=${answer##*$'\n'}
  answer=${answer%$'\n'*}
  [ "$status" = 202 ] || die "the push webhook got HTTP $status: $answer"
  RUN_NUMBER=$(jq -r '.run // empty' <<<"$answer")
  [ -n "$RUN_NUMBER" ] || die "the push webhook queued no run: $answer"
}

# wait_run NUMBER OUT: wait until the run has ended; its JSON (from the API) in OUT.
wait_run() {
  local deadline=$(($(now_ms) + RUN_LIMIT * 1000)) state
  while :; do
    api runs "$NAME" --limit 20 | jq ".[] | select(.number == $1)" >"$2" || true
    state=$(jq -r '.state // empty' "$2" 2>/dev/null || true)
    case "$state" in '' | queued | running) ;; *) break ;; esac
    [ "$(now_ms)" -lt "$deadline" ] || die "run #$1 still ${state:-unknown} after ${RUN_LIMIT}s"
    sleep 0.2
  done
  [ "$state" = succeeded ] || {
    api logs "$NAME#$1" | tail -n 20 >&2 || true
    die "run #$1 $state: $(jq -r '.message // ""' "$2")"
  }
}

# ------------------------------------------------------------------ 1. push-to-live
# live_gantry: sets LIVE_GANTRY, ms from the POST to the new line on the proxy's port,
# and GANTRY_PHASES, where those ms (and the ones after, until the run ended) went.
marker_id=0
live_gantry() {
  local text start served run_json="$WORK/run.json" log_json="$WORK/run-log.json"
  marker_id=$((marker_id + 1))
  text="$NAME-line-$marker_id-gantry"
  set_version "$text"
  sign_push "$SHA"
  start=$(now_ms)
  post_push
  wait_for_text "http://127.0.0.1:$PROXY_PORT/" "$text" || die "gantry: the new line was never served on :$PROXY_PORT"
  served=$(now_ms)
  LIVE_GANTRY=$((served - start))
  wait_run "$RUN_NUMBER" "$run_json"
  GANTRY_WINDOW="$start $(jq -r .finished_at "$run_json")"
  [ "$(jq -r .commit "$run_json")" = "$SHA" ] || die "run #$RUN_NUMBER built $(jq -r .commit "$run_json"), not $SHA"
  api logs "$NAME#$RUN_NUMBER" >"$log_json" || die "gantry logs $NAME#$RUN_NUMBER failed"
  # The run's own clock marks: stages from the run, the new container's start from its
  # log (epoch ms, the clock now_ms reads too).
  GANTRY_PHASES=$(jq -rs --argjson start "$start" --argjson served "$served" --slurpfile run "$run_json" '
    ($run[0]) as $r
    | ($r.stages | map({ (.name): .started_at }) | add) as $s
    | (map(select(.line | test(": starting sha256:"))) | first | .at) as $starting
    | [ $r.started_at - $start, $s.build - $r.started_at, $s.push - $s.build,
        $s.deploy - $s.push, $starting - $s.deploy, $served - $starting,
        $r.finished_at - $served ] | map(tostring) | join(" ")' "$log_json") ||
    die "run #$RUN_NUMBER: its log has no line for the new container's start"
}

# cli_step COMMAND...: one step of the CLI sequence; its ms go onto CLI_PHASES.
cli_step() {
  "$@" >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "CLI step failed: $*"; }
  local now
  now=$(now_ms)
  CLI_PHASES+="${CLI_PHASES:+ }$((now - CLI_MARK))"
  CLI_MARK=$now
}

# live_cli: sets LIVE_CLI, ms from the clone to the new line on CLI_PORT, and
# CLI_PHASES, the ms of each step (the last one the poll).
live_cli() {
  local text tag dir="$WORK/cli-checkout" start
  marker_id=$((marker_id + 1))
  text="$NAME-line-$marker_id-cli"
  set_version "$text"
  tag=${SHA:0:7}
  rm -rf "$dir"
  CLI_PHASES=''
  start=$(now_ms)
  CLI_MARK=$start
  cli_step git clone -q --depth 1 "file://$REPO" "$dir"
  cli_step docker build -q -t "$CLI_IMAGE:$tag" "$dir"
  cli_step docker push "$CLI_IMAGE:$tag"
  cli_step docker pull "$CLI_IMAGE:$tag"
  cli_step docker rm -f "$CLI_CONTAINER"
  # Published on loopback only: the benchmark's traffic stays on this machine.
  cli_step docker run -d --name "$CLI_CONTAINER" -p "127.0.0.1:$CLI_PORT:8080" "$CLI_IMAGE:$tag"
  wait_for_text "http://127.0.0.1:$CLI_PORT/" "$text" || die "CLI: the new line was never served on :$CLI_PORT"
  LIVE_CLI=$(($(now_ms) - start))
  CLI_PHASES+=" $(($(now_ms) - CLI_MARK))"
}

# field_median N: the median of the N-th field of the lines on stdin.
field_median() { awk -v n="$1" '{ print $n }' | median; }

log "push-to-live: warm-up of each side (gantry's starts the proxy)"
live_gantry
first_gantry=$LIVE_GANTRY
first_gantry_phases=$GANTRY_PHASES
live_cli
first_cli=$LIVE_CLI
gantry_ms=()
cli_ms=()
gantry_phases=''
cli_phases=''
for r in $(seq "$RUNS"); do
  # Alternate who goes first, so neither side always meets a just-warmed engine.
  if [ $((r % 2)) -eq 1 ]; then
    live_gantry
    live_cli
    order="gantry first"
  else
    live_cli
    live_gantry
    order="CLI first"
  fi
  gantry_ms+=("$LIVE_GANTRY")
  cli_ms+=("$LIVE_CLI")
  gantry_phases+="$GANTRY_PHASES"$'\n'
  cli_phases+="$CLI_PHASES"$'\n'
  log "push-to-live run $r/$RUNS: gantry $LIVE_GANTRY ms, CLI $LIVE_CLI ms ($order)"
  log "  gantry: queue/checkout/build/push/pull/start-to-page/after ms: $GANTRY_PHASES"
  log "  CLI: clone/build/push/pull/rm/run/poll ms: $CLI_PHASES"
done
gantry_median=$(printf '%s\n' "${gantry_ms[@]}" | median)
cli_median=$(printf '%s\n' "${cli_ms[@]}" | median)
live_ratio=$(ratio "$gantry_median" "$cli_median")
# Medians of each phase over the measured runs.
g_phase=()
for n in 1 2 3 4 5 6 7; do g_phase+=("$(printf '%s' "$gantry_phases" | field_median "$n")"); done
c_phase=()
for n in 1 2 3 4 5 6 7; do c_phase+=("$(printf '%s' "$cli_phases" | field_median "$n")"); done
docker rm -f "$CLI_CONTAINER" >/dev/null 2>&1 || true

# The engine's own record of the last measured gantry run: what it was asked to do for
# this pipeline's containers, its image and the proxy, and when (ms after the POST).
read -r window_start window_end <<<"$GANTRY_WINDOW"
epoch() { echo "$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))"; }
docker events --since "$(epoch "$window_start")" --until "$(epoch "$window_end")" \
  --format '{{.TimeNano}}|{{.Type}}|{{.Actor.Attributes.name}}|{{.Action}}|{{.Actor.ID}}|{{.Actor.Attributes.container}}' \
  >"$WORK/events" 2>>"$LOG" || true
cat "$WORK/events" >>"$LOG"
# Network events name the network; they are ours when they name one of our containers.
timeline=$(awk -F'|' -v t0="$window_start" -v name="$NAME-1" -v proxy="$PROXY_CONTAINER" -v image="$IMAGE" '
  { ms = int($1 / 1000000) - t0 }
  $2 == "container" && (index($3, name) == 1 || $3 == proxy) { ours[$5] = 1; print ms, $3, $4; next }
  $2 == "image" && ($3 == image || index($3, image ":") == 1 || index($3, image "@") == 1) { print ms, "image", $4; next }
  $2 == "network" && ($6 in ours) { print ms, "network " $3, $4 }' "$WORK/events")

# What one load of the proxy's config costs, as gantry loads it twice per deploy (the
# probe route, then the switch): `caddy reload` run inside the proxy, of the config it has.
reload_ms=()
for _ in 1 2 3 4 5; do
  start=$(now_ms)
  docker exec "$PROXY_CONTAINER" caddy reload --config /config/gantry/caddy.json --force >>"$LOG" 2>&1 ||
    die "caddy reload in $PROXY_CONTAINER failed"
  reload_ms+=($(($(now_ms) - start)))
done
reload_median=$(printf '%s\n' "${reload_ms[@]}" | median)

# ------------------------------------------------------------------ 2. requests during redeploys
# start_load OUT KEEPALIVE COUNT RATE: COUNT requests to the proxy's port at RATE a
# second in the background, from one curl (so keep-alive reuses its connection); each
# answer is the body, then "|STATUS" on a line of its own (000 when curl got none).
# The job is `timeout`, which passes the cleanup's TERM on to curl.
start_load() {
  local out=$1 keepalive=$2 count=$3 rate=$4 urls=() header=()
  [ "$keepalive" = yes ] || header=(-H 'Connection: close')
  for _ in $(seq "$count"); do urls+=("http://127.0.0.1:$PROXY_PORT/"); done
  timeout "$LOAD_LIMIT" curl -s --noproxy '*' -m "$LOAD_REQUEST_TIMEOUT" --rate "$rate/s" \
    "${header[@]}" -w '\n|%{http_code}\n' "${urls[@]}" >"$out" 2>/dev/null &
  LOAD_PIDS+=($!)
}
loads_running() {
  local pid
  for pid in "${LOAD_PIDS[@]}"; do ! kill -0 "$pid" 2>/dev/null || return 0; done
  return 1
}

# load_summary OUT: "answers failed went-back versions...": the answers, those that
# were not a 200, how often a version followed a newer one, and the versions in order.
load_summary() {
  awk '
    /^<p id="version">/ { v = $0; sub(/^<p id="version">/, "", v); sub(/<\/p>$/, "", v) }
    /^\|[0-9][0-9][0-9]$/ {
      n++
      if ($0 != "|200") { failed++; v = "" ; next }
      if (v != last && v != "") {
        if (v in seen) back++
        seen[v] = 1; order = order " " v; last = v
      }
      v = ""
    }
    END { print n + 0, failed + 0, back + 0 order }' "$1"
}

half=$((LOAD_REQUESTS / 2))
half_rate=$((LOAD_RATE / 2))
wait_for_text "http://127.0.0.1:$PROXY_PORT/" "$NAME-line" || die "the proxy does not serve the page before the load"
log "requests during redeploys: $LOAD_REQUESTS requests at $LOAD_RATE/s (half keep-alive, half new connections)"
start_load "$WORK/load-keepalive" yes "$half" "$half_rate"
start_load "$WORK/load-close" no "$((LOAD_REQUESTS - half))" "$half_rate"
load_start=$(now_ms)
sleep 0.5
# Push new versions back to back while the loops run: each push once the last one is
# live, so one run is always deploying or queued behind the one draining.
pushes=0
load_runs=()
while [ "$pushes" -lt "$LOAD_PUSHES" ] && loads_running; do
  pushes=$((pushes + 1))
  set_version "$NAME-load-$pushes"
  sign_push "$SHA"
  post_push
  load_runs+=("$RUN_NUMBER")
  wait_for_text "http://127.0.0.1:$PROXY_PORT/" "$NAME-load-$pushes" || die "load push $pushes was never served"
done
for pid in "${LOAD_PIDS[@]}"; do wait "$pid" || true; done
LOAD_PIDS=()
load_ms=$(($(now_ms) - load_start))
for number in "${load_runs[@]}"; do wait_run "$number" "$WORK/load-run.json"; done
read -r ka_answers ka_failed ka_back ka_versions <<<"$(load_summary "$WORK/load-keepalive")"
read -r cl_answers cl_failed cl_back cl_versions <<<"$(load_summary "$WORK/load-close")"
answers=$((ka_answers + cl_answers))
# A request that never got its line (the loop was stopped) counts as failed too.
failed=$((ka_failed + cl_failed + LOAD_REQUESTS - answers))
went_back=$((ka_back + cl_back))
# Switches both loops saw: the versions each saw, less the one it started on.
switches=$(awk -v a="$(wc -w <<<"$ka_versions")" -v b="$(wc -w <<<"$cl_versions")" 'BEGIN { print (a < b ? a : b) - 1 }')
log "keep-alive: $ka_answers answers, $ka_failed failed, versions: $ka_versions"
log "new connections: $cl_answers answers, $cl_failed failed, versions: $cl_versions"
fail_codes=$(cat "$WORK/load-keepalive" "$WORK/load-close" | grep '^|[0-9][0-9][0-9]$' | grep -v '^|200$' |
  sort | uniq -c | awk '{ printf "%s%s x %s", sep, $2, $1; sep = ", " }' | tr -d '|') || true

# ------------------------------------------------------------------ report
engine=$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')
caddy=$(docker exec "$PROXY_CONTAINER" caddy version 2>/dev/null | awk '{ print $1; exit }' || echo '?')
revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || revision+="+changes"
[ -z "${GANTRY_BIN:-}" ] || revision="$GANTRY_BIN (tree at $revision)"
live_goal=$(goal "$live_ratio" le "$GOAL_RATIO")
fail_goal=$(goal "$failed" eq 0)
# How far gantry's median is from GOAL_RATIO times the CLI's.
over_goal=$(awk -v g="$gantry_median" -v c="$cli_median" -v r="$GOAL_RATIO" 'BEGIN {
  d = g - c * r; if (d > 0) printf "%d ms over it", d; else printf "%d ms under it", -d }')

cat <<EOF

gantry proxy benchmark ($RUNS measured runs of each side after one warm-up each; wall clock)
  push-to-live, gantry per run (ms): ${gantry_ms[*]}  (POST of the signed push -> new line on :$PROXY_PORT)
  push-to-live, CLI per run (ms):    ${cli_ms[*]}  (clone -> new line on :$CLI_PORT)
  medians: gantry $gantry_median ms, CLI $cli_median ms, ratio $live_ratio (goal <= $GOAL_RATIO: $live_goal; $over_goal)
  gantry phases, medians (ms): webhook to run start ${g_phase[0]}, checkout + context ${g_phase[1]}, build ${g_phase[2]},
    push ${g_phase[3]}, deploy stage until the new container starts (pull, proxy checks) ${g_phase[4]},
    then create + start + probe route + check + switch until the page is served ${g_phase[5]};
    then ${g_phase[6]} ms more until the run ends (drain $DRAIN, stop_timeout $STOP_TIMEOUT)
  CLI steps, medians (ms): clone ${c_phase[0]}, build ${c_phase[1]}, push ${c_phase[2]}, pull ${c_phase[3]}, rm -f ${c_phase[4]}, run ${c_phase[5]}, poll ${c_phase[6]}
  one \`caddy reload\` in the proxy (docker exec), median of 5: $reload_median ms (${reload_ms[*]})
  engine events of the last measured gantry run, ms after the POST (archive-path: a read
  of the proxy's routes, extract-to-dir: a file written into it, exec: \`caddy reload\`):
$(printf '%s\n' "$timeline" | sed 's/^/    /')
  first runs (warm-up): gantry $first_gantry ms (starts the proxy; phases $first_gantry_phases), CLI $first_cli ms
  requests during redeploys: $LOAD_REQUESTS at $LOAD_RATE/s for $load_ms ms, $pushes pushes, $switches switches seen by both loops
    keep-alive:      $ka_answers answers, $ka_failed failed, versions seen: $ka_versions
    new connections: $cl_answers answers, $cl_failed failed, versions seen: $cl_versions
    failed: $failed${fail_codes:+ ($fail_codes)}; a version after a newer one: $went_back

| Figure | Value |
| --- | --- |
| Push-to-live through \`gantry serve\`: signed push webhook until the proxy's fixed port serves the new line (median of $RUNS) | $gantry_median ms |
| Same with git + docker CLI: \`clone --depth 1\`, \`build\`, \`push\`, \`pull\`, \`rm -f\`, \`run -d -p\`, poll (median of $RUNS) | $cli_median ms |
| Ratio gantry / CLI (goal ≤ $GOAL_RATIO) | $live_ratio ($live_goal) |
| Failed requests of $LOAD_REQUESTS through the proxy's fixed port at $LOAD_RATE/s, half keep-alive, across $switches switches to a new version (goal 0) | $failed ($fail_goal) |

Measured on $(nproc) CPU(s), Docker engine $engine (gantry build.builder: $BUILDER, the CLI's legacy builder), proxy Caddy $caddy,
local registry $REGISTRY, gantry $revision, fixtures/hello (busybox httpd, drain $DRAIN,
stop_timeout $STOP_TIMEOUT, health checked every 100 ms).
EOF
