#!/usr/bin/env bash
# gantry end to end on one machine: a git repository on disk, a pipeline that
# points at it, two builds (the second one fetching only what the new commit
# added), then proof that the registry serves the digest gantry reported and that
# the pushed image runs. Everything stays on loopback.
#
#   scripts/demo.sh                    work in a temp dir, removed at the end
#   DEMO_DIR=/tmp/gd scripts/demo.sh   work in /tmp/gd, kept for a look afterwards
#   DEMO_PORT=18080 scripts/demo.sh    publish the demo container on that port
#                                      (default: one Docker picks)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# The engine test-env.sh starts; gantry and the docker CLI must talk to the same one.
export DOCKER_HOST=unix:///var/run/docker.sock

if [ -t 1 ]; then BOLD=$'\033[1m' RESET=$'\033[0m'; else BOLD='' RESET=''; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

# Commits must not depend on (or be refused by) the caller's git identity or signing setup.
git_in() {
  git -C "$1" -c user.name="gantry demo" -c user.email=demo@gantry.invalid \
    -c commit.gpgsign=false "${@:2}"
}

# json_value FILE KEY: the first scalar `"KEY": value` of gantry's pretty-printed
# JSON; sed, because a fresh machine has no jq.
json_value() {
  sed -n "s/^ *\"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$1" | head -n 1
}

CONTAINER="gantry-demo-$$"
WORK=''
KEEP_WORK=0
IMAGE=''

