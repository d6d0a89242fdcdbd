#!/usr/bin/env bash
# Benchmark (not a test): prints figures for the README.
#   - gantry build of a one-line commit vs the same work done with git + the docker CLI,
#     each with BuildKit and with the classic (legacy) builder, on the same engine
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
# Each side names its builder: gantry by `build.builder`, the CLI by DOCKER_BUILDKIT.
unset DOCKER_BUILDKIT

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
use_test_env

use_gantry

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench.XXXXXX")
REPO="$WORK/repo"
CONFIG="$WORK/config"
# Every command's output; kept only when BENCH_LOG names a file outside the work dir.
LOG="${BENCH_LOG:-$WORK/bench.log}"
GANTRY_IMAGE="$REGISTRY/bench/gantry"
GANTRY_CLASSIC_IMAGE="$REGISTRY/bench/gantry-classic"
CLI_IMAGE="$REGISTRY/bench/cli"
CLI_BUILDKIT_IMAGE="$REGISTRY/bench/cli-buildkit"

# A docker CLI that builds with BuildKit: the one on PATH when it has buildx (docker
# 23 and later need it for BuildKit), else one before 23, whose BuildKit client is
# built in (Debian's docker.io 20.10 installs /usr/bin/docker).
BUILDKIT_CLI=''
if docker buildx version >/dev/null 2>&1; then
  BUILDKIT_CLI=docker
else
  for candidate in /usr/bin/docker $(type -ap docker); do
    major=$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || continue
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then
      BUILDKIT_CLI=$candidate
      break
    fi
  done
fi
[ -n "$BUILDKIT_CLI" ] || die "no docker CLI here builds with BuildKit (no buildx, no CLI before 23)"

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
# The same pipeline on the classic builder (hello.yaml has the default, `auto`: BuildKit).
sed -e 's|^  dockerfile: Dockerfile$|&\n  builder: classic|' -e "s|$GANTRY_IMAGE\$|$GANTRY_CLASSIC_IMAGE|" \
  "$CONFIG/pipelines/hello.yaml" >"$CONFIG/pipelines/hello-classic.yaml"

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

# time_gantry PIPELINE JSON_OUT: ms for one gantry build of the branch head.
time_gantry() {
  local start end
  start=$(now_ms)
  "$GANTRY" -c "$CONFIG" --json build "$1" >"$2" 2>>"$LOG" ||
    { tail -n 30 "$LOG" >&2; die "gantry build $1 failed"; }
  end=$(now_ms)
  echo $((end - start))
}

# time_cli BUILDER: ms for the same work by hand with the CLI's BUILDER (`legacy` or
# `buildkit`): shallow clone, build with the same args and labels gantry sets (so the
# Dockerfile steps are the same), tag, push both tags.
time_cli() {
  local sha short dir="$WORK/cli-checkout" start end image=$CLI_IMAGE cli=docker buildkit=0
  sha=$(git_in "$REPO" rev-parse HEAD)
  short=${sha:0:7}
  if [ "$1" = buildkit ]; then image=$CLI_BUILDKIT_IMAGE cli=$BUILDKIT_CLI buildkit=1; fi
  rm -rf "$dir"
  start=$(now_ms)
  {
    git clone -q --depth 1 --branch main "file://$REPO" "$dir" &&
      DOCKER_BUILDKIT=$buildkit "$cli" build -q -t "$image:$short" --build-arg "VERSION=$short" \
        --label gantry.pipeline=hello \
        --label "org.opencontainers.image.revision=$sha" \
        --label "org.opencontainers.image.source=file://$REPO" "$dir" &&
      docker tag "$image:$short" "$image:latest" &&
      docker push -q "$image:$short" &&
      docker push -q "$image:latest"
  } >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "CLI ($1) build/push failed"; }
  end=$(now_ms)
  echo $((end - start))
}

# forget_build IMAGE SHORT: untag (and so delete) one side's image of this commit,
# untimed, so that images do not pile up. (BuildKit keeps its cache apart from the
# images: that is why every side builds a commit of its own, which no build has seen.)
forget_build() {
  docker rmi "$1:$2" "$1:latest" >/dev/null 2>&1 || true
}

# stage_times JSON: "name ms" for each stage of a gantry --json report.
stage_times() {
  awk '/"name":/ { gsub(/[",]/, "", $2); name = $2 }
       /"duration_ms":/ { gsub(/,/, "", $2); print name, $2 }' "$1"
}

