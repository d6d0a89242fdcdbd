#!/usr/bin/env bash
# Benchmark (not a test): deploy figures for the README.
#   1. fan-out: `gantry deploy --force` of one instance on each of 1, 2, 4 and 8 extra engines
#   2. downtime of a forced redeploy with a fixed host port (the old container stops first)
#   3. failed requests during forced redeploys without a fixed host port (start-first swap),
#      the service found the way a Docker-aware proxy finds it: newest healthy container
#   4. push-to-live: `gantry run` of a one-line commit until the new page is served, against
#      git + the docker CLI doing the same
# Traffic goes to loopback (main engine, registry) and the extra engines at 10.77.I.2 only.
# Starts (and leaves running) 8 extra engines: `scripts/test-env.sh hosts 8`.
#
#   BENCH_RUNS=5      measured runs of each figure (after one untimed warm-up)
#   GANTRY_BIN=path   benchmark this binary instead of building target/release/gantry
#   BENCH_LOG=file    keep the output of every gantry and docker command there
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS="${BENCH_RUNS:-5}"
case "$RUNS" in '' | *[!0-9]* | 0) echo "bench: BENCH_RUNS must be a positive integer" >&2; exit 2 ;; esac
FAN_OUT=(1 2 4 8)
MAX_HOSTS=8
# Probes: one request every PROBE_SLEEP seconds, never for longer than PROBE_LIMIT_MS.
PROBE_SLEEP=0.02   # 20 ms
PROBE_LIMIT_MS=30000
# How long the probes keep going after a redeploy returns.
PROBE_TAIL=0.5

# The engine test-env.sh starts; gantry's `local` host and the docker CLI use the same one.
export DOCKER_HOST=unix:///var/run/docker.sock
# gantry drives the engine's classic builder through the API; the CLI must use the
# same builder, or the comparison measures BuildKit against it.
export DOCKER_BUILDKIT=0

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
maximum() { sort -n | tail -n 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# Everything this run creates is named after it: pipelines (and so container labels)
# and instances "$PREFIX-...", image repositories "$IMAGE_PREFIX...".
PREFIX="bench-deploy-$$"
CLI_CONTAINER="$PREFIX-cli"
WORK=''
REGISTRY=''
IMAGE_PREFIX=''
ENGINES=()
PUSHED=()
PROBE_PID=''
REDEPLOY_MS=0
LIVE_EXIT=0
LIVE_SERVED=0
LIVE_STAGE=0
LIVE_CLI=0

# remove_containers ENGINE PIPELINE_PREFIX: every container labelled with one of our pipelines.
remove_containers() {
  local ids
  [ -n "$2" ] || return 0
  ids=$(docker -H "$1" ps -a --filter label=gantry.pipeline \
    --format '{{.ID}} {{.Label "gantry.pipeline"}}' 2>/dev/null |
    awk -v p="$2" 'index($2, p) == 1 { print $1 }') || true
  [ -z "$ids" ] || printf '%s\n' "$ids" | xargs docker -H "$1" rm -f >/dev/null 2>&1 || true
}

# remove_images ENGINE: the images of our repositories, by tag and by digest.
remove_images() {
  [ -n "$IMAGE_PREFIX" ] || return 0
  docker -H "$1" image ls --digests --format '{{.Repository}} {{.Tag}} {{.Digest}}' 2>/dev/null |
    while read -r repo tag digest; do
      case "$repo" in "$IMAGE_PREFIX"*) ;; *) continue ;; esac
      [ "$tag" = '<none>' ] || docker -H "$1" rmi "$repo:$tag" >/dev/null 2>&1 || true
      [ "$digest" = '<none>' ] || docker -H "$1" rmi "$repo@$digest" >/dev/null 2>&1 || true
    done
}

