#!/usr/bin/env bash
# Brings up everything the integration tests talk to, all on loopback:
#   - a Docker engine on /var/run/docker.sock
#   - a plain registry on 127.0.0.1:5115 and an htpasswd one on 127.0.0.1:5116
#   - the same engine over TCP (127.0.0.1:2385) and mutual TLS (127.0.0.1:2386)
#   - the local base image gantry-test/busybox:latest (Docker Hub is never used)
#   - the proxy image 127.0.0.1:5115/gantry-test/caddy:VERSION, built from Debian's caddy
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
# The proxy image is pushed to the registry: gantry pulls it on every host that needs it.
PROXY_REPOSITORY=$REGISTRY_ADDR/gantry-test/caddy
CERTS="$STATE/certs"
# Extra engines: engine I runs in namespace gantry-hI, state in $HOSTS_DIR/hI.
HOSTS_MAX=8
HOSTS_DIR="$STATE/hosts"
NETNS_DIR=/var/run/netns
HOST_TLS_PORT=2376
# The base image as every extra engine pulls it (through its namespace's 127.0.0.1).
HOST_IMAGE="$REGISTRY_ADDR/$BASE_IMAGE"

# proxy_image: the proxy image's reference, tagged with the installed caddy's version.
proxy_image() {
  local version
  version=$(caddy version 2>/dev/null | sed -n '1s/^v\{0,1\}\([0-9][0-9.]*\).*/\1/p')
  [ -n "$version" ] || die "cannot read caddy's version (is the caddy package installed?)"
  echo "$PROXY_REPOSITORY:$version"
}

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

# shellcheck source=scripts/test-env-postgres.sh
. "$(dirname "$0")/test-env-postgres.sh"

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

# The test Swarm's functions (ensure_swarm, swarm_env).
# shellcheck source=scripts/test-env-swarm.sh
source "$(dirname "${BASH_SOURCE[0]}")/test-env-swarm.sh"

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
# Building gantry compiles jemalloc (its allocator on Linux) with its own configure and make.
command -v make >/dev/null 2>&1 || missing+=(make)
# The proxy image is Debian's caddy binary with the libraries ldd names.
[ -x /usr/bin/caddy ] || missing+=(caddy)
# The extra engines: namespaces and veths (ip), entering them (nsenter), their own containerd.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 || missing+=(containerd)
# The dashboard tests drive a real headless browser; the metrics test runs a real Prometheus.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# The packaging test checks dist/gantry.service with `systemd-analyze verify`.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The store's tests and the replica tests run against a real PostgreSQL.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
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

# ---------------------------------------------------------------- extra engines
# Engine I runs in network namespace gantry-hI, joined to this one by a veth pair:
# gh<I>h here (10.77.I.1/24) and gh<I>n inside (10.77.I.2/24). Its own containerd
# and dockerd run inside, entered with `nsenter --net` (never `ip netns exec`: it
# remounts /sys, hiding the cgroup mounts, and dockerd refuses to start). The
# namespace has no default route: its containers reach nothing but 10.77.I.1.

