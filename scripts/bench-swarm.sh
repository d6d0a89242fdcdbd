#!/usr/bin/env bash
# Benchmark (not a test): a Swarm redeploy of 3 replicas by gantry against
# `docker service update --image` of the same digest, on the test Swarm that
# scripts/test-env.sh forms (scripts/test-env-swarm.sh: a manager and two workers, each
# a Docker engine in its own network namespace).
#
# Two services with the same spec run side by side: one gantry's (a pipeline with
# `swarm: { replicas: 3, update: { parallelism: 1, order: start-first, ... } }`), one made
# with `docker service create`. Each round moves both to the other of two digests built
# once, one side after the other (the side that goes first alternates), each timed until
# its command returns: gantry when Swarm reports the update completed and every task
# runs the digest, the CLI when its progress display says the service converged (it waits
# the update's monitor period after the last task, as Swarm does before `completed`).
#
#   BENCH_RUNS=5      rounds (after one untimed warm-up)
#   GANTRY_BIN=path   benchmark this binary instead of building target/release/gantry
#   BENCH_LOG=file    keep the output of every gantry and docker command there
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS="${BENCH_RUNS:-5}"
case "$RUNS" in '' | *[!0-9]* | 0) echo "bench: BENCH_RUNS must be a positive integer" >&2; exit 2 ;; esac
# The services' settings, the same on both sides.
REPLICAS=3
MONITOR=2s
HEALTH_INTERVAL=200ms
HEALTH_RETRIES=15   # gantry's `timeout: 3s` at a 200 ms interval

export DOCKER_BUILDKIT=0
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

PREFIX="bench-swarm-$$"
GANTRY_SERVICE="$PREFIX-web"
CLI_SERVICE="$PREFIX-cli"
NETWORK="$PREFIX-net"
WORK=''
REGISTRY=''
REPOSITORY=''
MANAGER=''

sdk() { docker -H "$MANAGER" "$@"; }

cleanup() {
  local status=$?
  if [ -n "$MANAGER" ]; then
    log "cleanup: services, network and images of $PREFIX"
    sdk service rm "$GANTRY_SERVICE" "$CLI_SERVICE" >/dev/null 2>&1 || true
    for _ in $(seq 30); do
      sdk network rm "$NETWORK" >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  if [ -n "$REPOSITORY" ]; then
    docker image ls --format '{{.Repository}}:{{.Tag}}' "$REPOSITORY" 2>/dev/null |
      xargs -r docker rmi >/dev/null 2>&1 || true
    delete_pushed "$REPOSITORY"
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ setup
STATE="${GANTRY_TEST_ENV_DIR:-/var/lib/gantry-test-env}"
# The manager as the env file names it, else where test-env-swarm.sh puts it.
swarm_manager() {
  # shellcheck source=/dev/null
  [ ! -f "$STATE/env" ] || source "$STATE/env"
  echo "${GANTRY_TEST_SWARM_MANAGER:-unix://$STATE/swarm/s1/docker.sock}"
}
swarm_up() {
  [ "$(docker -H "$(swarm_manager)" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ]
}
if ! swarm_up; then
  log "test environment with its Swarm"
  bash scripts/test-env.sh >/dev/null
  swarm_up || die "no active Swarm manager at $(swarm_manager) (GANTRY_TEST_SWARM=0?)"
fi
# shellcheck source=/dev/null
source "$STATE/env"
REGISTRY="${GANTRY_TEST_REGISTRY:-127.0.0.1:5115}"
MANAGER=$(swarm_manager)

use_gantry

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-swarm.XXXXXX")
REPO="$WORK/repo"
CONFIG="$WORK/config"
LOG="${BENCH_LOG:-$WORK/bench.log}"
REPOSITORY="$REGISTRY/bench/swarm-$$"

mkdir -p "$REPO" "$CONFIG/pipelines"
cp -R fixtures/hello/. "$REPO/"
echo yes >"$REPO/www/healthy"
git_in "$REPO" init -q
git_in "$REPO" symbolic-ref HEAD refs/heads/main
git_in "$REPO" add -A
git_in "$REPO" commit -q -m "bench: v1"

cat >"$CONFIG/gantry.yaml" <<EOF
hosts:
  local: { docker: "unix:///var/run/docker.sock" }
  swarm: { docker: "$MANAGER", swarm: true }
EOF
cat >"$CONFIG/pipelines/$PREFIX.yaml" <<EOF
source: { repo: "file://$REPO", branch: main }
image: { repository: $REPOSITORY, tags: ["{{ commit.short }}"] }
deploy:
  services:
    web:
      network: $NETWORK
      stop_timeout: 2s
      health: { exec: [test, -f, /www/healthy], interval: $HEALTH_INTERVAL, timeout: 3s }
      swarm:
        replicas: $REPLICAS
        update: { parallelism: 1, order: start-first, failure_action: rollback, monitor: $MONITOR }
      instances:
        $GANTRY_SERVICE: { host: swarm }
EOF
gantry() { "$GANTRY" --config "$CONFIG" "$@"; }

# Two digests: v1 and a one-line commit over it.
build_digest() {
  gantry build "$PREFIX" --json 2>>"$LOG" | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])'
}
DIGEST_A=$(build_digest)
echo v2 >"$REPO/www/index.html"
git_in "$REPO" commit -q -am "bench: v2"
DIGEST_B=$(build_digest)
[ -n "$DIGEST_A" ] && [ -n "$DIGEST_B" ] || die "gantry build gave no digest (log: $LOG)"
log "digests ${DIGEST_A:0:19} and ${DIGEST_B:0:19}"