cleanup() {
  local status=$?
  if [ -n "$PROBE_PID" ]; then
    kill "$PROBE_PID" 2>/dev/null || true
    wait "$PROBE_PID" 2>/dev/null || true
  fi
  if [ "${#ENGINES[@]}" -gt 0 ]; then
    log "cleanup: containers and images of $PREFIX"
    local engine
    for engine in "${ENGINES[@]}"; do
      remove_containers "$engine" "$PREFIX-"
    done
    docker rm -f "$CLI_CONTAINER" >/dev/null 2>&1 || true
    for engine in "${ENGINES[@]}"; do
      remove_images "$engine"
    done
    local repo
    for repo in "${PUSHED[@]}"; do
      delete_pushed "$repo"
    done
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ setup
log "test environment with $MAX_HOSTS extra engines"
use_test_env hosts "$MAX_HOSTS"
[ "${GANTRY_TEST_HOSTS:-0}" -ge "$MAX_HOSTS" ] ||
  die "$STATE/env lists ${GANTRY_TEST_HOSTS:-0} extra engines, not $MAX_HOSTS"

use_gantry

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-deploy.XXXXXX")
REPO="$WORK/repo"
CONFIG="$WORK/config"
LOG="${BENCH_LOG:-$WORK/bench.log}"
IMAGE_PREFIX="$REGISTRY/bench/deploy-$$-"
CLI_IMAGE="${IMAGE_PREFIX}cli"
PUSHED=("$CLI_IMAGE")

mkdir -p "$REPO"
cp -R fixtures/hello/. "$REPO/"
git_in "$REPO" init -q
git_in "$REPO" symbolic-ref HEAD refs/heads/main
git_in "$REPO" add -A
git_in "$REPO" commit -q -m "bench: fixture"

# gantry.yaml: the local engine and h1..h8.
mkdir -p "$CONFIG/pipelines"
ENGINES=("$DOCKER_HOST")
{
  echo "hosts:"
  echo "  local: { docker: \"$DOCKER_HOST\" }"
  for i in $(seq "$MAX_HOSTS"); do
    docker_var="GANTRY_TEST_HOST_${i}_DOCKER"
    address_var="GANTRY_TEST_HOST_${i}_ADDRESS"
    if [ -z "${!docker_var:-}" ] || [ -z "${!address_var:-}" ]; then die "$STATE/env has no engine $i"; fi
    echo "  h$i: { docker: \"${!docker_var}\", address: \"${!address_var}\" }"
    ENGINES+=("${!docker_var}")
  done
} >"$CONFIG/gantry.yaml"

# write_pipeline NAME PORT CHECK INSTANCE=HOST...: pipelines/NAME.yaml with one service
# `web`; PORT is a `ports` entry, CHECK `http` (GET /healthz) or `docker` (the image's HEALTHCHECK).
write_pipeline() {
  local name=$1 port=$2 check=$3 pair repository="$IMAGE_PREFIX${1#"$PREFIX"-}"
  shift 3
  case " ${PUSHED[*]} " in *" $repository "*) ;; *) PUSHED+=("$repository") ;; esac
  {
    cat <<EOF
source: { repo: "$REPO", branch: main }
image: { repository: "$repository", tags: ["{{ commit.short }}"] }
deploy:
  batch: 8
  services:
    web:
      ports: ["$port"]
      stop_timeout: 1s
      health:
EOF
    case "$check" in
      http) echo "        http: { port: 8080, path: /healthz }" ;;
      docker) echo "        docker: true" ;;
      *) die "write_pipeline: unknown check $check" ;;
    esac
    echo "        interval: 100ms"
    echo "        timeout: 30s"
    echo "      instances:"
    for pair in "$@"; do
      echo "        ${pair%%=*}: { host: ${pair#*=} }"
    done
  } >"$CONFIG/pipelines/$name.yaml"
}

# gantry_json OUT ARGS...: gantry --json ARGS, the report in OUT, progress in the log.
gantry_json() {
  local out=$1
  shift
  "$GANTRY" -c "$CONFIG" --json "$@" >"$out" 2>>"$LOG" ||
    { tail -n 30 "$LOG" >&2; tail -n 40 "$out" >&2; die "gantry $* failed"; }
}

