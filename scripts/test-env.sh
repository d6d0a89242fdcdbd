#!/usr/bin/env bash
# Brings up everything the integration tests talk to, all on loopback:
#   - a Docker engine on /var/run/docker.sock
#   - a plain registry on 127.0.0.1:5115 and an htpasswd one on 127.0.0.1:5116
#   - the same engine over TCP (127.0.0.1:2385) and mutual TLS (127.0.0.1:2386)
#   - the local base image gantry-test/busybox:latest (Docker Hub is never used)
#   - extra Docker engines ("hosts"), each in its own network namespace gantry-hI,
#     reached from here at 10.77.I.2; engine 1 also speaks mutual TLS on :2376
# Idempotent: anything already up is left alone. Writes $STATE/env for tests.
#
#   scripts/test-env.sh              all of the above, ${GANTRY_TEST_HOSTS:-3} extra engines
#   scripts/test-env.sh hosts N      the same with N (0..8) extra engines
#   scripts/test-env.sh stop-hosts   stop every extra engine (their data dirs are kept)
# Extra engines are never stopped by a run that asks for fewer: use stop-hosts.
set -euo pipefail

STATE="${GANTRY_TEST_ENV_DIR:-/var/lib/gantry-test-env}"
DOCKER_SOCK=/var/run/docker.sock
DOCKERD_LOG=/var/log/gantry-test-dockerd.log
REGISTRY_ADDR=127.0.0.1:5115
AUTH_REGISTRY_ADDR=127.0.0.1:5116
AUTH_USER=gantry
AUTH_PASSWORD=gantry-secret
DOCKER_TCP_PORT=2385
DOCKER_TLS_PORT=2386
BASE_IMAGE=gantry-test/busybox:latest
CERTS="$STATE/certs"
# Extra engines: engine I runs in namespace gantry-hI, state in $HOSTS_DIR/hI.
HOSTS_MAX=8
HOSTS_DIR="$STATE/hosts"
NETNS_DIR=/var/run/netns
HOST_TLS_PORT=2376
# The base image as every extra engine pulls it (through its namespace's 127.0.0.1).
HOST_IMAGE="$REGISTRY_ADDR/$BASE_IMAGE"

log() { printf '[test-env] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

MODE=up
WANT_HOSTS="${GANTRY_TEST_HOSTS:-3}"
case "${1:-}" in
  '') [ "$#" -eq 0 ] || die "usage: $0 [hosts N | stop-hosts]" ;;
  hosts) [ "$#" -eq 2 ] || die "usage: $0 hosts N  (N = 0..$HOSTS_MAX)"; WANT_HOSTS=$2 ;;
  stop-hosts) [ "$#" -eq 1 ] || die "usage: $0 stop-hosts"; MODE=stop-hosts ;;
  *) die "usage: $0 [hosts N | stop-hosts]" ;;
esac
case "$WANT_HOSTS" in
  '' | *[!0-9]*) die "number of extra engines must be 0..$HOSTS_MAX, not '$WANT_HOSTS'" ;;
