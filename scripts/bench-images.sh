#!/usr/bin/env bash
# Benchmark (not a test): two images from one commit (a web and a worker target of one
# multi-stage Dockerfile), built and pushed by `gantry build`, which builds them at once,
# against the docker CLI doing the same work one image after the other, and both
# images at once. Prints the medians and the ratios for the README.
# Everything talks to the loopback registry and the local engine only.
#
#   BENCH_RUNS=3      measured iterations per side (after one untimed warm-up of each)
#   BENCH_WORK_MB=64  random megabytes each target hashes in its own RUN step (CPU
#                     work with a small result, as a compile step has)
#   GANTRY_BIN=path   benchmark this binary instead of building target/release/gantry
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS="${BENCH_RUNS:-3}"
WORK_MB="${BENCH_WORK_MB:-64}"
case "$RUNS" in '' | *[!0-9]* | 0) echo "bench: BENCH_RUNS must be a positive integer" >&2; exit 2 ;; esac
case "$WORK_MB" in '' | *[!0-9]* | 0) echo "bench: BENCH_WORK_MB must be a positive integer" >&2; exit 2 ;; esac

export DOCKER_HOST=unix:///var/run/docker.sock
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

WORK=''
REGISTRY=''
cleanup() {
  local status=$?
  if [ -n "$REGISTRY" ]; then
    docker image ls --format '{{.Repository}}:{{.Tag}}' 2>/dev/null |
      while read -r reference; do
        case "$reference" in "$REGISTRY/bench-images/"*) docker rmi "$reference" >/dev/null 2>&1 || true ;; esac
      done
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "test environment"
use_test_env

use_gantry

# A docker CLI that builds with BuildKit (as gantry does on this engine): one with
# buildx, or one before 23, whose BuildKit client is built in.
CLI=''
if docker buildx version >/dev/null 2>&1; then
  CLI=docker
else
  for candidate in /usr/bin/docker $(type -ap docker); do
    major=$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || continue
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then CLI=$candidate; break; fi
  done
fi
[ -n "$CLI" ] || die "no docker CLI here builds with BuildKit (no buildx, no CLI before 23)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-images.XXXXXX")
REPO="$WORK/repo"
CONFIG="$WORK/config"
LOG="$WORK/bench.log"
BASE="$REGISTRY/bench-images"

mkdir -p "$REPO/www"
echo v1 >"$REPO/www/index.html"
# Each target does its own work after the shared stage: what a web and a worker image
# of one repository typically have (their own dependencies, their own assets).
cat >"$REPO/Dockerfile" <<EOF
FROM gantry-test/busybox:latest AS base
COPY www /www
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]

FROM base AS web
RUN cat /www/index.html >/stamp && dd if=/dev/urandom bs=1M count=$WORK_MB 2>/dev/null | sha256sum >/web.sum

FROM base AS worker
RUN cat /www/index.html >/stamp && dd if=/dev/urandom bs=1M count=$WORK_MB 2>/dev/null | sha256sum >/worker.sum
EOF
git_in "$REPO" init -q
git_in "$REPO" symbolic-ref HEAD refs/heads/main
git_in "$REPO" add -A
git_in "$REPO" commit -q -m "bench: two targets"

mkdir -p "$CONFIG/pipelines"
cat >"$CONFIG/pipelines/shop.yaml" <<EOF
source: { repo: "file://$REPO", branch: main }
images:
  web: { repository: "$BASE/gantry-web", target: web }
  worker: { repository: "$BASE/gantry-worker", target: worker }
EOF

commit_change() {
  printf '<!-- bench change %s -->\n' "$1" >>"$REPO/www/index.html"
  git_in "$REPO" commit -q -a -m "bench: change $1"
}

# time_gantry OUT: ms for one `gantry build` of both images of the head.
time_gantry() {
  local start end
  start=$(now_ms)
  "$GANTRY" -c "$CONFIG" --json build shop >"$1" 2>>"$LOG" ||
    { tail -n 30 "$LOG" >&2; die "gantry build failed"; }
  end=$(now_ms)
  echo $((end - start))
}

# cli_image SIDE TARGET SHORT DIR: build and push one target with the CLI.
cli_image() {
  local image="$BASE/$1-$2:$3"
  DOCKER_BUILDKIT=1 "$CLI" build -q --target "$2" -t "$image" "$4" >>"$LOG" 2>&1 &&
    docker push -q "$image" >>"$LOG" 2>&1
}

# time_cli MODE: ms for a shallow clone, then both targets built and pushed by the CLI,
# one after the other (`sequential`) or both at once (`parallel`).
time_cli() {
  local sha short dir="$WORK/checkout-$1" start end
  sha=$(git_in "$REPO" rev-parse HEAD)
  short=${sha:0:7}
  rm -rf "$dir"
  start=$(now_ms)
  git clone -q --depth 1 --branch main "file://$REPO" "$dir" >>"$LOG" 2>&1 || die "clone failed"
  if [ "$1" = sequential ]; then
    cli_image cli-seq web "$short" "$dir" && cli_image cli-seq worker "$short" "$dir" ||
      { tail -n 30 "$LOG" >&2; die "CLI build failed"; }
  else
    cli_image cli-par web "$short" "$dir" &
    local web=$!
    cli_image cli-par worker "$short" "$dir" || { tail -n 30 "$LOG" >&2; die "CLI build failed"; }
    wait "$web" || { tail -n 30 "$LOG" >&2; die "CLI build failed"; }
  fi
  end=$(now_ms)
  echo $((end - start))
}

SIDES=(gantry cli-sequential cli-parallel)
side_ms() {
  commit_change "$2-$1"
  case "$1" in
    gantry) time_gantry "$WORK/gantry-$2.json" ;;
    cli-sequential) time_cli sequential ;;
    cli-parallel) time_cli parallel ;;
  esac
}

log "warm-up: one untimed build of each side"
for side in "${SIDES[@]}"; do side_ms "$side" warmup >/dev/null; done
images=$(grep -c '"name": *"\(web\|worker\)"' "$WORK/gantry-warmup.json" || true)
[ "$images" -ge 2 ] || die "gantry did not build both images: $(cat "$WORK/gantry-warmup.json")"

declare -A times medians
for i in $(seq "$RUNS"); do
  line=''
  for k in 0 1 2; do
    side=${SIDES[$(((i + k) % 3))]}
    ms=$(side_ms "$side" "$i")
    times[$side]+="$ms "
    line+="${line:+, }$side $ms ms"
  done
  log "run $i/$RUNS: $line"
done
for side in "${SIDES[@]}"; do
  # shellcheck disable=SC2086 # one number per word
  medians[$side]=$(printf '%s\n' ${times[$side]} | median)
done
ratio_of() { awk -v a="${medians[$1]}" -v b="${medians[$2]}" 'BEGIN { printf "%.2f", a / b }'; }
sequential=$(ratio_of gantry cli-sequential)

cat <<EOF

two images from one commit (web and worker targets, ${WORK_MB} MiB hashed in each), $RUNS runs, medians
  gantry build (both at once)          ${medians[gantry]} ms
  docker CLI, one after the other      ${medians[cli-sequential]} ms
  docker CLI, both at once             ${medians[cli-parallel]} ms
  gantry / CLI one after the other     $sequential   (goal < 1: $(goal "$sequential" lt 1))
  gantry / CLI both at once            $(ratio_of gantry cli-parallel)
EOF