# updated_count JSON: how many instances the report says were updated.
updated_count() { grep -c '"action": "updated"' "$1" || true; }

# deploy_stage_ms JSON: the duration of the report's `deploy` stage.
deploy_stage_ms() {
  awk '/"name":/ { gsub(/[",]/, "", $2); name = $2 }
       /"duration_ms":/ { gsub(/,/, "", $2); if (name == "deploy") print $2 }' "$1" | tail -n 1
}

# host_port ENGINE CONTAINER: the IPv4 host port Docker published for the container's 8080.
# (Engine 20.10 may publish a different port on IPv6: "0.0.0.0:32877" and "[::]:32876".)
host_port() {
  docker -H "$1" port "$2" 8080/tcp 2>/dev/null |
    sed -n 's/^[0-9.][0-9.]*:\([0-9][0-9]*\)$/\1/p' | head -n 1 || true
}

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

# One-line commit: a new unique line in the page.
commit_line() {
  printf '<p>%s</p>\n' "$1" >>"$REPO/www/index.html"
  git_in "$REPO" commit -q -a -m "bench: $1"
}

# ------------------------------------------------------------------ probes
# A probe loop runs in the background and writes "ms ok" or "ms fail-REASON" per request
# (ms: when the answer came) to OUT, every PROBE_SLEEP, until STOP exists or PROBE_LIMIT_MS pass.

# probe_url URL OUT STOP: a client of a fixed address.
# An open loop: a probe starts every 20 ms whether or not the last one has answered,
# so one connection that stalls (a SYN the engine drops while the new container's
# network comes up is retried after 1 s) is counted as a failed probe without hiding
# the probes after it. Each line is "START_MS RESULT"; lines may land out of order.
probe_url() {
  local url=$1 out=$2 stop=$3 start tick
  start=$(now_ms)
  while [ ! -e "$stop" ]; do
    tick=$(now_ms)
    {
      if curl -s -f -m 1 --noproxy '*' -o /dev/null "$url" 2>/dev/null; then
        echo "$tick ok"
      else
        echo "$tick fail-http"
      fi
    } >>"$out" &
    [ $((tick - start)) -lt "$PROBE_LIMIT_MS" ] || break
    sleep "$PROBE_SLEEP"
  done
  wait
}

# probe_healthy PIPELINE OUT STOP: a Docker-aware proxy: the newest container of the
# pipeline that the engine reports healthy (`docker ps` lists the newest first), at its
# IPv4 published port for 8080 ("0.0.0.0:32877->8080/tcp, [::]:32876->8080/tcp").
probe_healthy() {
  local pipeline=$1 out=$2 stop=$3 start now result port
  start=$(now_ms)
  while [ ! -e "$stop" ]; do
    port=$(docker ps --filter "label=gantry.pipeline=$pipeline" --filter health=healthy \
      --format '{{.Ports}}' 2>/dev/null | head -n 1 | tr ',' '\n' |
      sed -n 's/^ *[0-9.][0-9.]*:\([0-9][0-9]*\)->8080\/tcp$/\1/p' | head -n 1) || port=''
    if [ -z "$port" ]; then
      result=fail-none
    elif curl -s -f -m 1 --noproxy '*' -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
      result=ok
    else
      result=fail-http
    fi
    now=$(now_ms)
    echo "$now $result" >>"$out"
    [ $((now - start)) -lt "$PROBE_LIMIT_MS" ] || break
    sleep "$PROBE_SLEEP"
  done
}