# Both services at digest A: gantry's by a deploy, the CLI's by `service create`.
gantry deploy "$PREFIX" --image "$REPOSITORY@$DIGEST_A" >>"$LOG" 2>&1 || die "first gantry deploy failed (log: $LOG)"
sdk service create --quiet --name "$CLI_SERVICE" --replicas "$REPLICAS" --network "$NETWORK" \
  --health-cmd "test -f /www/healthy" --health-interval "$HEALTH_INTERVAL" \
  --health-timeout "$HEALTH_INTERVAL" --health-retries "$HEALTH_RETRIES" --health-start-period 0s \
  --stop-grace-period 2s --update-parallelism 1 --update-order start-first \
  --update-failure-action rollback --update-monitor "$MONITOR" --update-max-failure-ratio 0 \
  "$REPOSITORY@$DIGEST_A" >>"$LOG" 2>&1 || die "docker service create failed (log: $LOG)"

# time_gantry DIGEST / time_cli DIGEST: milliseconds until the side's service runs DIGEST.
time_gantry() {
  local start end
  start=$(now_ms)
  gantry deploy "$PREFIX" --image "$REPOSITORY@$1" >>"$LOG" 2>&1 || die "gantry deploy failed (log: $LOG)"
  end=$(now_ms)
  echo $((end - start))
}
time_cli() {
  local start end
  start=$(now_ms)
  sdk service update --image "$REPOSITORY@$1" "$CLI_SERVICE" >>"$LOG" 2>&1 || die "docker service update failed (log: $LOG)"
  end=$(now_ms)
  echo $((end - start))
}

GANTRY_MS=()
CLI_MS=()
target=$DIGEST_A
for round in $(seq 0 "$RUNS"); do
  if [ "$target" = "$DIGEST_A" ]; then target=$DIGEST_B; else target=$DIGEST_A; fi
  if [ $((round % 2)) -eq 0 ]; then
    g=$(time_gantry "$target"); c=$(time_cli "$target")
  else
    c=$(time_cli "$target"); g=$(time_gantry "$target")
  fi
  if [ "$round" -eq 0 ]; then
    log "warm-up: gantry $g ms, docker CLI $c ms"
    continue
  fi
  log "round $round: gantry $g ms, docker CLI $c ms"
  GANTRY_MS+=("$g")
  CLI_MS+=("$c")
done

gantry_median=$(printf '%s\n' "${GANTRY_MS[@]}" | median)
cli_median=$(printf '%s\n' "${CLI_MS[@]}" | median)
r=$(ratio "$gantry_median" "$cli_median")
cat <<EOF

Swarm redeploy of $REPLICAS replicas (parallelism 1, start-first, monitor $MONITOR), median of $RUNS
  gantry deploy --image REPO@DIGEST     $gantry_median ms   (${GANTRY_MS[*]})
  docker service update --image         $cli_median ms   (${CLI_MS[*]})
  ratio gantry / docker CLI             $r   (goal <= 1.2: $(goal "$r" le 1.2))
EOF
