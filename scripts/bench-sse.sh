#!/usr/bin/env bash
# Benchmark (not a test): BENCH_FOLLOWERS clients follow one live run log as
# server-sent events (`GET /api/v1/runs/ID/log`, `Accept: text/event-stream`) while the
# run builds; every follower must receive every stored line, in order, and the `end`.
# Traffic goes to loopback only (the daemon, the local engine, the registry).
#
#   BENCH_FOLLOWERS=100   clients following at once
#   GANTRY_BIN=path       use this binary instead of `cargo build --release`
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

FOLLOWERS="${BENCH_FOLLOWERS:-100}"
case "$FOLLOWERS" in '' | *[!0-9]* | 0) echo "bench: BENCH_FOLLOWERS must be a positive integer" >&2; exit 2 ;; esac
TOKEN=bench-sse-token
export DOCKER_HOST=unix:///var/run/docker.sock
export DOCKER_BUILDKIT=0

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

WORK=''
DAEMON_PID=''
IMAGE=''
cleanup() {
  local status=$?
  if [ -n "$DAEMON_PID" ]; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  # Only what this script built: the local images of its repository.
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

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-sse.XXXXXX")
NAME="bench-sse-$$"
IMAGE="$REGISTRY/bench/$NAME"
REPO="$WORK/repo"
CONFIG="$WORK/config"
mkdir -p "$REPO" "$CONFIG/pipelines"
cp -R fixtures/hello/. "$REPO/"
# A build that writes a line every 50 ms for a while, so the followers see a live log.
cat >"$REPO/Dockerfile" <<'EOF'
FROM gantry-test/busybox:latest
RUN i=0; while [ $i -lt 80 ]; do echo "line $i of a slow build"; i=$((i+1)); sleep 0.05; done
COPY www /www
EOF
git_in "$REPO" init -q
git_in "$REPO" symbolic-ref HEAD refs/heads/main
git_in "$REPO" add -A
git_in "$REPO" commit -q -m "bench: a slow build"
cat >"$CONFIG/gantry.yaml" <<EOF
server:
  token: $TOKEN
EOF
cat >"$CONFIG/pipelines/$NAME.yaml" <<EOF
source: { repo: $REPO, branch: main }
image: { repository: $IMAGE }
EOF

PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
GANTRY_LOG=warn "$GANTRY" -c "$CONFIG" serve --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do
  curl -fs -o /dev/null "$URL/healthz" && break
  sleep 0.1
done
answer=$(curl -fsS -X POST -H "Authorization: Bearer $TOKEN" "$URL/api/v1/pipelines/$NAME/trigger")
RUN_ID=$(printf '%s' "$answer" | sed -n 's/.*"run_id":\([0-9]*\).*/\1/p')
[ -n "$RUN_ID" ] || die "no run was queued: $answer"

log "$FOLLOWERS followers on run $RUN_ID"
start=$(now_ms)
for index in $(seq "$FOLLOWERS"); do
  curl -sN -m 120 -H "Authorization: Bearer $TOKEN" -H 'Accept: text/event-stream' \
    "$URL/api/v1/runs/$RUN_ID/log" >"$WORK/follower-$index.txt" 2>/dev/null &
done
wait_followers() {
  local pid
  for pid in $(jobs -p); do
    [ "$pid" = "$DAEMON_PID" ] || wait "$pid" || true
  done
}
wait_followers
elapsed=$(($(now_ms) - start))

stored=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$URL/api/v1/runs/$RUN_ID/log" |
  grep -o '"seq":[0-9]*' | wc -l | tr -d ' ')
state=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$URL/api/v1/runs/$RUN_ID" |
  sed -n 's/.*"state":"\([a-z]*\)".*/\1/p')
complete=0
min_lines=''
for index in $(seq "$FOLLOWERS"); do
  file="$WORK/follower-$index.txt"
  lines=$(grep -c '^event: line' "$file" || true)
  # In order, no gap: the sequence numbers run 0, 1, 2, ...
  in_order=$(grep -o '"seq":[0-9]*' "$file" | cut -d: -f2 | awk '$1 != NR - 1 { bad = 1 } END { print bad ? "no" : "yes" }')
  if [ "$lines" -eq "$stored" ] && [ "$in_order" = yes ] && grep -q '^event: end' "$file"; then
    complete=$((complete + 1))
  fi
  if [ -z "$min_lines" ] || [ "$lines" -lt "$min_lines" ]; then min_lines=$lines; fi
done

cat <<EOF

gantry SSE benchmark: $FOLLOWERS followers of one live run log (run $RUN_ID, $state)
  stored log lines:        $stored
  followers complete:      $complete of $FOLLOWERS (every line, in order, and the end event)
  fewest lines received:   $min_lines
  wall clock:              $elapsed ms from the first follower to the last one done

| Figure | Value |
| --- | --- |
| $FOLLOWERS SSE followers of one live log: followers that got every line, in order (goal: all) | $complete of $FOLLOWERS |
| Lines per follower (stored lines) | $stored |

Measured on $(nproc) CPU(s), loopback, gantry $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?').
EOF
[ "$complete" -eq "$FOLLOWERS" ] || die "$((FOLLOWERS - complete)) follower(s) missed lines"