# probed_redeploy KIND TARGET PIPELINE OUT: start a probe (KIND url|healthy), wait for its
# first success, `gantry deploy --force PIPELINE`, let the probe run PROBE_TAIL more, stop it.
# Sets REDEPLOY_MS to the deploy's wall-clock ms. (Not run in a subshell: the cleanup
# must know PROBE_PID.)
probed_redeploy() {
  local kind=$1 target=$2 pipeline=$3 out=$4 stop="$4.stop" start end deadline
  : >"$out"
  rm -f "$stop"
  case "$kind" in
    url) probe_url "$target" "$out" "$stop" & ;;
    healthy) probe_healthy "$target" "$out" "$stop" & ;;
  esac
  PROBE_PID=$!
  deadline=$(($(now_ms) + 10000))
  until grep -q ' ok$' "$out"; do
    [ "$(now_ms)" -lt "$deadline" ] || { touch "$stop"; die "the $kind probe never succeeded before the redeploy"; }
    sleep 0.05
  done
  start=$(now_ms)
  gantry_json "$out.json" deploy "$pipeline" --force
  end=$(now_ms)
  sleep "$PROBE_TAIL"
  touch "$stop"
  wait "$PROBE_PID" || true
  PROBE_PID=''
  [ "$(updated_count "$out.json")" -eq 1 ] || die "the redeploy of $pipeline updated no instance"
  REDEPLOY_MS=$((end - start))
}

# longest_gap OUT: the longest time between the starts of two consecutive successful
# probes, counting up to the last probe when the last ones failed.
longest_gap() {
  sort -n "$1" | awk '$2 == "ok" { if (last != "" && $1 - last > max) max = $1 - last; last = $1 }
       { final = $1 }
       END { if (final - last > max) max = final - last; print max + 0 }'
}
failed_probes() { grep -c ' fail' "$1" || true; }
total_probes() { wc -l <"$1" | tr -d ' '; }

# ------------------------------------------------------------------ 1. fan-out
FAN="$PREFIX-fan"
declare -A fan_median fan_stage
fan_detail=''
for n in "${FAN_OUT[@]}"; do
  instances=()
  for i in $(seq "$n"); do instances+=("$PREFIX-fan-h$i=h$i"); done
  write_pipeline "$FAN" 8080 http "${instances[@]}"
  if [ "$n" -eq "${FAN_OUT[0]}" ]; then
    log "fan-out: build and first deploy (gantry run) on $n host(s)"
    gantry_json "$WORK/fan-warmup.json" run "$FAN"
  else
    log "fan-out: warm-up deploy on $n hosts (pulls the image on the new ones)"
    gantry_json "$WORK/fan-warmup.json" deploy "$FAN" --force
  fi
  [ "$(updated_count "$WORK/fan-warmup.json")" -eq "$n" ] || die "warm-up did not update $n instances"
  times=()
  stages=()
  for r in $(seq "$RUNS"); do
    start=$(now_ms)
    gantry_json "$WORK/fan-$n-$r.json" deploy "$FAN" --force
    end=$(now_ms)
    [ "$(updated_count "$WORK/fan-$n-$r.json")" -eq "$n" ] ||
      die "deploy --force on $n hosts did not update $n instances"
    times+=($((end - start)))
    stages+=("$(deploy_stage_ms "$WORK/fan-$n-$r.json")")
  done
  fan_median[$n]=$(printf '%s\n' "${times[@]}" | median)
  fan_stage[$n]=$(printf '%s\n' "${stages[@]}" | median)
  fan_detail+="    $n host(s), per run (ms): ${times[*]} (deploy stage median ${fan_stage[$n]} ms)"$'\n'
  log "fan-out $n host(s): ${times[*]} ms"