cleanup() {
  local status=$?
  docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
  # Local copies of the demo image only; what was pushed stays in the registry.
  if [ -n "$IMAGE" ]; then
    docker image ls --digests --format '{{.Repository}} {{.Tag}} {{.Digest}}' "$IMAGE" 2>/dev/null |
      while read -r repo tag digest; do
        [ "$tag" = '<none>' ] || docker rmi "$repo:$tag" >/dev/null 2>&1 || true
        [ "$digest" = '<none>' ] || docker rmi "$repo@$digest" >/dev/null 2>&1 || true
      done
  fi
  if [ -n "$WORK" ] && [ "$KEEP_WORK" -eq 0 ]; then
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ environment
step "Test environment: Docker engine, registries on 127.0.0.1, base image"
bash scripts/test-env.sh
STATE="${GANTRY_TEST_ENV_DIR:-/var/lib/gantry-test-env}"
# shellcheck source=/dev/null
source "$STATE/env"
REGISTRY="${GANTRY_TEST_REGISTRY:-127.0.0.1:5115}"
IMAGE="$REGISTRY/demo/hello"

step "Build gantry (cargo build --release)"
cargo build --release
GANTRY="$ROOT/target/release/gantry"
[ -x "$GANTRY" ] || die "$GANTRY was not built"

# ------------------------------------------------------------------ work dir
if [ -n "${DEMO_DIR:-}" ]; then
  mkdir -p "$DEMO_DIR"
  WORK=$(cd "$DEMO_DIR" && pwd)
  KEEP_WORK=1
  # A rerun starts over: a new repository and an empty gantry state dir.
  rm -rf "$WORK/repo" "$WORK/config"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-demo.XXXXXX")
fi
REPO="$WORK/repo"
CONFIG="$WORK/config"

step "A git repository with the hello app ($REPO)"
mkdir -p "$REPO"
cp -R fixtures/hello/. "$REPO/"
git_in "$REPO" init -q
# Pin the branch name whatever init.defaultBranch says.
git_in "$REPO" symbolic-ref HEAD refs/heads/main
git_in "$REPO" add -A
git_in "$REPO" commit -q -m "hello: first version"
git_in "$REPO" log --oneline
note "files: $(cd "$REPO" && git ls-files | tr '\n' ' ')"
note "(.dockerignore keeps secret.txt and README.md out of the image)"

step "A config dir with one pipeline ($CONFIG)"
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
  repository: $IMAGE
  tags: ["{{ commit.short }}", latest]
EOF
sed 's/^/    /' "$CONFIG/pipelines/hello.yaml"

# ------------------------------------------------------------------ gantry
step "gantry validate"
"$GANTRY" -c "$CONFIG" validate

step "gantry hosts"
"$GANTRY" -c "$CONFIG" hosts

step "gantry build hello (first build: the git cache is cloned)"
"$GANTRY" -c "$CONFIG" build hello

step "A one-line change, committed"
sed -i 's|Hello from gantry!|Hello again from gantry!|' "$REPO/www/index.html"
git_in "$REPO" commit -q -a -m "hello: say hello again"
git_in "$REPO" --no-pager show --stat --format='%h %s' HEAD | sed -e '/^$/d' -e 's/^/    /'

step "gantry --json build hello (second build: an incremental fetch into the cache)"
REPORT="$WORK/build-2.json"
"$GANTRY" -c "$CONFIG" --json build hello >"$REPORT"
cat "$REPORT"
SHORT=$(json_value "$REPORT" short)
DIGEST=$(json_value "$REPORT" digest)
if [ -z "$SHORT" ] || [ -z "$DIGEST" ]; then die "no commit or digest in gantry's report"; fi
note "fetch: cache created=$(json_value "$REPORT" created)," \
  "$(json_value "$REPORT" received_objects) objects /" \
  "$(json_value "$REPORT" received_bytes) bytes received (only the new commit's objects)"

# ------------------------------------------------------------------ proof
step "What the registry serves (asked directly over HTTP)"
printf '    %-10s %-72s %s\n' TAG REGISTRY GANTRY
for tag in "$SHORT" latest; do
  served=$(curl -fsSI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/demo/hello/manifests/$tag" |
    tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p')
  printf '    %-10s %-72s %s\n' "$tag" "${served:-<none>}" "$DIGEST"
  [ "$served" = "$DIGEST" ] || die "the registry serves ${served:-nothing} for $tag, gantry reported $DIGEST"
done
note "match: the registry serves exactly the digest gantry reported"

step "Run the pushed image by digest"
# Drop the local copies first, so the image really comes from the registry.
docker rmi "$IMAGE:$SHORT" "$IMAGE:latest" >/dev/null 2>&1 || true
docker pull "$IMAGE@$DIGEST"
docker run -d --name "$CONTAINER" -p "127.0.0.1:${DEMO_PORT:-}:8080" "$IMAGE@$DIGEST" >/dev/null
HOST_PORT=$(docker port "$CONTAINER" 8080/tcp | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -n 1)
[ -n "$HOST_PORT" ] || die "container $CONTAINER publishes no port"
note "container $CONTAINER on http://127.0.0.1:$HOST_PORT"
note "image env: $(docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$CONTAINER" | grep '^HELLO_VERSION=')"
note "image label: org.opencontainers.image.revision=$(docker inspect \
  --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$CONTAINER")"

# httpd needs a moment after the container starts.
for _ in $(seq 50); do
  curl -fs -o /dev/null "http://127.0.0.1:$HOST_PORT/healthz" && break
  sleep 0.2
done

step "curl http://127.0.0.1:$HOST_PORT/"
page=$(curl -fsS "http://127.0.0.1:$HOST_PORT/")
printf '%s\n' "$page" | sed 's/^/    /'
grep -q 'Hello again from gantry!' <<<"$page" || die "/ does not serve the second commit's page"

step "curl http://127.0.0.1:$HOST_PORT/healthz"
health=$(curl -fsS "http://127.0.0.1:$HOST_PORT/healthz")
printf '    %s\n' "$health"
[ "$health" = ok ] || die "/healthz answered '$health'"

step "Remove the demo container"
docker rm -f "$CONTAINER" >/dev/null
note "removed $CONTAINER"

step "Done"
note "gantry built $SHORT, pushed $IMAGE:$SHORT and :latest as $DIGEST,"
note "and the registry and a running container agree."
if [ "$KEEP_WORK" -eq 1 ]; then
  note "work dir kept: $WORK (repo/, config/, config/.gantry/)"
fi