esac
WANT_HOSTS=$((10#$WANT_HOSTS))
[ "$WANT_HOSTS" -le "$HOSTS_MAX" ] || die "at most $HOSTS_MAX extra engines, not $WANT_HOSTS"

# Installing packages and starting daemons needs root; re-run under sudo if possible.
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "must run as root (no sudo available)"
  exec sudo -E bash "$0" "$@"
fi

# Talk to the engine on the socket explicitly, whatever DOCKER_HOST the caller has.
dk() { docker -H "unix://$DOCKER_SOCK" "$@"; }

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.5 s until it succeeds;
# logs "DESCRIPTION is up" unless DESCRIPTION is empty.
wait_for() {
  local secs=$1 what=$2; shift 2
  local tries=$((secs * 2))
  while ! "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.5
  done
  [ -z "$what" ] || log "$what is up"
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
# tcp_open ADDR PORT: the same for any address (only ever ours: loopback, 10.77.I.x).
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# start_bg NAME CMD...: run CMD detached (own session, so it outlives this script
# and the caller's process group), log to $STATE/NAME.log, pid to $STATE/NAME.pid.
# fd 9 (the run lock) is closed so the daemon does not hold the lock forever.
start_bg() {
  local name=$1; shift
  setsid nohup "$@" </dev/null >>"$STATE/$name.log" 2>&1 9>&- &
  echo $! >"$STATE/$name.pid"
}

# write_if_changed FILE: replace FILE with stdin only when the content differs,
# so a second run touches nothing.
write_if_changed() {
  local file=$1 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    chmod 0644 "$tmp"
    mv -f "$tmp" "$file"
  fi
}

# ---------------------------------------------------------------- packages
missing=()
command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
# The base image needs a statically linked busybox; the dynamic one would not run in it.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
command -v socat >/dev/null 2>&1 || missing+=(socat)
# stunnel, not socat, terminates TLS: socat's OpenSSL server sets no session id
# context, so a client that resumes a session (rustls does) is refused.
command -v stunnel4 >/dev/null 2>&1 || missing+=(stunnel4)
# The ssh transport tests start their own sshd on a loopback port.
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The extra engines: namespaces and veths (ip), entering them (nsenter), their own containerd.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 || missing+=(containerd)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

mkdir -p "$STATE"
# Serialise concurrent runs (e.g. two test processes starting at once).
exec 9>>"$STATE/.lock"
flock 9

# ---------------------------------------------------------------- docker engine
# proc_live PID: PID is a running process, not a zombie. Zombies linger where
# PID 1 is slow to reap them, and `kill -0` would call them alive.
proc_live() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# dockerd_running: a live dockerd exists (reads /proc, so procps is not needed).
dockerd_running() {
  local d
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = dockerd ] && proc_live "${d#/proc/}" && return 0
  done
  return 1
}

# drop_stale_pidfile FILE: remove FILE unless it names a live process. dockerd
# refuses to start over its own stale pid file, and waits ~15 s then gives up on
# a stale containerd one, when the pid is a not-yet-reaped zombie.
drop_stale_pidfile() {
  [ -f "$1" ] || return 0
  proc_live "$(cat "$1" 2>/dev/null)" || rm -f "$1"
}

if dk version >/dev/null 2>&1; then
  log "docker engine already answers on $DOCKER_SOCK"
else
  # A dockerd that is still starting must not get a twin.
  if dockerd_running; then
    log "dockerd is running but not answering yet; waiting"
  else
    drop_stale_pidfile /var/run/docker.pid
    drop_stale_pidfile /var/run/docker/containerd/containerd.pid
    log "starting dockerd (log: $DOCKERD_LOG)"
    setsid nohup dockerd </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
  fi
  for i in $(seq 120); do
    dk version >/dev/null 2>&1 && break
    # Fail fast instead of waiting the full minute for a daemon that already
    # died (checked only after 2 s, once the exec chain has surely happened).
    if [ "$i" -gt 4 ] && ! dockerd_running; then
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      die "dockerd exited during startup"
    fi
    sleep 0.5
  done
  dk version >/dev/null 2>&1 || {
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    die "docker engine did not answer within 60 s"
  }
  log "docker engine is up"
fi

# ---------------------------------------------------------------- registries
# registry_status ADDR: HTTP status of /v2/ ("000" when nothing answers).
registry_status() { curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$1/v2/" || true; }
# registry_up ADDR: 200 (open) or 401 (auth required) both mean a registry answers.
registry_up() { case "$(registry_status "$1")" in 200|401) return 0 ;; *) return 1 ;; esac; }

# registry_config NAME ADDR [AUTH_YAML]: config for the distribution registry v2.
registry_config() {
  local name=$1 addr=$2 auth=${3:-}
  mkdir -p "$STATE/$name/data"
  {
    cat <<EOF
version: 0.1
log:
  level: info
  fields:
    service: $name
storage:
  filesystem:
    rootdirectory: $STATE/$name/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $addr
  # fixed secret: it only signs upload state, and a stable file keeps reruns no-ops
  secret: gantry-test-$name
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    [ -z "$auth" ] || printf '%s\n' "$auth"
  } | write_if_changed "$STATE/$name/config.yml"
}

# start_registry NAME ADDR: start it unless something already answers there.
start_registry() {
  local name=$1 addr=$2 status
  status=$(registry_status "$addr")
  case "$status" in
    200|401) log "registry $name already answers on $addr" ; return 0 ;;
    000) ;;
    *) die "$addr answers /v2/ with HTTP $status: not a registry; free the port" ;;
  esac
  log "starting registry $name on $addr"
  start_bg "$name" docker-registry serve "$STATE/$name/config.yml"
  wait_for 30 "registry $name" registry_up "$addr" || {
    tail -n 20 "$STATE/$name.log" >&2 || true
    die "registry $name did not answer on $addr"
  }
}