done
# Reference: how the engines themselves scale on this machine. `docker run -d` of the
# same (already pulled) image on 1 and on 8 engines at once, with the docker CLI.
FAN_IMAGE="$(sed -n 's/^ *"repository": "\([^"]*\)".*/\1/p' "$WORK/fan-$MAX_HOSTS-1.json" | head -n 1)@$(
  sed -n 's/^ *"digest": "\(sha256:[0-9a-f]*\)".*/\1/p' "$WORK/fan-$MAX_HOSTS-1.json" | head -n 1)"
declare -A cli_fan_median
for n in 1 "$MAX_HOSTS"; do
  times=()
  for r in $(seq "$RUNS"); do
    start=$(now_ms)
    for i in $(seq "$n"); do
      docker -H "${ENGINES[$i]}" run -d --name "$PREFIX-clifan-$i-$r" --label "gantry.pipeline=$FAN" \
        -p 0:8080 "$FAN_IMAGE" >>"$LOG" 2>&1 &
    done
    wait
    times+=($(($(now_ms) - start)))
    for i in $(seq "$n"); do remove_containers "${ENGINES[$i]}" "$FAN"; done
  done
  cli_fan_median[$n]=$(printf '%s\n' "${times[@]}" | median)
  log "reference: docker run -d on $n engine(s) at once: ${times[*]} ms"
done
for engine in "${ENGINES[@]}"; do remove_containers "$engine" "$FAN"; done
fan_ratio=$(ratio "${fan_median[8]}" "${fan_median[1]}")
cli_fan_ratio=$(ratio "${cli_fan_median[$MAX_HOSTS]}" "${cli_fan_median[1]}")

# ------------------------------------------------------------------ 2. downtime, fixed host port
FIXED="$PREFIX-fixed"
FIXED_PORT=$(free_port)
write_pipeline "$FIXED" "$FIXED_PORT:8080" http "$PREFIX-fixed=local"
log "downtime, fixed host port $FIXED_PORT: build and first deploy"
gantry_json "$WORK/fixed-warmup.json" run "$FIXED"
fixed_gaps=()
fixed_fails=0
fixed_total=0
fixed_deploys=()
for r in $(seq "$RUNS"); do
  out="$WORK/fixed-$r.probes"
  probed_redeploy url "http://127.0.0.1:$FIXED_PORT/" "$FIXED" "$out"
  ms=$REDEPLOY_MS
  gap=$(longest_gap "$out")
  fails=$(failed_probes "$out")
  fixed_gaps+=("$gap")
  fixed_deploys+=("$ms")
  fixed_fails=$((fixed_fails + fails))
  fixed_total=$((fixed_total + $(total_probes "$out")))
  log "fixed port run $r/$RUNS: longest gap $gap ms, $fails failed probe(s), deploy $ms ms"
done
fixed_gap_median=$(printf '%s\n' "${fixed_gaps[@]}" | median)
fixed_gap_max=$(printf '%s\n' "${fixed_gaps[@]}" | maximum)
remove_containers "$DOCKER_HOST" "$FIXED"

# ------------------------------------------------------------------ 4. push-to-live
# (before 3, which adds a HEALTHCHECK to the image: these images have none)
LIVE="$PREFIX-live"
write_pipeline "$LIVE" 8080 http "$PREFIX-live=local"
marker_id=0

# live_gantry: sets LIVE_SERVED, ms from the start of `gantry run` to the first time the
# instance's container serves the new line (polled while gantry runs: the new container
# serves as soon as it started, before the old one has finished its graceful stop),
# LIVE_EXIT, ms to gantry's exit, and LIVE_STAGE, its deploy stage.
live_gantry() {
  local text start pid port body served='' deadline status=0
  marker_id=$((marker_id + 1))
  text="bench $PREFIX line $marker_id (gantry)"
  commit_line "$text"
  start=$(now_ms)
  "$GANTRY" -c "$CONFIG" --json run "$LIVE" >"$WORK/live-$marker_id.json" 2>>"$LOG" &
  pid=$!
  deadline=$((start + PROBE_LIMIT_MS))
  while [ -z "$served" ] && [ "$(now_ms)" -lt "$deadline" ]; do
    port=$(host_port "$DOCKER_HOST" "$PREFIX-live")
    if [ -n "$port" ]; then
      body=$(fetch "http://127.0.0.1:$port/")
      case "$body" in *"$text"*) served=$(($(now_ms) - start)) ;; esac
    fi
    [ -n "$served" ] || sleep "$PROBE_SLEEP"
  done
  wait "$pid" || status=$?
  LIVE_EXIT=$(($(now_ms) - start))
  [ "$status" -eq 0 ] || { tail -n 30 "$LOG" >&2; die "gantry run $LIVE failed"; }
  [ -n "$served" ] || die "gantry: the new line was never served"
  LIVE_SERVED=$served
  LIVE_STAGE=$(deploy_stage_ms "$WORK/live-$marker_id.json")
}

