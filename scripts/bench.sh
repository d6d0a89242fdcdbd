#!/usr/bin/env bash
# Benchmark (not a test): prints figures for the README.
#   - gantry build of a one-line commit vs the same work done with git + the docker CLI
#   - gantry validate on a config dir of 200 pipelines
#   - release binary size, stripped size, and peak RSS of one gantry build
# Everything talks to the loopback registry and the local engine only.
#
#   BENCH_RUNS=5      measured build iterations (after one untimed warm-up of each side)
#   GANTRY_BIN=path   benchmark this binary instead of building target/release/gantry
#   BENCH_LOG=file    keep the output of every build and push there
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS="${BENCH_RUNS:-5}"
VALIDATE_RUNS=10
VALIDATE_PIPELINES=200
case "$RUNS" in '' | *[!0-9]* | 0) echo "bench: BENCH_RUNS must be a positive integer" >&2; exit 2 ;; esac

# The engine test-env.sh starts; gantry and the docker CLI must talk to the same one.
export DOCKER_HOST=unix:///var/run/docker.sock
# gantry drives the engine's classic builder through the API; the CLI must use the
# same builder, or the comparison measures BuildKit against it.
export DOCKER_BUILDKIT=0

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

WORK=''
REGISTRY=''
cleanup() {
  local status=$?
  # Only the local images this script tagged: everything under REGISTRY/bench/.
  if [ -n "$REGISTRY" ]; then
    docker image ls --digests --format '{{.Repository}} {{.Tag}} {{.Digest}}' 2>/dev/null |
      while read -r repo tag digest; do
        case "$repo" in "$REGISTRY/bench/"*) ;; *) continue ;; esac
        [ "$tag" = '<none>' ] || docker rmi "$repo:$tag" >/dev/null 2>&1 || true
        [ "$digest" = '<none>' ] || docker rmi "$repo@$digest" >/dev/null 2>&1 || true
      done
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ setup
log "test environment"
bash scripts/test-env.sh >/dev/null
STATE="${GANTRY_TEST_ENV_DIR:-/var/lib/gantry-test-env}"
# shellcheck source=/dev/null
source "$STATE/env"
REGISTRY="${GANTRY_TEST_REGISTRY:-127.0.0.1:5115}"

if [ -n "${GANTRY_BIN:-}" ]; then
  GANTRY=$GANTRY_BIN
else
  log "cargo build --release"
  cargo build --release --quiet
  GANTRY="$ROOT/target/release/gantry"
fi
[ -x "$GANTRY" ] || die "no gantry binary at $GANTRY"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench.XXXXXX")
REPO="$WORK/repo"
CONFIG="$WORK/config"
# Every command's output; kept only when BENCH_LOG names a file outside the work dir.
LOG="${BENCH_LOG:-$WORK/bench.log}"
GANTRY_IMAGE="$REGISTRY/bench/gantry"
CLI_IMAGE="$REGISTRY/bench/cli"

mkdir -p "$REPO"
cp -R fixtures/hello/. "$REPO/"
git_in "$REPO" init -q
git_in "$REPO" symbolic-ref HEAD refs/heads/main
git_in "$REPO" add -A
git_in "$REPO" commit -q -m "bench: fixture"

mkdir -p "$CONFIG/pipelines"
cat >"$CONFIG/pipelines/hello.yaml" <<EOF
source:
  repo: file://$REPO
  branch: main
build:
  context: .
  dockerfile: Dockerfile
  args: { VERSION: "{{ commit.short }}" }
image:
  repository: $GANTRY_IMAGE
  tags: ["{{ commit.short }}", latest]
EOF

# One-line commit: what a developer's push looks like to the runner.
commit_change() {
  printf '<!-- bench change %s -->\n' "$1" >>"$REPO/www/index.html"
  git_in "$REPO" commit -q -a -m "bench: change $1"
}

# head_short: the 7-character id gantry puts in `{{ commit.short }}`.
head_short() {
  local sha
  sha=$(git_in "$REPO" rev-parse HEAD)
  echo "${sha:0:7}"
}