registry_config registry "$REGISTRY_ADDR"

# The registry only accepts bcrypt entries; bcrypt salts differ per call, so keep
# an existing file that still matches instead of rewriting it every run.
HTPASSWD="$STATE/registry-auth/htpasswd"
mkdir -p "$STATE/registry-auth"
if ! htpasswd -vb "$HTPASSWD" "$AUTH_USER" "$AUTH_PASSWORD" >/dev/null 2>&1; then
  htpasswd -Bbn "$AUTH_USER" "$AUTH_PASSWORD" >"$HTPASSWD"
fi
registry_config registry-auth "$AUTH_REGISTRY_ADDR" "auth:
  htpasswd:
    realm: gantry-test
    path: $HTPASSWD"

start_registry registry "$REGISTRY_ADDR"
start_registry registry-auth "$AUTH_REGISTRY_ADDR"

# ---------------------------------------------------------------- TLS material
# A throwaway CA, a server cert for localhost/127.0.0.1 and a client cert, laid out
# the way DOCKER_CERT_PATH expects (ca.pem, cert.pem, key.pem). RSA keys in PKCS#8
# (genpkey) and v3 certs with SANs, so rustls/webpki accept them.

# cert_workdir: a fresh temp dir holding the openssl config (ext.cnf) for the helpers below.
cert_workdir() {
  local dir
  dir=$(mktemp -d)
  cat >"$dir/ext.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[h1server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:$(host_addr 1)
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  echo "$dir"
}
# gen_key FILE: a 2048-bit RSA key in PKCS#8.
gen_key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
# serial: a random certificate serial number.
serial() { echo "0x$(openssl rand -hex 8)"; }
# sign NAME CN SECTION: key + CSR + v3 cert with the SECTION extensions in $work,
# signed by $work/ca.pem and $work/ca-key.pem.
sign() {
  gen_key "$work/$1-key.pem"
  openssl req -config "$work/ext.cnf" -new -sha256 -key "$work/$1-key.pem" \
    -subj "/CN=$2" -out "$work/$1.csr"
  openssl x509 -req -sha256 -days 3650 -in "$work/$1.csr" \
    -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" -set_serial "$(serial)" \
    -extfile "$work/ext.cnf" -extensions "$3" -out "$work/$1-cert.pem" 2>/dev/null
}

