#!/usr/bin/env bash
# Benchmark (not a test): BENCH_SOAK_RUNS runs in a row through one `gantry serve`, each
# a manual trigger of the pipeline (checkout, build from cache, push, deploy: the
# instance already runs the digest, so it is left as it is), one after another. Every
# BENCH_SOAK_EVERY runs it prints the daemon's resident memory and open file
# descriptors; at the end, their growth from the first sample (after a warm-up).
# Traffic goes to loopback only (the daemon, the local engine, the registry).
#
#   BENCH_SOAK_RUNS=1000   runs in all
#   BENCH_SOAK_EVERY=100   runs between samples
#   BENCH_SOAK_BUILDER=classic   build with the engine's classic builder (default: auto)
#   BENCH_SOAK_DEPLOY=0    runs that build and push only (default: 1, they deploy too)
#   BENCH_SOAK_MODE=held   the pipeline is pinned: each run is held at once (the queue,
#                          the store); =broken: each build fails at its first step
#   GANTRY_BIN=path        use this binary instead of `cargo build --release`
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS="${BENCH_SOAK_RUNS:-1000}"
EVERY="${BENCH_SOAK_EVERY:-100}"
WARMUP=20
RUN_LIMIT=120
TOKEN=bench-soak-token
for value in "$RUNS" "$EVERY"; do
  case "$value" in '' | *[!0-9]* | 0) echo "bench: BENCH_SOAK_RUNS and BENCH_SOAK_EVERY must be positive integers" >&2; exit 2 ;; esac
done
export DOCKER_HOST=unix:///var/run/docker.sock

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

WORK=''
DAEMON_PID=''
IMAGE=''
NAME="bench-soak-$$"
cleanup() {
  local status=$?
  [ -z "$DAEMON_PID" ] || stop_daemon "$DAEMON_PID" 60
  docker ps -aq --filter "label=gantry.pipeline=$NAME" | xargs -r docker rm -f >/dev/null 2>&1 || true
  if [ -n "$IMAGE" ]; then
    docker image ls --format '{{.ID}}' "$IMAGE" 2>/dev/null | sort -u |
      xargs -r docker rmi -f >/dev/null 2>&1 || true
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "test environment"
use_test_env
use_gantry

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-soak.XXXXXX")
IMAGE="$REGISTRY/bench/$NAME"
REPO="$WORK/repo"
CONFIG="$WORK/config"
mkdir -p "$REPO" "$CONFIG/pipelines"
cp -R fixtures/hello/. "$REPO/"
[ "${BENCH_SOAK_MODE:-}" != broken ] ||
  printf 'FROM gantry-test/busybox:latest\nRUN echo this build fails; exit 1\n' >"$REPO/Dockerfile"
git_in "$REPO" init -q
git_in "$REPO" symbolic-ref HEAD refs/heads/main
git_in "$REPO" add -A
git_in "$REPO" commit -q -m "bench: soak"
cat >"$CONFIG/gantry.yaml" <<EOF
server: { token: $TOKEN, keep_runs: 100 }
EOF
cat >"$CONFIG/pipelines/$NAME.yaml" <<EOF
source: { repo: $REPO, branch: main }
image: { repository: $IMAGE }
build: { builder: ${BENCH_SOAK_BUILDER:-auto} }
EOF
[ "${BENCH_SOAK_DEPLOY:-1}" = 0 ] || cat >>"$CONFIG/pipelines/$NAME.yaml" <<EOF
deploy:
  services:
    web:
      ports: ["8080"]
      health: { http: { port: 8080, path: /healthz }, interval: 100ms }
      instances: { $NAME-web: {} }
EOF

[ "${BENCH_SOAK_MODE:-}" != held ] || "$GANTRY" -c "$CONFIG" pin "$NAME" --reason soak >/dev/null
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
GANTRY_LOG=warn "$GANTRY" -c "$CONFIG" serve --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do
  curl -fs -o /dev/null "$URL/healthz" && break
  sleep 0.1
done

# one_run: trigger a run and wait until it ends; prints its state.
one_run() {
  local answer id state='' start
  answer=$(curl -fsS -X POST -H "Authorization: Bearer $TOKEN" "$URL/api/v1/pipelines/$NAME/trigger")
  id=$(printf '%s' "$answer" | sed -n 's/.*"run_id":\([0-9]*\).*/\1/p')
  [ -n "$id" ] || die "no run was queued: $answer"
  start=$(now_ms)
  while :; do
    state=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$URL/api/v1/runs/$id" |
      sed -n 's/.*"state":"\([a-z]*\)".*/\1/p')
    case "$state" in queued | running | '') ;; *) break ;; esac
    [ $(($(now_ms) - start)) -lt $((RUN_LIMIT * 1000)) ] || die "run $id still $state after ${RUN_LIMIT}s"
    sleep 0.05
  done
  echo "$state"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$DAEMON_PID/status"; }
fds() { find "/proc/$DAEMON_PID/fd" -mindepth 1 -maxdepth 1 | wc -l | tr -d ' '; }

log "warm-up: $WARMUP runs"
for _ in $(seq "$WARMUP"); do one_run >/dev/null; done
first_rss=$(rss_kib)
first_fds=$(fds)
printf '\n%8s %10s %8s %10s %10s\n' runs rss_kib fds failed seconds
printf '%8s %10s %8s %10s %10s\n' 0 "$first_rss" "$first_fds" 0 0
failed=0
start=$(now_ms)
samples="$first_rss"
for run in $(seq "$RUNS"); do
  state=$(one_run)
  [ "$state" = succeeded ] || failed=$((failed + 1))
  if [ $((run % EVERY)) -eq 0 ]; then
    rss=$(rss_kib)
    samples+=" $rss"
    printf '%8s %10s %8s %10s %10s\n' "$run" "$rss" "$(fds)" "$failed" $((($(now_ms) - start) / 1000))
  fi
done
last_rss=$(rss_kib)
last_fds=$(fds)
max_rss=$(printf '%s\n' $samples | sort -n | tail -n 1)

cat <<EOF

gantry soak: $RUNS runs in a row through one daemon (after $WARMUP warm-up runs), $(($(now_ms) - start)) ms
  resident memory: $first_rss KiB after the warm-up, $last_rss KiB at the end, at most $max_rss KiB ($(awk -v a="$first_rss" -v b="$last_rss" 'BEGIN { printf "%+.1f%%", (b - a) * 100 / a }'))
  open file descriptors: $first_fds after the warm-up, $last_fds at the end
  runs that did not succeed: $failed
Measured on $(nproc) CPU(s), gantry $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?').
EOF