# host_addr I: where engine I's published ports are reached from here.
host_addr() { echo "10.77.$1.2"; }
# host_gw I: this namespace's end of engine I's veth.
host_gw() { echo "10.77.$1.1"; }
# host_dir I: engine I's state: data/ (kept by stop-hosts), logs, configs, helper pids.
host_dir() { echo "$HOSTS_DIR/h$1"; }
# host_sock I: engine I's API socket.
host_sock() { echo "$HOSTS_DIR/h$1/docker.sock"; }
# host_run I: engine I's exec-root, also home of its containerd's socket and state.
host_run() { echo "/run/gantry-h$1"; }
# in_ns I CMD...: run CMD in engine I's network namespace.
in_ns() { local i=$1; shift; nsenter --net="$NETNS_DIR/gantry-h$i" "$@"; }
# ns_port_open I PORT: something accepts TCP connections on 127.0.0.1:PORT inside namespace I.
ns_port_open() { in_ns "$1" timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null; }
# hdk I ARGS...: the docker CLI against engine I.
hdk() { local i=$1; shift; docker -H "unix://$(host_sock "$i")" "$@"; }
# host_engine_up I: engine I's dockerd answers on its socket.
host_engine_up() {
  [ "$(curl -s -m 5 --unix-socket "$(host_sock "$1")" http://engine/_ping 2>/dev/null)" = OK ]
}
# host_containerd_up I: engine I's containerd answers.
# (ctr waits ~10 s for a socket that does not exist yet, hence the -S first.)
host_containerd_up() {
  local sock
  sock="$(host_run "$1")/containerd/containerd.sock"
  [ -S "$sock" ] && ctr --address "$sock" --connect-timeout 2s --timeout 5s version >/dev/null 2>&1
}
# host_tls_ok: engine 1 answers over mutual TLS with the certificates in $CERTS.
host_tls_ok() {
  curl -fs -m 5 --cacert "$CERTS/ca.pem" --cert "$CERTS/cert.pem" --key "$CERTS/key.pem" \
    "https://$(host_addr 1):$HOST_TLS_PORT/version" >/dev/null 2>&1
}
# host_present I: anything of engine I exists (namespace, veth, runtime dir, helper pids).
host_present() {
  [ -e "$NETNS_DIR/gantry-h$1" ] || [ -e "$(host_run "$1")" ] \
    || ip link show "gh$1h" >/dev/null 2>&1 || compgen -G "$(host_dir "$1")/*.pid" >/dev/null
}
# hosts_up: how many engines, from engine 1 on without a gap, answer.
hosts_up() {
  local n=0
  while [ "$n" -lt "$HOSTS_MAX" ] && host_engine_up $((n + 1)); do n=$((n + 1)); done
  echo "$n"
}

# proc_gone PID: PID is no longer a running process.
proc_gone() { ! proc_live "$1"; }
# proc_comm PID: the command name of PID (fails when there is no such process).
proc_comm() { local c; read -r c 2>/dev/null <"/proc/$1/comm" && echo "$c"; }

# ns_pids I [COMM]: live processes in namespace gantry-hI, only those named COMM if
# given. Found through /proc/PID/ns/net, so helpers of another state dir count too.
ns_pids() {
  local ino pid
  ino=$(stat -L -c %i "$NETNS_DIR/gantry-h$1" 2>/dev/null) || return 0
  for pid in $({ find /proc/[0-9]*/ns/net -maxdepth 0 -lname "net:\[$ino\]" 2>/dev/null || true; } \
                 | cut -d/ -f3); do
    if [ -n "${2:-}" ] && [ "$(proc_comm "$pid")" != "$2" ]; then continue; fi
    if proc_live "$pid"; then echo "$pid"; fi
  done
}

# host_pids I COMM PIDFILE: engine I's live COMM processes: those in its namespace, and
# the one PIDFILE names if that is a COMM (it outlives a namespace deleted under it).
host_pids() {
  local pid
  pid=$(cat "$3" 2>/dev/null || true)
  {
    ns_pids "$1" "$2"
    if [ -n "$pid" ] && [ "$(proc_comm "$pid")" = "$2" ] && proc_live "$pid"; then echo "$pid"; fi
  } | sort -u
}

# daemon_pids COMM I...: live COMM (dockerd, containerd) processes of engines I...
daemon_pids() {
  local comm=$1 i; shift
  for i; do
    if [ "$comm" = dockerd ]; then
      host_pids "$i" dockerd "$(host_run "$i").pid"
    else
      host_pids "$i" "$comm" "$(host_dir "$i")/$comm.pid"
    fi
  done
}

# signal_all SIG CMD...: send SIG to each pid that CMD (a pid lister) lists.
signal_all() { local sig=$1 pid; shift; for pid in $("$@"); do kill -s "$sig" "$pid" 2>/dev/null || true; done; }