certs_regenerated=0
cert_files=(ca.pem ca-key.pem server-cert.pem server-key.pem cert.pem key.pem)
have_all_certs=1
for f in "${cert_files[@]}"; do [ -s "$CERTS/$f" ] || have_all_certs=0; done
if [ "$have_all_certs" -eq 0 ]; then
  log "generating TLS certificates in $CERTS"
  work=$(cert_workdir)
  gen_key "$work/ca-key.pem"
  openssl req -config "$work/ext.cnf" -new -x509 -sha256 -days 3650 \
    -key "$work/ca-key.pem" -subj "/CN=gantry-test-ca" -extensions ca \
    -set_serial "$(serial)" -out "$work/ca.pem"
  sign server localhost server
  sign client gantry-test-client client
  openssl verify -CAfile "$work/ca.pem" "$work/server-cert.pem" "$work/client-cert.pem" >/dev/null
  mkdir -p "$CERTS"
  cp "$work/ca.pem" "$work/ca-key.pem" "$work/server-cert.pem" "$work/server-key.pem" "$CERTS/"
  cp "$work/client-cert.pem" "$CERTS/cert.pem"
  cp "$work/client-key.pem" "$CERTS/key.pem"
  # Throwaway test keys: readable so tests running as another user can load them.
  chmod 0644 "$CERTS"/*.pem
  rm -rf "$work"
  certs_regenerated=1
fi

# Extra engine 1's own server certificate (IP:10.77.1.2), from the same CA. Made
# again when missing, when it no longer verifies against ca.pem (the CA was
# regenerated) or when its address is not the one engine 1 has.
# h1_cert_ok: that certificate and its key exist, verify, and name engine 1's address.
h1_cert_ok() {
  local san
  [ -s "$CERTS/h1-server-key.pem" ] || return 1
  openssl verify -CAfile "$CERTS/ca.pem" "$CERTS/h1-server-cert.pem" >/dev/null 2>&1 || return 1
  san=$(openssl x509 -in "$CERTS/h1-server-cert.pem" -noout -ext subjectAltName 2>/dev/null) || return 1
  [ "$(printf '%s\n' "$san" | sed -n '2s/^[[:space:]]*//p')" = "IP Address:$(host_addr 1)" ]
}
h1_cert_regenerated=0
if ! h1_cert_ok; then
  log "generating the server certificate of extra engine 1 (IP:$(host_addr 1))"
  work=$(cert_workdir)
  cp "$CERTS/ca.pem" "$CERTS/ca-key.pem" "$work/"
  sign h1-server "$(host_addr 1)" h1server
  openssl verify -CAfile "$work/ca.pem" "$work/h1-server-cert.pem" >/dev/null
  cp "$work/h1-server-cert.pem" "$work/h1-server-key.pem" "$CERTS/"
  chmod 0644 "$CERTS"/h1-server-*.pem
  rm -rf "$work"
  h1_cert_regenerated=1
fi

# ---------------------------------------------------------------- engine over TCP/TLS
# pid_alive NAME: the process recorded in $STATE/NAME.pid is still running.
pid_alive() { [ -s "$STATE/$1.pid" ] && proc_live "$(cat "$STATE/$1.pid")"; }

# A TLS proxy started by an earlier run still serves the old certificates.
if [ "$certs_regenerated" -eq 1 ] && pid_alive socat-docker-tls; then
  log "certificates changed; restarting the TLS proxy"
  kill "$(cat "$STATE/socat-docker-tls.pid")" 2>/dev/null || true
  wait_for 10 "" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$DOCKER_TLS_PORT)" || true
fi

if port_open "$DOCKER_TCP_PORT"; then
  log "127.0.0.1:$DOCKER_TCP_PORT already listening"
else
  log "starting plain TCP proxy to the engine on 127.0.0.1:$DOCKER_TCP_PORT"
  start_bg socat-docker-tcp socat \
    "TCP-LISTEN:$DOCKER_TCP_PORT,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$DOCKER_SOCK"
  wait_for 10 "tcp proxy" port_open "$DOCKER_TCP_PORT" || die "socat did not listen on $DOCKER_TCP_PORT"
fi

if port_open "$DOCKER_TLS_PORT"; then
  log "127.0.0.1:$DOCKER_TLS_PORT already listening"
else
  log "starting TLS proxy (client certs required) to the engine on 127.0.0.1:$DOCKER_TLS_PORT"
  write_if_changed "$STATE/stunnel-docker.conf" <<CONF