# time_gantry JSON_OUT: ms for one gantry build of the branch head.
time_gantry() {
  local start end
  start=$(now_ms)
  "$GANTRY" -c "$CONFIG" --json build hello >"$1" 2>>"$LOG" ||
    { tail -n 30 "$LOG" >&2; die "gantry build failed"; }
  end=$(now_ms)
  echo $((end - start))
}

# time_cli: ms for the same work by hand: shallow clone, build with the same args
# and labels gantry sets (so the Dockerfile steps are the same), tag, push both tags.
time_cli() {
  local sha short dir="$WORK/cli-checkout" start end
  sha=$(git_in "$REPO" rev-parse HEAD)
  short=${sha:0:7}
  rm -rf "$dir"
  start=$(now_ms)
  {
    git clone -q --depth 1 --branch main "file://$REPO" "$dir" &&
      docker build -q -t "$CLI_IMAGE:$short" --build-arg "VERSION=$short" \
        --label gantry.pipeline=hello \
        --label "org.opencontainers.image.revision=$sha" \
        --label "org.opencontainers.image.source=file://$REPO" "$dir" &&
      docker tag "$CLI_IMAGE:$short" "$CLI_IMAGE:latest" &&
      docker push -q "$CLI_IMAGE:$short" &&
      docker push -q "$CLI_IMAGE:latest"
  } >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "CLI build/push failed"; }
  end=$(now_ms)
  echo $((end - start))
}

# forget_build IMAGE SHORT: untag (and so delete) one side's image of this commit,
# untimed. Otherwise whichever side goes second finds the first one's steps in the
# build cache (ENV HELLO_VERSION=SHORT is the same for both) and does less work.
forget_build() {
  docker rmi "$1:$2" "$1:latest" >/dev/null 2>&1 || true
}

# stage_times JSON: "name ms" for each stage of a gantry --json report.
stage_times() {
  awk '/"name":/ { gsub(/[",]/, "", $2); name = $2 }
       /"duration_ms":/ { gsub(/,/, "", $2); print name, $2 }' "$1"
}

# ------------------------------------------------------------------ build vs CLI
log "warm-up: first gantry build (new git cache) and first CLI build"
commit_change warmup-gantry
first_gantry=$(time_gantry "$WORK/warmup.json")
forget_build "$GANTRY_IMAGE" "$(head_short)"
commit_change warmup-cli
first_cli=$(time_cli)
forget_build "$CLI_IMAGE" "$(head_short)"

gantry_ms=()
cli_ms=()
: >"$WORK/stages.txt"
for i in $(seq "$RUNS"); do
  commit_change "$i"
  short=$(head_short)
  # Alternate who goes first, so neither side always meets a just-warmed engine.
  if [ $((i % 2)) -eq 1 ]; then
    g=$(time_gantry "$WORK/run-$i.json"); forget_build "$GANTRY_IMAGE" "$short"
    c=$(time_cli); forget_build "$CLI_IMAGE" "$short"
    order="gantry first"
  else
    c=$(time_cli); forget_build "$CLI_IMAGE" "$short"
    g=$(time_gantry "$WORK/run-$i.json"); forget_build "$GANTRY_IMAGE" "$short"
    order="CLI first"
  fi
  gantry_ms+=("$g")
  cli_ms+=("$c")
  stage_times "$WORK/run-$i.json" >>"$WORK/stages.txt"
  log "run $i/$RUNS: gantry $g ms, CLI $c ms ($order)"
done

gantry_median=$(printf '%s\n' "${gantry_ms[@]}" | median)
cli_median=$(printf '%s\n' "${cli_ms[@]}" | median)
ratio=$(awk -v g="$gantry_median" -v c="$cli_median" 'BEGIN { printf "%.2f", g / c }')
stages=''
for stage in checkout context build push; do
  ms=$(awk -v s="$stage" '$1 == s { print $2 }' "$WORK/stages.txt" | median)
  stages+="${stages:+, }$stage $ms ms"