# ------------------------------------------------------------------ build vs CLI
# Four sides: gantry with BuildKit (`auto`), gantry with the classic builder, the CLI
# with the legacy builder, the CLI with BuildKit. Each build is of a one-line commit of
# its own, so no side finds another one's steps in a cache.
SIDES=(gantry gantry-classic cli-legacy cli-buildkit)
# build_side SIDE RUN: commit a one-line change, build and push it as SIDE; prints ms.
build_side() {
  local ms short
  commit_change "$2-$1"
  short=$(head_short)
  case "$1" in
    gantry) ms=$(time_gantry hello "$WORK/run-$2.json") && forget_build "$GANTRY_IMAGE" "$short" ;;
    gantry-classic)
      ms=$(time_gantry hello-classic "$WORK/run-$2-classic.json") &&
        forget_build "$GANTRY_CLASSIC_IMAGE" "$short"
      ;;
    cli-legacy) ms=$(time_cli legacy) && forget_build "$CLI_IMAGE" "$short" ;;
    cli-buildkit) ms=$(time_cli buildkit) && forget_build "$CLI_BUILDKIT_IMAGE" "$short" ;;
  esac
  echo "$ms"
}

log "warm-up: one untimed build of each side (the first gantry one makes the git cache)"
declare -A first times medians
for side in "${SIDES[@]}"; do first[$side]=$(build_side "$side" warmup); done
grep -q '"builder": *"buildkit"' "$WORK/run-warmup.json" ||
  die "gantry's default builder did not use BuildKit on this engine: $(cat "$WORK/run-warmup.json")"
grep -q '"builder": *"classic"' "$WORK/run-warmup-classic.json" ||
  die "builder: classic did not build with the classic builder"

: >"$WORK/stages.txt"
for i in $(seq "$RUNS"); do
  # Rotate who goes first, so no side always meets a just-warmed engine.
  line=''
  for k in 0 1 2 3; do
    side=${SIDES[$(((i + k) % 4))]}
    ms=$(build_side "$side" "$i")
    times[$side]+="$ms "
    line+="${line:+, }$side $ms ms"
  done
  stage_times "$WORK/run-$i.json" >>"$WORK/stages.txt"
  log "run $i/$RUNS: $line"
done

for side in "${SIDES[@]}"; do
  # shellcheck disable=SC2086 # one number per word
  medians[$side]=$(printf '%s\n' ${times[$side]} | median)
done
ratio_of() { awk -v a="${medians[$1]}" -v b="${medians[$2]}" 'BEGIN { printf "%.2f", a / b }'; }
ratio=$(ratio_of gantry cli-legacy)
ratio_buildkit=$(ratio_of gantry cli-buildkit)
ratio_classic=$(ratio_of gantry-classic cli-legacy)
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
  gantry build, BuildKit, per run (ms):  ${times[gantry]}
  gantry build, classic, per run (ms):   ${times[gantry-classic]}
  CLI, legacy builder, per run (ms):     ${times[cli-legacy]}
  CLI, BuildKit, per run (ms):           ${times[cli-buildkit]}($BUILDKIT_CLI)
  gantry stages, BuildKit (median):      $stages
  first runs (warm-up):                  gantry ${first[gantry]} ms (new git cache), gantry classic ${first[gantry-classic]} ms, CLI legacy ${first[cli-legacy]} ms, CLI BuildKit ${first[cli-buildkit]} ms
  validate, 1 pipeline:                  $validate_one_median ms (median of $VALIDATE_RUNS)

| Figure | Value |
| --- | --- |
| \`gantry build\` of a one-line commit with BuildKit (\`auto\`), 2 tags pushed (median of $RUNS) | ${medians[gantry]} ms |
| The same with \`builder: classic\` | ${medians[gantry-classic]} ms |
| Same work with git + docker CLI, legacy builder (\`DOCKER_BUILDKIT=0\`): \`clone --depth 1\`, \`build\`, \`tag\`, 2 × \`push\` | ${medians[cli-legacy]} ms |
| The same with the CLI's BuildKit (\`DOCKER_BUILDKIT=1\`) | ${medians[cli-buildkit]} ms |
| Ratio gantry BuildKit / CLI legacy (goal ≤ 0.8: $(goal "$ratio" le 0.8)) | $ratio |
| Ratio gantry BuildKit / CLI BuildKit | $ratio_buildkit |
| Ratio gantry classic / CLI legacy | $ratio_classic |
| \`gantry validate\`, $VALIDATE_PIPELINES pipelines (median of $VALIDATE_RUNS) | $validate_median ms |
| Release binary size | $(mib "$size_bytes") MiB |
| Release binary size, stripped | $(mib "$stripped_bytes") MiB |
EOF
if [ -n "$rss" ]; then
  echo "| Peak RSS of one \`gantry build\` | $rss MiB |"
fi
cat <<EOF

Measured on $(nproc) CPU(s), Docker engine $engine,
local registry $REGISTRY, gantry $revision, fixtures/hello.
EOF