# live_cli: sets LIVE_CLI, ms from the clone to the new line served by the new container.
live_cli() {
  local text sha tag dir="$WORK/cli-checkout" start port deadline
  marker_id=$((marker_id + 1))
  text="bench $PREFIX line $marker_id (cli)"
  commit_line "$text"
  sha=$(git_in "$REPO" rev-parse HEAD)
  tag=${sha:0:7}
  rm -rf "$dir"
  start=$(now_ms)
  {
    git clone -q --depth 1 "file://$REPO" "$dir" &&
      docker build -q -t "$CLI_IMAGE:$tag" "$dir" &&
      docker push "$CLI_IMAGE:$tag" &&
      docker pull "$CLI_IMAGE:$tag" &&
      docker rm -f "$CLI_CONTAINER" &&
      docker run -d --name "$CLI_CONTAINER" -p 0:8080 "$CLI_IMAGE:$tag"
  } >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "CLI sequence failed"; }
  port=''
  deadline=$(($(now_ms) + PROBE_LIMIT_MS))
  while [ -z "$port" ] && [ "$(now_ms)" -lt "$deadline" ]; do
    port=$(host_port "$DOCKER_HOST" "$CLI_CONTAINER")
    [ -n "$port" ] || sleep "$PROBE_SLEEP"
  done
  [ -n "$port" ] || die "no published port for $CLI_CONTAINER"
  wait_for_text "http://127.0.0.1:$port/" "$text" || die "CLI: the new line was never served"
  LIVE_CLI=$(($(now_ms) - start))
}

log "push-to-live: warm-up of each side"
live_gantry
live_first_exit=$LIVE_EXIT
live_first_gantry=$LIVE_SERVED
live_cli
live_first_cli=$LIVE_CLI
live_exit=()
live_gantry_ms=()
live_stage=()
live_cli_ms=()
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
  live_exit+=("$LIVE_EXIT")
  live_gantry_ms+=("$LIVE_SERVED")
  live_stage+=("$LIVE_STAGE")
  live_cli_ms+=("$LIVE_CLI")
  log "push-to-live run $r/$RUNS: gantry $LIVE_SERVED ms (exits at $LIVE_EXIT ms), CLI $LIVE_CLI ms ($order)"
done
live_exit_median=$(printf '%s\n' "${live_exit[@]}" | median)
live_gantry_median=$(printf '%s\n' "${live_gantry_ms[@]}" | median)
live_stage_median=$(printf '%s\n' "${live_stage[@]}" | median)
live_cli_median=$(printf '%s\n' "${live_cli_ms[@]}" | median)
live_ratio=$(ratio "$live_gantry_median" "$live_cli_median")
remove_containers "$DOCKER_HOST" "$LIVE"
docker rm -f "$CLI_CONTAINER" >/dev/null 2>&1 || true

# ------------------------------------------------------------------ 3. no fixed host port
DOCKERHC="$PREFIX-dockerhc"
cat >>"$REPO/Dockerfile" <<'EOF'
HEALTHCHECK --interval=200ms --timeout=2s --retries=1 CMD ["wget","-q","-O","/dev/null","http://127.0.0.1:8080/healthz"]
EOF
git_in "$REPO" commit -q -a -m "bench: HEALTHCHECK"
write_pipeline "$DOCKERHC" 8080 docker "$PREFIX-dockerhc=local"
log "no fixed host port, Docker health: build and first deploy"
gantry_json "$WORK/dockerhc-warmup.json" run "$DOCKERHC"
hc_fails=0
hc_none=0
hc_total=0
hc_runs=''
for r in $(seq "$RUNS"); do
  out="$WORK/dockerhc-$r.probes"
  probed_redeploy healthy "$DOCKERHC" "$DOCKERHC" "$out"
  ms=$REDEPLOY_MS
  fails=$(failed_probes "$out")
  none=$(grep -c ' fail-none' "$out" || true)
  total=$(total_probes "$out")
  hc_fails=$((hc_fails + fails))
  hc_none=$((hc_none + none))
  hc_total=$((hc_total + total))
  hc_runs+="${hc_runs:+, }$fails/$total"
  log "docker health run $r/$RUNS: $fails of $total probes failed ($none found no healthy container), deploy $ms ms"