foreground = yes
pid =
[docker]
accept = 127.0.0.1:$DOCKER_TLS_PORT
connect = $DOCKER_SOCK
cert = $CERTS/server-cert.pem
key = $CERTS/server-key.pem
CAfile = $CERTS/ca.pem
verifyChain = yes
requireCert = yes
CONF
  start_bg socat-docker-tls stunnel4 "$STATE/stunnel-docker.conf"
  wait_for 10 "tls proxy" port_open "$DOCKER_TLS_PORT" || die "stunnel did not listen on $DOCKER_TLS_PORT"
fi

# Prove both proxies really reach the engine (and that TLS verifies both ways).
curl -fsS -m 10 "http://127.0.0.1:$DOCKER_TCP_PORT/version" >/dev/null \
  || die "http://127.0.0.1:$DOCKER_TCP_PORT/version does not reach the engine"
curl -fs -m 10 --cacert "$CERTS/ca.pem" --cert "$CERTS/cert.pem" --key "$CERTS/key.pem" \
  "https://127.0.0.1:$DOCKER_TLS_PORT/version" >/dev/null \
  || die "https://127.0.0.1:$DOCKER_TLS_PORT/version fails with the certificates in $CERTS" \
         "(is the proxy on :$DOCKER_TLS_PORT serving another state dir's certificates? stop it and rerun)"

# ---------------------------------------------------------------- base image
# Built from the host's static busybox so no registry outside loopback is needed.
if ! dk image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "building $BASE_IMAGE from /bin/busybox"
  BUSYBOX=/bin/busybox
  [ -x "$BUSYBOX" ] || die "$BUSYBOX missing (package busybox-static)"
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  chmod 1777 "$root/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  for applet in sh httpd nc echo cat ls sleep wget true false mkdir printf \
                env rm grep test hostname id uname; do
    ln -s busybox "$root/bin/$applet"
  done
  # Minimal identity files so `id`, httpd and friends resolve root.
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . \
    | dk import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
fi
out=$(dk run --rm "$BASE_IMAGE" sh -c 'echo ok') || die "$BASE_IMAGE does not run"
[ "$out" = ok ] || die "$BASE_IMAGE printed '$out' instead of 'ok'"

# ---------------------------------------------------------------- env file + summary
{
  echo "# Sourced by scripts/test.sh; tests use the same values as defaults."
  printf 'export GANTRY_TEST_REGISTRY=%q\n' "$REGISTRY_ADDR"
  printf 'export GANTRY_TEST_AUTH_REGISTRY=%q\n' "$AUTH_REGISTRY_ADDR"
  printf 'export GANTRY_TEST_AUTH_USER=%q\n' "$AUTH_USER"
  printf 'export GANTRY_TEST_AUTH_PASSWORD=%q\n' "$AUTH_PASSWORD"
  printf 'export GANTRY_TEST_DOCKER_TCP=%q\n' "tcp://127.0.0.1:$DOCKER_TCP_PORT"
  printf 'export GANTRY_TEST_DOCKER_TLS=%q\n' "tcp://127.0.0.1:$DOCKER_TLS_PORT"
  printf 'export GANTRY_TEST_CERTS=%q\n' "$CERTS"
  printf 'export GANTRY_TEST_BASE_IMAGE=%q\n' "$BASE_IMAGE"
} | write_if_changed "$STATE/env"

server_version=$(dk version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')
cat <<EOF
gantry test environment (state: $STATE)
  docker engine     unix://$DOCKER_SOCK  $server_version
  registry          http://$REGISTRY_ADDR
  auth registry     http://$AUTH_REGISTRY_ADDR  ($AUTH_USER / $AUTH_PASSWORD)
  docker over tcp   tcp://127.0.0.1:$DOCKER_TCP_PORT
  docker over tls   tcp://127.0.0.1:$DOCKER_TLS_PORT  (certs: $CERTS)
  base image        $BASE_IMAGE
  env file          $STATE/env
EOF
