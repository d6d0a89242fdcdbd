#!/usr/bin/env bash
# Benchmark (not a test): an idle `gantry serve` with BENCH_IDLE_PIPELINES pipelines,
# each polling a repository of its own every 10 s. The first round of polls queues one
# run per pipeline (a build and a push of fixtures/hello, from the build cache after
# the first); once every run has ended, the daemon's resident memory and the CPU time
# it uses are measured over BENCH_IDLE_SECONDS. Traffic goes to loopback only (the
# daemon, the local engine, the registry); the repositories are local directories.
#
#   BENCH_IDLE_PIPELINES=100   pipelines (and repositories)
#   BENCH_IDLE_SECONDS=60      length of the measurement
#   GANTRY_BIN=path            use this binary instead of `cargo build --release`
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PIPELINES="${BENCH_IDLE_PIPELINES:-100}"
SECONDS_MEASURED="${BENCH_IDLE_SECONDS:-60}"
RUNS_LIMIT=900
for value in "$PIPELINES" "$SECONDS_MEASURED"; do
  case "$value" in '' | *[!0-9]* | 0) echo "bench: BENCH_IDLE_PIPELINES and BENCH_IDLE_SECONDS must be positive integers" >&2; exit 2 ;; esac
done
export DOCKER_HOST=unix:///var/run/docker.sock

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

WORK=''
DAEMON_PID=''
NAME="bench-idle-$$"
cleanup() {
  local status=$?
  [ -z "$DAEMON_PID" ] || stop_daemon "$DAEMON_PID" 60
  docker image ls --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep "/bench/$NAME-" |
    xargs -r docker rmi -f >/dev/null 2>&1 || true
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "test environment"
use_test_env
use_gantry

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-idle.XXXXXX")
CONFIG="$WORK/config"
mkdir -p "$CONFIG/pipelines"
TOKEN=bench-idle-token
cat >"$CONFIG/gantry.yaml" <<EOF
server: { token: $TOKEN }
EOF
log "$PIPELINES repositories and pipelines polling every 10s"
for index in $(seq "$PIPELINES"); do
  repo="$WORK/repos/$index"
  mkdir -p "$repo"
  cp -R fixtures/hello/. "$repo/"
  git_in "$repo" init -q
  git_in "$repo" symbolic-ref HEAD refs/heads/main
  git_in "$repo" add -A
  git_in "$repo" commit -q -m "bench: idle $index"
  cat >"$CONFIG/pipelines/$NAME-$index.yaml" <<EOF
source: { repo: $repo, branch: main, poll: 10s }
image: { repository: $REGISTRY/bench/$NAME-$index }
EOF
done

PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
GANTRY_LOG=warn "$GANTRY" -c "$CONFIG" serve --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do
  curl -fs -o /dev/null "$URL/healthz" && break
  sleep 0.1
done

# runs_in [STATE]: how many runs there are (in STATE); each run names its pipeline once.
runs_in() {
  curl -fsS -H "Authorization: Bearer $TOKEN" "$URL/api/v1/runs?limit=500${1:+&state=$1}" |
    grep -o '"pipeline":"' | wc -l | tr -d ' '
}
log "first round: one run per pipeline"
start=$(now_ms)
until [ "$(runs_in)" -ge "$PIPELINES" ] && [ "$(runs_in queued)" -eq 0 ] && [ "$(runs_in running)" -eq 0 ]; do
  kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 20 "$WORK/serve.log" >&2; die "gantry serve exited"; }
  [ $(($(now_ms) - start)) -lt $((RUNS_LIMIT * 1000)) ] || die "the first round did not end in ${RUNS_LIMIT}s"
  sleep 1
done
first_round=$(($(now_ms) - start))
succeeded=$(runs_in succeeded)

# cpu_ticks: the daemon's user + system time in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$DAEMON_PID/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$DAEMON_PID/status"; }
TICKS=$(getconf CLK_TCK)
log "measuring for ${SECONDS_MEASURED}s"
before=$(cpu_ticks)
t0=$(now_ms)
max_rss=0
series=''
for second in $(seq "$SECONDS_MEASURED"); do
  sleep 1
  rss=$(rss_kib)
  [ "$rss" -le "$max_rss" ] || max_rss=$rss
  [ $((second % 5)) -ne 1 ] || series+="${series:+ }$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')"
done
elapsed=$(($(now_ms) - t0))
used=$(($(cpu_ticks) - before))
end_rss=$(rss_kib)
cpu=$(awk -v t="$used" -v hz="$TICKS" -v ms="$elapsed" 'BEGIN { printf "%.2f", 100 * t / hz / (ms / 1000) }')
logged=$(grep -c . "$WORK/serve.log" || true)
log "resident memory (MiB) at 1 s, 6 s, 11 s ...: $series"

echo
echo "gantry idle: $PIPELINES pipelines polling every 10s; first round of runs ${first_round} ms ($succeeded succeeded)"
echo "| Figure | Value |"
echo "| --- | --- |"
echo "| Resident memory at the end / highest over ${SECONDS_MEASURED}s (goal < 25 MiB) | $(awk -v k="$end_rss" 'BEGIN { printf "%.1f", k / 1024 }') / $(awk -v k="$max_rss" 'BEGIN { printf "%.1f", k / 1024 }') MiB |"
echo "| CPU over ${SECONDS_MEASURED}s, share of one core (goal < 1 %) | $cpu % |"
echo "| Lines the daemon logged (warn and above) | $logged |"
echo
echo "Measured on $(nproc) CPU(s), gantry $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')."