done
remove_containers "$DOCKER_HOST" "$DOCKERHC"

# ------------------------------------------------------------------ report
engine=$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')
revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || revision+="+changes"

cat <<EOF

gantry deploy benchmark ($RUNS measured runs after one warm-up each; times are wall clock)
  fan-out, \`gantry deploy --force\`, one instance per host, batch 8:
$fan_detail  fixed host port, longest gap per run (ms): ${fixed_gaps[*]}; deploys (ms): ${fixed_deploys[*]}
  fixed host port, failed probes: $fixed_fails of $fixed_total
  no fixed host port, failed/total probes per run: $hc_runs ($hc_none found no healthy container)
  push-to-live, gantry per run (ms): ${live_gantry_ms[*]} (run exits: ${live_exit[*]})
  push-to-live, CLI per run (ms):    ${live_cli_ms[*]}
  push-to-live, gantry deploy stage median: $live_stage_median ms
  first runs (warm-up): gantry $live_first_gantry ms (exit $live_first_exit ms), CLI $live_first_cli ms

| Figure | Value |
| --- | --- |
| \`gantry deploy --force\`, 1 instance on 1 host (median of $RUNS) | ${fan_median[1]} ms |
| \`gantry deploy --force\`, 1 instance on each of 2 hosts | ${fan_median[2]} ms |
| \`gantry deploy --force\`, 1 instance on each of 4 hosts | ${fan_median[4]} ms |
| \`gantry deploy --force\`, 1 instance on each of 8 hosts | ${fan_median[8]} ms |
| Ratio 8 hosts / 1 host (goal ≤ 1.5) | $fan_ratio ($(goal "$fan_ratio" le 1.5)) |
| Reference: \`docker run -d\` of the same image on 1 / 8 engines at once (median of $RUNS) | ${cli_fan_median[1]} / ${cli_fan_median[$MAX_HOSTS]} ms, ratio $cli_fan_ratio |
| Longest gap between successful probes during a forced redeploy, fixed host port; a probe starts every 20 ms with a 1 s timeout (median / max of $RUNS; goal < 1 s) | $fixed_gap_median / $fixed_gap_max ms ($(goal "$fixed_gap_max" lt 1000)) |
| Probes that failed during those redeploys (connections refused while no container held the port, or stalled while the new one started) | $fixed_fails of $fixed_total |
| Failed requests during $RUNS forced redeploys, no fixed host port, newest healthy container (goal 0) | $hc_fails of $hc_total ($(goal "$hc_fails" eq 0)) |
| \`gantry run\` of a one-line commit until the new page is served (median of $RUNS) | $live_gantry_median ms (exits at $live_exit_median ms) |
| Same with git + docker CLI: \`clone --depth 1\`, \`build\`, \`push\`, \`pull\`, \`rm -f\`, \`run\`, poll (median of $RUNS) | $live_cli_median ms |
| Ratio gantry / CLI (goal ≤ 1.0) | $live_ratio ($(goal "$live_ratio" le 1.0)) |

Measured on $(nproc) CPU(s), Docker engine $engine (classic builder on both sides), $MAX_HOSTS extra
engines in network namespaces, local registry $REGISTRY, gantry $revision, fixtures/hello
(busybox httpd, stop_timeout 1s, health checked every 100 ms).
EOF