# none_left CMD...: CMD (a pid lister) lists nothing.
none_left() { [ -z "$("$@")" ]; }

# shim_children I: first processes of containers under engine I's shims. A shim killed
# before its container would leave that container running, orphaned.
shim_children() {
  local shims pid line rest
  shims=" $(ns_pids "$1" containerd-shim | tr '\n' ' ')"
  [ "$shims" != " " ] || return 0
  for pid in /proc/[0-9]*; do
    read -r line 2>/dev/null <"$pid/stat" || continue
    rest=${line##*) }        # after "PID (COMM) ": STATE PPID ...
    rest=${rest#* }
    case "$shims" in *" ${rest%% *} "*) echo "${pid#/proc/}" ;; esac
  done
}

# kill_pidfile FILE COMM: stop the process FILE names if it is a live COMM; drop FILE.
kill_pidfile() {
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(proc_comm "$pid")" = "$2" ] && proc_live "$pid"; then
    kill "$pid" 2>/dev/null || true
    wait_for 5 "" proc_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

# unmount_under DIR...: unmount what a killed engine left mounted at or below DIR...
unmount_under() {
  local d m
  for d; do
    awk -v d="$d" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo
  done | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# stop_hosts I...: stop engines I... cleanly: SIGTERM each dockerd (it stops its
# containers, then itself) and wait up to 20 s; then its containerd; then whatever is
# left in the namespace (shims, socats); the socats here; the veth and the namespace;
# the runtime dirs. Data dirs, configs and logs stay for the next start.
stop_hosts() {
  local i port
  [ "$#" -gt 0 ] || return 0
  log "stopping extra engine(s) $*"
  signal_all TERM daemon_pids dockerd "$@"
  if ! wait_for 20 "" none_left daemon_pids dockerd "$@"; then
    log "killing dockerd $(daemon_pids dockerd "$@" | tr '\n' ' ')(still running 20 s after SIGTERM)"
    signal_all KILL daemon_pids dockerd "$@"
  fi
  signal_all TERM daemon_pids containerd "$@"
  wait_for 10 "" none_left daemon_pids containerd "$@" || signal_all KILL daemon_pids containerd "$@"
  for i; do
    # Normally nothing is left; after a killed dockerd: containers first, then their shims.
    signal_all KILL shim_children "$i"
    signal_all TERM ns_pids "$i"
    wait_for 5 "" none_left ns_pids "$i" || signal_all KILL ns_pids "$i"
    wait_for 5 "" none_left ns_pids "$i" \
      || die "processes still run in namespace gantry-h$i: $(ns_pids "$i" | tr '\n' ' ')"
    for port in "${REGISTRY_ADDR##*:}" "${AUTH_REGISTRY_ADDR##*:}"; do
      kill_pidfile "$(host_dir "$i")/socat-$port.pid" socat
    done
    unmount_under "$(host_run "$i")" "$(host_dir "$i")/data"
    ip link delete "gh${i}h" 2>/dev/null || true
    ip netns delete "gantry-h$i" 2>/dev/null || rm -f "$NETNS_DIR/gantry-h$i"
    rm -rf "$(host_run "$i")" "$(host_run "$i").pid" "$(host_sock "$i")" "$(host_dir "$i")"/*.pid
    log "extra engine h$i stopped"
  done
}

# host_net_ok I: namespace I exists with lo, and both veth ends are up and addressed.
host_net_ok() {
  local i=$1 out
  in_ns "$i" true 2>/dev/null || return 1
  out=$(ip -o -4 addr show dev "gh${i}h" up 2>/dev/null) || return 1
  [[ "$out" == *" $(host_gw "$i")/24 "* ]] || return 1
  out=$(in_ns "$i" ip -o -4 addr show dev "gh${i}n" up 2>/dev/null) || return 1
  [[ "$out" == *" $(host_addr "$i")/24 "* ]] || return 1
  out=$(in_ns "$i" ip -o -4 addr show dev lo up 2>/dev/null) || return 1
  [[ "$out" == *" 127.0.0.1/8 "* ]]
}

# host_net I: make namespace I and its veth pair; a complete setup is left as it is.
host_net() {
  local i=$1 ns=gantry-h$1
  host_net_ok "$i" && return 0
  log "setting up namespace $ns: gh${i}h $(host_gw "$i") <-> gh${i}n $(host_addr "$i")"
  # A namespace file that is no longer a namespace (a reboot with /run on disk).
  if [ -e "$NETNS_DIR/$ns" ] && ! in_ns "$i" true 2>/dev/null; then
    ip netns delete "$ns" 2>/dev/null || rm -f "$NETNS_DIR/$ns"
  fi
  [ -e "$NETNS_DIR/$ns" ] || ip netns add "$ns"
  if ! in_ns "$i" ip link show "gh${i}n" >/dev/null 2>&1; then
    ip link delete "gh${i}h" 2>/dev/null || true
    ip link add "gh${i}h" type veth peer name "gh${i}n" netns "$ns"
  fi
  ip addr replace "$(host_gw "$i")/24" dev "gh${i}h"
  ip link set "gh${i}h" up
  in_ns "$i" ip link set lo up
  in_ns "$i" ip addr replace "$(host_addr "$i")/24" dev "gh${i}n"
  in_ns "$i" ip link set "gh${i}n" up
  host_net_ok "$i" || die "namespace $ns is not set up as expected"
}

# host_configs I: engine I's containerd config and daemon.json (so neither daemon
# reads the main engine's /etc/docker/daemon.json or uses /run/containerd). The key
# dockerd 20.10 derives its engine ID from is its own, not the shared /etc/docker/key.json.
host_configs() { engine_configs "$(host_dir "$1")" "$(host_run "$1")"; }

# engine_configs DIR RUN: an extra engine's containerd config and daemon.json in DIR,
# its containerd's state and socket under RUN (the test Swarm's engines use it too).
engine_configs() {
  local dir=$1 run=$2
  mkdir -p "$dir/data" "$run/containerd"
  printf '{ "deprecated-key-path": "%s" }\n' "$dir/key.json" | write_if_changed "$dir/daemon.json"
  write_if_changed "$dir/containerd.toml" <<EOF
version = 2
root = "$dir/data/containerd/daemon"
state = "$run/containerd/daemon"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$run/containerd/containerd.sock"
EOF
}

# host_start_containerd I: start engine I's containerd unless one runs (maybe still
# starting). Its own, not the main engine's: dockerd would otherwise share
# /run/containerd's if one runs there, and two engines in one containerd trip over each other.
host_start_containerd() {
  local i=$1
  [ -z "$(host_pids "$i" containerd "$(host_dir "$i")/containerd.pid")" ] || return 0
  log "starting containerd of engine h$i"
  start_bg "hosts/h$i/containerd" \
    nsenter --net="$NETNS_DIR/gantry-h$i" containerd --config "$(host_dir "$i")/containerd.toml"
}

# host_start_dockerd I: start engine I's dockerd unless it answers or one already runs
# in the namespace (never two engines in one namespace). Returns 1 when it did not start one.
host_start_dockerd() {
  local i=$1 dir run args
  dir=$(host_dir "$i") run=$(host_run "$i")
  host_engine_up "$i" && return 1
  [ -z "$(host_pids "$i" dockerd "$run.pid")" ] || return 1
  args=(dockerd -H "unix://$dir/docker.sock"
    --data-root "$dir/data" --exec-root "$run" --pidfile "$run.pid"
    --insecure-registry 10.77.0.0/16
    --containerd "$run/containerd/containerd.sock"
    --config-file "$dir/daemon.json")
  if [ "$i" -eq 1 ]; then
    args+=(-H "tcp://$(host_addr 1):$HOST_TLS_PORT" --tlsverify --tlscacert "$CERTS/ca.pem"
      --tlscert "$CERTS/h1-server-cert.pem" --tlskey "$CERTS/h1-server-key.pem")
  fi
  # No dockerd runs here, so a pid file left over is stale (and could name a reused pid).
  rm -f "$run.pid"
  log "starting dockerd of engine h$i (log: $dir/dockerd.log)"
  start_bg "hosts/h$i/dockerd" nsenter --net="$NETNS_DIR/gantry-h$i" "${args[@]}"
}

# host_wait WHAT I UP-CMD PIDFILE: wait up to 60 s for UP-CMD I; fail fast (after 2 s)
# when no WHAT process is left, e.g. it exited on a bad flag.
host_wait() {
  local what=$1 i=$2 up=$3 pidfile=$4 n
  for n in $(seq 120); do
    "$up" "$i" && return 0
    if [ "$n" -gt 4 ] && [ -z "$(host_pids "$i" "$what" "$pidfile")" ]; then
      tail -n 30 "$(host_dir "$i")/$what.log" >&2 || true
      die "$what of engine h$i exited during startup"
    fi
    sleep 0.5
  done
  "$up" "$i" && return 0
  tail -n 30 "$(host_dir "$i")/$what.log" >&2 || true
  if [ "$what" = dockerd ] && [ ! -S "$(host_sock "$i")" ]; then
    die "a dockerd runs in namespace gantry-h$i but not on $(host_sock "$i")" \
        "(started with another GANTRY_TEST_ENV_DIR?); run stop-hosts there first"
  fi
  die "$what of engine h$i did not answer within 60 s"
}

# host_registry_proxy I: 127.0.0.1:5115 and :5116 inside namespace I reach the
# registries here: a socat inside forwards to 10.77.I.1 over the veth, where a socat
# here (bound to that address only) forwards to 127.0.0.1. Starts what is missing
# without waiting (host_registry_check waits).
host_registry_proxy() {
  local i=$1 port gw dir here inside logged=0
  gw=$(host_gw "$i") dir=$(host_dir "$i")
  for port in "${REGISTRY_ADDR##*:}" "${AUTH_REGISTRY_ADDR##*:}"; do
    here=1 inside=1
    tcp_open "$gw" "$port" || here=0
    ns_port_open "$i" "$port" || inside=0
    [ "$here$inside" = 11 ] && continue
    if [ "$logged" -eq 0 ]; then
      log "starting registry proxies of engine h$i (127.0.0.1 inside -> $gw -> 127.0.0.1 here)"
      logged=1
    fi
    if [ "$here" -eq 0 ]; then
      kill_pidfile "$dir/socat-$port.pid" socat
      start_bg "hosts/h$i/socat-$port" socat \
        "TCP-LISTEN:$port,bind=$gw,reuseaddr,fork" "TCP:127.0.0.1:$port"
    fi
    if [ "$inside" -eq 0 ]; then
      kill_pidfile "$dir/socat-ns-$port.pid" socat
      start_bg "hosts/h$i/socat-ns-$port" nsenter --net="$NETNS_DIR/gantry-h$i" socat \
        "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "TCP:$gw:$port"
    fi
  done
}

# ns_http_status I URL EXPECTED: URL fetched inside namespace I answers HTTP EXPECTED.
ns_http_status() {
  [ "$(in_ns "$1" curl -s -o /dev/null -m 5 -w '%{http_code}' "$2" 2>/dev/null || true)" = "$3" ]
}

# host_registry_check I: through both hops, the plain registry answers 200 and the
# htpasswd one 401 inside namespace I; names the hop that is missing if not.
host_registry_check() {
  local i=$1 addr want port
  for addr in "$REGISTRY_ADDR 200" "$AUTH_REGISTRY_ADDR 401"; do
    want=${addr#* } addr=${addr% *} port=${addr##*:}
    wait_for 10 "" ns_http_status "$i" "http://$addr/v2/" "$want" && continue
    tcp_open "$(host_gw "$i")" "$port" || die "nothing listens on $(host_gw "$i"):$port (socat here)"
    ns_port_open "$i" "$port" || die "nothing listens on 127.0.0.1:$port in namespace gantry-h$i"
    die "http://$addr/v2/ in namespace gantry-h$i does not answer HTTP $want"
  done
}

# registry_digest: the digest the registry serves for $HOST_IMAGE (empty when none).
registry_digest() {
  { curl -fsI -m 5 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      "http://$REGISTRY_ADDR/v2/${BASE_IMAGE%:*}/manifests/${BASE_IMAGE##*:}" || true; } \
    | tr -d '\r' | sed -n 's/^docker-content-digest:[[:space:]]*//Ip'
}

# has_digest DIGEST SOCKET IMAGE: IMAGE on the engine on SOCKET was pushed or pulled as
# DIGEST, i.e. it is the registry's current one (the API directly: cheaper than the CLI).
has_digest() {
  local got
  got=$(curl -s -m 5 --unix-socket "$2" "http://engine/images/$3/json" 2>/dev/null || true)
  [[ "$got" == *"\"$REGISTRY_ADDR/${BASE_IMAGE%:*}@$1\""* ]]
}

# host_publish_check I: a port that engine I publishes answers here at 10.77.I.2
# (its own iptables DNAT inside the namespace). Run once, after the engine starts.
host_publish_check() {
  local i=$1 id port out n
  id=$(hdk "$i" run -d -p 0:8080 "$HOST_IMAGE" \
         sh -c "echo gantry-h$i >/tmp/index.html && exec httpd -f -p 8080 -h /tmp") || return 1
  port=$(hdk "$i" port "$id" 8080/tcp | sed -n '1s/.*://p')
  for n in $(seq 20); do
    out=$(curl -s -m 2 "http://$(host_addr "$i"):$port/" || true)
    [ "$out" != "gantry-h$i" ] || break
    sleep 0.25
  done
  hdk "$i" rm -f "$id" >/dev/null
  [ "$out" = "gantry-h$i" ] || { echo "http://$(host_addr "$i"):$port/ answered '$out'"; return 1; }
}

# ensure_hosts N: engines 1..N up, or more if namespaces of an earlier `hosts M` are
# still there (a run never stops engines; those are repaired too, so the env file
# lists engines 1..M without a gap). Stale namespace files do not count.
ensure_hosts() {
  local want=$1 i digest waiting=() started=() pids=()
  for i in $(seq "$HOSTS_MAX"); do
    if [ "$i" -gt "$want" ] && in_ns "$i" true 2>/dev/null; then want=$i; fi
  done
  [ "$want" -gt 0 ] || return 0
  # Engine 1 serves its certificate from memory: restart it when that one is stale.
  if host_engine_up 1 && { [ "$h1_cert_regenerated" -eq 1 ] || ! host_tls_ok; }; then
    log "engine h1 does not serve the current TLS certificate; restarting it"
    stop_hosts 1
  fi
  for i in $(seq "$want"); do host_net "$i"; done
  for i in $(seq "$want"); do
    host_configs "$i"
    host_containerd_up "$i" && continue
    host_start_containerd "$i"
    waiting+=("$i")
  done
  for i in "${waiting[@]}"; do
    host_wait containerd "$i" host_containerd_up "$(host_dir "$i")/containerd.pid"
  done
  for i in $(seq "$want"); do
    if host_start_dockerd "$i"; then started+=("$i"); fi
  done
  for i in $(seq "$want"); do
    host_wait dockerd "$i" host_engine_up "$(host_run "$i").pid"
  done
  [ "${#started[@]}" -eq 0 ] || log "engine(s) ${started[*]} up"
  for i in $(seq "$want"); do host_registry_proxy "$i"; done
  for i in $(seq "$want"); do host_registry_check "$i"; done

  # Readiness: every engine pulls the base image from the registry through its
  # namespace's 127.0.0.1:5115 (pushed once; later runs only compare digests).
  digest=$(registry_digest)
  # (The main engine's check names $BASE_IMAGE, so a rebuilt base image is pushed again.)
  if [ -z "$digest" ] || ! has_digest "$digest" "$DOCKER_SOCK" "$BASE_IMAGE"; then
    log "pushing $BASE_IMAGE as $HOST_IMAGE"
    dk tag "$BASE_IMAGE" "$HOST_IMAGE"
    dk push "$HOST_IMAGE" >/dev/null || die "cannot push $HOST_IMAGE"
    digest=$(registry_digest)
    [ -n "$digest" ] || die "the registry does not serve $HOST_IMAGE after the push"
  fi
  for i in $(seq "$want"); do
    has_digest "$digest" "$(host_sock "$i")" "$HOST_IMAGE" && continue
    hdk "$i" pull -q "$HOST_IMAGE" >"$(host_dir "$i")/pull.log" 2>&1 &
    pids+=("$i:$!")
  done
  for i in "${pids[@]}"; do
    wait "${i#*:}" || {
      cat "$(host_dir "${i%%:*}")/pull.log" >&2
      die "engine h${i%%:*} cannot pull $HOST_IMAGE through its 127.0.0.1:${REGISTRY_ADDR##*:}"
    }
  done
  [ "${#pids[@]}" -eq 0 ] || log "engine(s) $(printf '%s ' "${pids[@]%%:*}")pulled $HOST_IMAGE"

  pids=()
  for i in "${started[@]}"; do
    host_publish_check "$i" >"$(host_dir "$i")/publish-check.log" 2>&1 &
    pids+=("$i:$!")
  done
  for i in "${pids[@]}"; do
    wait "${i#*:}" || {
      cat "$(host_dir "${i%%:*}")/publish-check.log" >&2
      die "a port published by engine h${i%%:*} does not answer at $(host_addr "${i%%:*}")"
    }
  done
  [ "${#pids[@]}" -eq 0 ] || log "engine(s) ${started[*]} publish ports on 10.77.I.2"

  host_tls_ok || die "https://$(host_addr 1):$HOST_TLS_PORT/version fails with the certificates in $CERTS"
}

# write_env: $STATE/env, listing every extra engine that answers.
write_env() {
  local n i
  n=$(hosts_up)
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
    printf 'export GANTRY_TEST_PROXY_IMAGE=%q\n' "${PROXY_IMAGE:-$(proxy_image)}"
    printf 'export GANTRY_TEST_POSTGRES=%q\n' "$PG_URL"
    echo "# Extra engines (scripts/test-env.sh hosts N): every engine that answers."
    printf 'export GANTRY_TEST_HOSTS=%q\n' "$n"
    for i in $(seq "$n"); do
      printf 'export GANTRY_TEST_HOST_%s_DOCKER=%q\n' "$i" "unix://$(host_sock "$i")"
      printf 'export GANTRY_TEST_HOST_%s_ADDRESS=%q\n' "$i" "$(host_addr "$i")"
    done
    if [ "$n" -gt 0 ]; then
      printf 'export GANTRY_TEST_HOST_TLS=%q\n' "tcp://$(host_addr 1):$HOST_TLS_PORT"
      printf 'export GANTRY_TEST_HOST_IMAGE=%q\n' "$HOST_IMAGE"
    fi
    swarm_env
  } | write_if_changed "$STATE/env"
}

if [ "$MODE" = stop-hosts ]; then
  present=()
  for i in $(seq "$HOSTS_MAX"); do
    if host_present "$i"; then present+=("$i"); fi
  done
  [ "${#present[@]}" -gt 0 ] || log "no extra engine is running"
  stop_hosts "${present[@]}"
  if [ -f "$STATE/env" ]; then write_env; fi
  exit 0
fi

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

# ---------------------------------------------------------------- proxy image
# Debian's caddy with the libraries ldd names, in `FROM scratch`; pushed to the
# registry so every engine pulls it as gantry does. Its tag is caddy's version.
# (Debian starts a caddy service on :80 when the package is installed; stop it.)
# Only a caddy in this PID namespace is the package's: the proxies the tests run are
# caddy too, each in its container's namespace, and must live on.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now caddy >/dev/null 2>&1 || true; fi
for pid in $(pgrep -x caddy || true); do
  [ "$(readlink "/proc/$pid/ns/pid" 2>/dev/null)" = "$(readlink /proc/self/ns/pid)" ] || continue
  kill "$pid" 2>/dev/null || true
done
PROXY_IMAGE=$(proxy_image)
if ! dk image inspect "$PROXY_IMAGE" >/dev/null 2>&1 \
   || ! curl -fsI -m 5 "http://$REGISTRY_ADDR/v2/gantry-test/caddy/manifests/${PROXY_IMAGE##*:}" >/dev/null; then
  log "building $PROXY_IMAGE from /usr/bin/caddy"
  root=$(mktemp -d)
  mkdir -p "$root/usr/bin" "$root/tmp" "$root/etc" "$root/config" "$root/data"
  chmod 1777 "$root/tmp"
  cp /usr/bin/caddy "$root/usr/bin/caddy"
  for lib in $(ldd /usr/bin/caddy | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  printf 'root:x:0:0:root:/root:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . \
    | dk import \
        --change 'ENV XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data HOME=/tmp' \
        --change 'ENTRYPOINT ["/usr/bin/caddy"]' \
        --change 'CMD ["run", "--resume"]' - "$PROXY_IMAGE" >/dev/null
  rm -rf "$root"
  dk push "$PROXY_IMAGE" >/dev/null || die "cannot push $PROXY_IMAGE"
fi
out=$(dk run --rm "$PROXY_IMAGE" version) || die "$PROXY_IMAGE does not run"
log "proxy image $PROXY_IMAGE: caddy $out"

# ---------------------------------------------------------------- postgres
ensure_postgres

# ---------------------------------------------------------------- extra engines
ensure_hosts "$WANT_HOSTS"
ensure_swarm

# ---------------------------------------------------------------- env file + summary
write_env
hosts=$(hosts_up)

server_version=$(dk version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')
cat <<EOF
gantry test environment (state: $STATE)
  docker engine     unix://$DOCKER_SOCK  $server_version
  registry          http://$REGISTRY_ADDR
  auth registry     http://$AUTH_REGISTRY_ADDR  ($AUTH_USER / $AUTH_PASSWORD)
  docker over tcp   tcp://127.0.0.1:$DOCKER_TCP_PORT
  docker over tls   tcp://127.0.0.1:$DOCKER_TLS_PORT  (certs: $CERTS)
  base image        $BASE_IMAGE
  proxy image       $PROXY_IMAGE
  extra engines     $hosts (stop: scripts/test-env.sh stop-hosts)
EOF
for i in $(seq "$hosts"); do
  printf '    %-16s%s  ports at %s\n' "h$i" "unix://$(host_sock "$i")" "$(host_addr "$i")"
done
if [ "$hosts" -gt 0 ]; then
  printf '    %-16s%s  (certs: %s)\n' "h1 over tls" "tcp://$(host_addr 1):$HOST_TLS_PORT" "$CERTS"
  printf '    %-16s%s\n' "registries" "$REGISTRY_ADDR and $AUTH_REGISTRY_ADDR inside every engine too"
  printf '    %-16s%s\n' "image" "$HOST_IMAGE (pulled by every engine)"
fi
echo "  postgres          $PG_URL"
echo "  env file          $STATE/env"