done

# ------------------------------------------------------------------ validate
log "gantry validate: $VALIDATE_PIPELINES pipelines, $VALIDATE_RUNS runs"
MANY="$WORK/config-many"
mkdir -p "$MANY/pipelines"
for n in $(seq -w 1 "$VALIDATE_PIPELINES"); do
  cat >"$MANY/pipelines/app-$n.yaml" <<EOF
source:
  repo: file://$REPO
  branch: main
build:
  context: .
  dockerfile: Dockerfile
  args: { VERSION: "{{ commit.short }}", APP: "app-$n" }
image:
  repository: $REGISTRY/bench/validate/app-$n
  tags: ["{{ commit.short }}", "build-{{ run.number }}", latest]
EOF
done
out=$("$GANTRY" -c "$MANY" validate) || die "validate of $MANY failed: $out"
case "$out" in *"$VALIDATE_PIPELINES pipeline(s)"*) ;; *) die "validate counted: $out" ;; esac
validate_ms=()
validate_one_ms=()
for _ in $(seq "$VALIDATE_RUNS"); do
  start=$(now_ms)
  "$GANTRY" -c "$MANY" validate >/dev/null
  end=$(now_ms)
  validate_ms+=($((end - start)))
  start=$(now_ms)
  "$GANTRY" -c "$CONFIG" validate >/dev/null
  end=$(now_ms)
  validate_one_ms+=($((end - start)))
done
validate_median=$(printf '%s\n' "${validate_ms[@]}" | median)
validate_one_median=$(printf '%s\n' "${validate_one_ms[@]}" | median)

# ------------------------------------------------------------------ size and memory
size_bytes=$(stat -c %s "$GANTRY")
cp "$GANTRY" "$WORK/gantry-stripped"
strip "$WORK/gantry-stripped"
stripped_bytes=$(stat -c %s "$WORK/gantry-stripped")

rss=''
if [ -x /usr/bin/time ]; then
  log "peak RSS of one gantry build"
  commit_change rss
  /usr/bin/time -v -o "$WORK/time.txt" "$GANTRY" -c "$CONFIG" build hello >>"$LOG" 2>&1 ||
    { tail -n 30 "$LOG" >&2; die "gantry build (RSS) failed"; }
  rss_kib=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): *//p' "$WORK/time.txt")
  [ -z "$rss_kib" ] || rss=$(mib $((rss_kib * 1024)))
else
  log "/usr/bin/time not found: peak RSS skipped"
fi

# ------------------------------------------------------------------ report
engine=$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')
revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || revision+="+changes"

cat <<EOF

gantry benchmark ($RUNS measured runs after one warm-up each; times are wall clock)
  gantry build, per run (ms):   ${gantry_ms[*]}
  CLI equivalent, per run (ms): ${cli_ms[*]}
  gantry stages (median):       $stages
  first runs (warm-up):         gantry $first_gantry ms (new git cache), CLI $first_cli ms
  validate, 1 pipeline:         $validate_one_median ms (median of $VALIDATE_RUNS)

| Figure | Value |
| --- | --- |
| \`gantry build\` of a one-line commit, 2 tags pushed (median of $RUNS) | $gantry_median ms |
| Same work with git + docker CLI: \`clone --depth 1\`, \`build\`, \`tag\`, 2 × \`push\` (median of $RUNS) | $cli_median ms |
| Ratio gantry / CLI | $ratio |
| \`gantry validate\`, $VALIDATE_PIPELINES pipelines (median of $VALIDATE_RUNS) | $validate_median ms |
| Release binary size | $(mib "$size_bytes") MiB |
| Release binary size, stripped | $(mib "$stripped_bytes") MiB |
EOF
if [ -n "$rss" ]; then
  echo "| Peak RSS of one \`gantry build\` | $rss MiB |"
fi
cat <<EOF

Measured on $(nproc) CPU(s), Docker engine $engine (classic builder on both sides),
local registry $REGISTRY, gantry $revision, fixtures/hello.
EOF
