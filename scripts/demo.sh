#!/usr/bin/env bash
# gantry end to end on one machine: a git repository on disk, a pipeline that
# points at it, deployed to two Docker hosts (the local engine and one in its own
# network namespace). The first `gantry run` builds, pushes and deploys; a one-line
# commit is rolled out health-gated with a second run (fetching only what the new
# commit added), without one failed request on port 80 of the edge host, which
# gantry's proxy holds; the registry is asked for the digest gantry reported; `gantry
# rollback` returns to the first version and pins the pipeline. Everything stays
# on loopback and in the namespaces test-env.sh makes.
#
#   scripts/demo.sh                    work in a temp dir, removed at the end
#   DEMO_DIR=/tmp/gd scripts/demo.sh   work in /tmp/gd, kept for a look afterwards
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

PIPELINE="hello"
WORK=''
KEEP_WORK=0
IMAGE=''
HOST1=''

# remove_deployed ENGINE: the demo's containers on one engine, found by gantry's label.
remove_deployed() {
  local ids
  ids=$(docker -H "$1" ps -aq --filter "label=gantry.pipeline=$PIPELINE" 2>/dev/null || true)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || docker -H "$1" rm -f $ids >/dev/null 2>&1 || true
}

SERVE_PID=''

cleanup() {
  local status=$?
  if [ -n "$SERVE_PID" ]; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
  fi
  remove_deployed unix:///var/run/docker.sock
  if [ -n "$HOST1" ]; then
    remove_deployed "$HOST1"
    docker -H "$HOST1" rm -f gantry-proxy >/dev/null 2>&1 || true
    docker -H "$HOST1" volume rm gantry-proxy-config gantry-proxy-data >/dev/null 2>&1 || true
  fi
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
# The pipeline reads its webhook secret from the environment.
export HELLO_WEBHOOK_SECRET="demo-secret-$$"
# The operator token of the daemon's API and dashboard (read from the environment too).
export DEMO_API_TOKEN="demo-token-$$"
PROXY_IMAGE="${GANTRY_TEST_PROXY_IMAGE:-$REGISTRY/gantry-test/caddy:2.6.2}"
HOST1="${GANTRY_TEST_HOST_1_DOCKER:-}"
HOST1_ADDRESS="${GANTRY_TEST_HOST_1_ADDRESS:-}"
[ -n "$HOST1" ] || die "test-env.sh started no extra engine (GANTRY_TEST_HOSTS=0?)"

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
ORIGIN="$WORK/origin.git"
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
# The shared repository developers push to, as a forge would host it.
git clone -q --bare "$REPO" "$ORIGIN"
git_in "$REPO" remote add origin "$ORIGIN"
note "pushed to $ORIGIN (the repository gantry builds from)"
note "files: $(cd "$REPO" && git ls-files | tr '\n' ' ')"
note "(.dockerignore keeps secret.txt and README.md out of the image)"

step "A config dir: two hosts, one pipeline, a service behind the proxy on edge ($CONFIG)"
mkdir -p "$CONFIG/pipelines"
cat >"$CONFIG/gantry.yaml" <<EOF
hosts:
  local: { docker: "unix:///var/run/docker.sock" }
  edge:  { docker: "$HOST1", address: "$HOST1_ADDRESS" }   # a dockerd in its own network namespace
server:
  token: "\${DEMO_API_TOKEN}"                             # the API's and the dashboard's operator token
proxy:
  image: "$PROXY_IMAGE"   # Caddy, run by gantry on every host with a proxied service
EOF
sed 's/^/    /' "$CONFIG/gantry.yaml"
cat >"$CONFIG/pipelines/hello.yaml" <<EOF
source:
  repo: file://$ORIGIN
  branch: main
  webhook: { secret: "\${HELLO_WEBHOOK_SECRET}" }
build:
  context: .
  dockerfile: Dockerfile
  args: { VERSION: "{{ commit.short }}" }
image:
  repository: $IMAGE
  tags: ["{{ commit.short }}", latest]
deploy:
  batch: 1
  services:
    web:
      ports: ["8080"]            # no fixed host port: the new container starts before the old stops
      stop_timeout: 2s
      health:
        http: { port: 8080, path: /healthz, status: 200 }
        timeout: 20s
      instances:
        hello-local: {}          # the default host: local
        hello-edge: { host: edge }
    front:
      proxy: { port: 80, drain: 1s }   # port 80 on edge, held by gantry's proxy: no gap on a deploy
      stop_timeout: 2s
      health:
        http: { port: 8080, path: /healthz, status: 200 }
        timeout: 20s
      instances:
        hello-front: { host: edge }
EOF
sed 's/^/    /' "$CONFIG/pipelines/hello.yaml"

# ------------------------------------------------------------------ gantry
step "gantry validate"
"$GANTRY" -c "$CONFIG" validate

step "gantry hosts"
"$GANTRY" -c "$CONFIG" hosts

# page INSTANCE ENGINE ADDRESS: what the instance's container serves at /.
page() {
  local port
  port=$(docker -H "$2" port "$1" 8080/tcp | head -n 1 | sed 's/.*://')
  curl -fsS -m 5 "http://$3:$port/"
}

# both_pages: one line per instance with the heading it serves.
both_pages() {
  note "hello-local serves: $(page hello-local unix:///var/run/docker.sock 127.0.0.1 | grep -o 'Hello[^<]*')"
  note "hello-edge  serves: $(page hello-edge "$HOST1" "$HOST1_ADDRESS" | grep -o 'Hello[^<]*')"
  note "edge:80 (the proxy) serves: $(curl -fsS -m 5 "http://$HOST1_ADDRESS:80/" | grep -o 'Hello[^<]*')"
}

step "gantry run hello (clone, build, push, pull on both hosts, start, health-gate)"
"$GANTRY" -c "$CONFIG" run hello
FIRST=$(git_in "$REPO" rev-parse --short=7 HEAD)
both_pages

step "A one-line change, committed"
sed -i 's|Hello from gantry!|Hello again from gantry!|' "$REPO/www/index.html"
git_in "$REPO" commit -q -a -m "hello: say hello again"
git_in "$REPO" push -q origin main
git_in "$REPO" --no-pager show --stat --format='%h %s' HEAD | sed -e '/^$/d' -e 's/^/    /'

step "gantry --json run hello (an incremental fetch, then a start-first rollout, one host at a time)"
# Meanwhile, requests to port 80 on edge through the proxy: at most 20 a second, 1,200 at most.
LOAD_OUT="$WORK/load.out"
# shellcheck disable=SC2046
curl -s -m 5 --rate 20/s -w '\n@@%{http_code}\n' \
  $(for _ in $(seq 1200); do printf 'http://%s:80/ ' "$HOST1_ADDRESS"; done) >"$LOAD_OUT" 2>&1 &
LOAD_PID=$!
REPORT="$WORK/run-2.json"
"$GANTRY" -c "$CONFIG" --json run hello >"$REPORT"
sleep 0.5
kill "$LOAD_PID" 2>/dev/null || true
wait "$LOAD_PID" 2>/dev/null || true
sent=$(grep -c '^@@' "$LOAD_OUT" || true)
failed=$(grep '^@@' "$LOAD_OUT" | grep -vc '^@@200$' || true)
note "through the proxy on edge:80 during the rollout: $sent requests, $failed failed"
[ "$failed" -eq 0 ] || die "requests through the proxy failed during the rollout"
SHORT=$(json_value "$REPORT" short)
DIGEST=$(json_value "$REPORT" digest)
if [ -z "$SHORT" ] || [ -z "$DIGEST" ]; then die "no commit or digest in gantry's report"; fi
note "fetch: cache created=$(json_value "$REPORT" created)," \
  "$(json_value "$REPORT" received_objects) objects /" \
  "$(json_value "$REPORT" received_bytes) bytes received (only the new commit's objects)"

note "commit $SHORT, digest $DIGEST"
grep -o '"instance": "[a-z-]*"\|"action": "[a-z_]*"' "$REPORT" | paste - - | sed 's/^/    /'

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

step "gantry status hello"
"$GANTRY" -c "$CONFIG" status hello
both_pages
page hello-edge "$HOST1" "$HOST1_ADDRESS" | grep -q 'Hello again from gantry!' \
  || die "hello-edge does not serve the second commit's page"
page hello-local unix:///var/run/docker.sock 127.0.0.1 | grep -q 'Hello again from gantry!' \
  || die "hello-local does not serve the second commit's page"

step "gantry rollback hello (back to $FIRST; automatic deploys are held)"
"$GANTRY" -c "$CONFIG" rollback hello
both_pages
page hello-edge "$HOST1" "$HOST1_ADDRESS" | grep -q 'Hello from gantry!' \
  || die "hello-edge does not serve the first commit's page after the rollback"
"$GANTRY" -c "$CONFIG" status hello

step "gantry deploy hello while pinned: refused"
if "$GANTRY" -c "$CONFIG" deploy hello; then die "a pinned pipeline was deployed"; fi

step "gantry unpin hello"
"$GANTRY" -c "$CONFIG" unpin hello

# ------------------------------------------------------------------ the daemon
SERVE_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "gantry serve on 127.0.0.1:$SERVE_PORT (webhooks, polling, queue, hot reload)"
GANTRY_LOG=info "$GANTRY" -c "$CONFIG" serve --listen "127.0.0.1:$SERVE_PORT" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$SERVE_PORT/healthz" && break
  sleep 0.1
done
note "healthz: $(curl -fsS "http://127.0.0.1:$SERVE_PORT/healthz")"

step "A post-receive hook in $ORIGIN: each push becomes a signed webhook"
cat >"$ORIGIN/hooks/post-receive" <<EOF
#!/bin/sh
# Sends gantry's generic webhook: {"ref", "after"} signed with HMAC-SHA256.
while read -r old new ref; do
  body="{\"ref\":\"\$ref\",\"after\":\"\$new\"}"
  signature=\$(printf '%s' "\$body" | openssl dgst -sha256 -hmac "$HELLO_WEBHOOK_SECRET" | sed 's/^.* //')
  curl -sS -X POST -H 'Content-Type: application/json' \\
    -H "X-Gantry-Signature-256: sha256=\$signature" -H "X-Gantry-Delivery: \$new" \\
    --data-binary "\$body" "http://127.0.0.1:$SERVE_PORT/hooks/hello"
  echo
done
EOF
chmod +x "$ORIGIN/hooks/post-receive"
sed 's/^/    /' "$ORIGIN/hooks/post-receive"

step "A developer commits and pushes; gantry serve picks it up"
sed -i 's|Hello again from gantry!|Hello from a git push!|' "$REPO/www/index.html"
git_in "$REPO" commit -q -a -m "hello: a pushed change"
PUSHED=$(git_in "$REPO" rev-parse --short=7 HEAD)
git_in "$REPO" push origin main 2>&1 | sed 's/^/    /'
# The hook's answer named the run; wait for it to be recorded, then follow its log.
RUN=''
for _ in $(seq 100); do
  "$GANTRY" -c "$CONFIG" --json runs hello --limit 1 >"$WORK/runs.json"
  if grep -q "\"requested\": \"$(git_in "$REPO" rev-parse HEAD)\"" "$WORK/runs.json"; then
    RUN=$(json_value "$WORK/runs.json" number)
    break
  fi
  sleep 0.1
done
[ -n "$RUN" ] || die "gantry serve queued no run for the pushed commit $PUSHED (log: $WORK/serve.log)"
step "gantry logs hello#$RUN --follow (the run's log as it goes; last lines)"
"$GANTRY" -c "$CONFIG" logs "hello#$RUN" --follow | tail -n 8 | sed 's/^/    /'
"$GANTRY" -c "$CONFIG" runs hello --limit 4
"$GANTRY" -c "$CONFIG" runs hello --limit 1 | grep -q ' succeeded ' \
  || die "run hello#$RUN did not succeed (log: $WORK/serve.log)"
both_pages
page hello-edge "$HOST1" "$HOST1_ADDRESS" | grep -q 'Hello from a git push!' \
  || die "hello-edge does not serve the pushed commit"
page hello-local unix:///var/run/docker.sock 127.0.0.1 | grep -q 'Hello from a git push!' \
  || die "hello-local does not serve the pushed commit"

SERVER="http://127.0.0.1:$SERVE_PORT"
step "The same daemon from anywhere: the CLI with --server, the API, the dashboard, metrics"
"$GANTRY" --server "$SERVER" --token "$DEMO_API_TOKEN" runs hello --limit 2 | sed 's/^/    /'
"$GANTRY" --server "$SERVER" --token "$DEMO_API_TOKEN" status hello >"$WORK/remote-status.txt"
sed 's/^/    /' "$WORK/remote-status.txt"
[ "$(grep -c " $PUSHED " "$WORK/remote-status.txt")" -eq 3 ] \
  || die "gantry --server ... status does not show all three instances on the pushed commit $PUSHED"
note "GET /api/v1/runs?pipeline=hello: $(curl -fsS -H "Authorization: Bearer $DEMO_API_TOKEN" \
  "$SERVER/api/v1/runs?pipeline=hello&limit=1" | grep -o '"state":"[a-z]*"' | head -n 1)"
# The dashboard, as a browser without JavaScript sees it: log in, then read the home page.
curl -fsS -o /dev/null -c "$WORK/cookies" --data "token=$DEMO_API_TOKEN&next=/" "$SERVER/login"
curl -fsS -b "$WORK/cookies" "$SERVER/" >"$WORK/dashboard.html"
grep -q 'Hello from a git push\|hello: a pushed change' "$WORK/dashboard.html" \
  || die "the dashboard does not show the pushed commit"
note "dashboard $SERVER/ lists hello: $(grep -o 'badge [a-z]*">[a-z]*</span> #[0-9]*' "$WORK/dashboard.html" | head -n 1 | sed 's/.*">//; s/<\/span>//'), \"hello: a pushed change\""
note "metrics: $(curl -fsS "$SERVER/metrics" | grep '^gantry_runs_total' | tr '\n' ' ')"

step "Stop gantry serve (SIGTERM)"
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || die "gantry serve did not exit cleanly"
SERVE_PID=''
tail -n 3 "$WORK/serve.log" | sed 's/^/    /'

step "Done"
note "gantry built $SHORT, pushed $IMAGE:$SHORT and :latest as $DIGEST,"
note "rolled it out to two hosts health-gated (on edge also behind the proxy, with no failed request), rolled back to $FIRST,"
note "and deployed the pushed commit $PUSHED when gantry serve got its webhook."
if [ "$KEEP_WORK" -eq 1 ]; then
  note "work dir kept: $WORK (repo/, config/, config/.gantry/)"
fi
