# shellcheck shell=bash
# The test Swarm: sourced by scripts/test-env.sh (it uses that script's helpers:
# log, die, start_bg, wait_for, write_if_changed, kill_pidfile, tcp_open, the
# registry addresses and $HOST_IMAGE). Defines functions only; test-env.sh calls
# `ensure_swarm` after the extra engines are up and `swarm_env` while it writes the env.
#
# Three engines of their own, apart from the extra engines h1..h8 (whose tests expect
# plain engines), form one Swarm: node 1 is the manager, nodes 2 and 3 are workers.
# Node N runs in network namespace gantry-sN, joined to this one by a veth pair:
# gsNh here (10.77.(20+N).1/24) and gsNn inside (10.77.(20+N).2/24). The nodes reach
# each other over their veth addresses through this namespace (a route per other
# node inside, forwarding here for the gs* veths only): Swarm's control traffic
# (2377/tcp), gossip (7946) and the overlay's VXLAN (4789/udp). Each dockerd also runs
# in a UTS namespace of its own with the host name gantry-sN, so the nodes have
# distinct names. Overlay networks get addresses from 10.78.0.0/16. The kernel here has
# no IPVS, so the ingress routing mesh does not work: services publish in `mode: host`.
#
# GANTRY_TEST_SWARM=0 leaves the Swarm out (nothing is started or stopped).

SWARM_NODES=3
SWARM_DIR="$STATE/swarm"
# Overlay networks' subnets: away from 10.77.0.0/16, which the veths use.
SWARM_ADDR_POOL=10.78.0.0/16

swarm_addr() { echo "10.77.$((20 + $1)).2"; }
swarm_gw() { echo "10.77.$((20 + $1)).1"; }
swarm_dir() { echo "$SWARM_DIR/s$1"; }
swarm_sock() { echo "$SWARM_DIR/s$1/docker.sock"; }
swarm_run() { echo "/run/gantry-s$1"; }
in_swarm_ns() { local i=$1; shift; nsenter --net="$NETNS_DIR/gantry-s$i" "$@"; }
sdk() { local i=$1; shift; docker -H "unix://$(swarm_sock "$i")" "$@"; }
swarm_engine_up() {
  [ "$(curl -s -m 5 --unix-socket "$(swarm_sock "$1")" http://engine/_ping 2>/dev/null)" = OK ]
}
swarm_containerd_up() {
  local sock
  sock="$(swarm_run "$1")/containerd/containerd.sock"
  [ -S "$sock" ] && ctr --address "$sock" --connect-timeout 2s --timeout 5s version >/dev/null 2>&1
}
# swarm_pid_of I COMM PIDFILE: node I's COMM process, if the pid file names a live one.
swarm_pid_of() {
  local pid
  pid=$(cat "$3" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(proc_comm "$pid")" = "$2" ] && proc_live "$pid"; then echo "$pid"; fi
}

# swarm_net I: namespace gantry-sI, its veth pair, and routes to the other nodes.
swarm_net() {
  local i=$1 ns=gantry-s$1 j
  if [ -e "$NETNS_DIR/$ns" ] && ! in_swarm_ns "$i" true 2>/dev/null; then
    ip netns delete "$ns" 2>/dev/null || rm -f "$NETNS_DIR/$ns"
  fi
  [ -e "$NETNS_DIR/$ns" ] || { log "setting up namespace $ns at $(swarm_addr "$i")"; ip netns add "$ns"; }
  if ! in_swarm_ns "$i" ip link show "gs${i}n" >/dev/null 2>&1; then
    ip link delete "gs${i}h" 2>/dev/null || true
    ip link add "gs${i}h" type veth peer name "gs${i}n" netns "$ns"
  fi
  ip addr replace "$(swarm_gw "$i")/24" dev "gs${i}h"
  ip link set "gs${i}h" up
  in_swarm_ns "$i" ip link set lo up
  in_swarm_ns "$i" ip addr replace "$(swarm_addr "$i")/24" dev "gs${i}n"
  in_swarm_ns "$i" ip link set "gs${i}n" up
  for j in $(seq "$SWARM_NODES"); do
    [ "$j" -eq "$i" ] && continue
    in_swarm_ns "$i" ip route replace "10.77.$((20 + j)).0/24" via "$(swarm_gw "$i")"
  done
}

# swarm_forward: this namespace forwards between the nodes' veths (and nothing else
# new). The rule goes before Docker's chains, whose policy drops forwarded packets.
swarm_forward() {
  # (Through /proc: procps, which has sysctl, may be missing.)
  echo 1 >/proc/sys/net/ipv4/ip_forward
  iptables -C FORWARD -i 'gs+' -o 'gs+' -j ACCEPT 2>/dev/null \
    || iptables -I FORWARD 1 -i 'gs+' -o 'gs+' -j ACCEPT
}

swarm_start() {
  local i=$1 dir run
  dir=$(swarm_dir "$i") run=$(swarm_run "$i")
  engine_configs "$dir" "$run"
  if ! swarm_containerd_up "$i" && [ -z "$(swarm_pid_of "$i" containerd "$dir/containerd.pid")" ]; then
    log "starting containerd of swarm node s$i"
    start_bg "swarm/s$i/containerd" \
      nsenter --net="$NETNS_DIR/gantry-s$i" containerd --config "$dir/containerd.toml"
  fi
  wait_for 60 "" swarm_containerd_up "$i" || {
    tail -n 30 "$dir/containerd.log" >&2 || true
    die "containerd of swarm node s$i did not answer within 60 s"
  }
  if ! swarm_engine_up "$i" && [ -z "$(swarm_pid_of "$i" dockerd "$run.pid")" ]; then
    rm -f "$run.pid"
    log "starting dockerd of swarm node s$i (log: $dir/dockerd.log)"
    start_bg "swarm/s$i/dockerd" nsenter --net="$NETNS_DIR/gantry-s$i" unshare --uts \
      sh -c "hostname gantry-s$i && exec dockerd -H unix://$dir/docker.sock \
        --data-root $dir/data --exec-root $run --pidfile $run.pid \
        --containerd $run/containerd/containerd.sock --config-file $dir/daemon.json"
  fi
}

# swarm_registry_proxy I: 127.0.0.1:5115 and :5116 inside node I's namespace reach the
# registries here, as for the extra engines (a socat inside, one here on the veth).
swarm_registry_proxy() {
  local i=$1 port gw dir
  gw=$(swarm_gw "$i") dir=$(swarm_dir "$i")
  for port in "${REGISTRY_ADDR##*:}" "${AUTH_REGISTRY_ADDR##*:}"; do
    if ! tcp_open "$gw" "$port"; then
      kill_pidfile "$dir/socat-$port.pid" socat
      start_bg "swarm/s$i/socat-$port" socat \
        "TCP-LISTEN:$port,bind=$gw,reuseaddr,fork" "TCP:127.0.0.1:$port"
    fi
    if ! in_swarm_ns "$i" timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
      kill_pidfile "$dir/socat-ns-$port.pid" socat
      start_bg "swarm/s$i/socat-ns-$port" nsenter --net="$NETNS_DIR/gantry-s$i" socat \
        "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "TCP:$gw:$port"
    fi
  done
}

swarm_state() { sdk "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true; }
# swarm_member I: node I is in node 1's swarm and the manager sees it Ready (a worker's
# own `docker info` names no cluster, so the manager is asked).
swarm_member() {
  local id
  [ "$(swarm_state "$1")" = active ] || return 1
  id=$(sdk "$1" info --format '{{.Swarm.NodeID}}' 2>/dev/null) && [ -n "$id" ] || return 1
  [ "$(sdk 1 node inspect --format '{{.Status.State}}' "$id" 2>/dev/null)" = ready ]
}
# swarm_ready_count: nodes the manager sees Ready.
swarm_ready_count() {
  sdk 1 node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$' || true
}
swarm_all_ready() { [ "$(swarm_ready_count)" -eq "$SWARM_NODES" ]; }

# swarm_form: node 1 manages a Swarm that nodes 2..N have joined as workers. A node in
# another Swarm (node 1's data was reset) leaves it first; nodes the manager lists as
# down (an earlier identity of a rejoined node) are removed from its list.
swarm_form() {
  local i token down
  if [ "$(swarm_state 1)" != active ]; then
    log "forming the test swarm: manager s1 at $(swarm_addr 1)"
    sdk 1 swarm init --advertise-addr "$(swarm_addr 1)" --listen-addr "$(swarm_addr 1):2377" \
      --default-addr-pool "$SWARM_ADDR_POOL" >/dev/null || die "swarm init on s1 failed"
  fi
  token=$(sdk 1 swarm join-token -q worker) || die "no worker join token from s1"
  for i in $(seq 2 "$SWARM_NODES"); do
    swarm_member "$i" && continue
    if [ "$(swarm_state "$i")" != inactive ]; then sdk "$i" swarm leave --force >/dev/null 2>&1 || true; fi
    log "swarm node s$i joins as a worker"
    sdk "$i" swarm join --token "$token" --advertise-addr "$(swarm_addr "$i")" \
      --listen-addr "$(swarm_addr "$i"):2377" "$(swarm_addr 1):2377" >/dev/null \
      || die "s$i cannot join the swarm at $(swarm_addr 1):2377"
  done
  wait_for 60 "" swarm_all_ready || {
    sdk 1 node ls >&2 || true
    die "the test swarm has $(swarm_ready_count) of $SWARM_NODES nodes Ready"
  }
  # Earlier identities of nodes that joined again (their data was reset) stay listed as
  # Down; the manager forgets them.
  down=$(sdk 1 node ls --format '{{.ID}} {{.Status}}' | awk '$2 == "Down" { print $1 }')
  if [ -n "$down" ]; then
    # shellcheck disable=SC2086
    sdk 1 node rm --force $down >/dev/null 2>&1 || true
  fi
  # A placement constraint can name a node by this label (all nodes have distinct
  # host names too).
  for i in $(seq "$SWARM_NODES"); do
    local id
    id=$(sdk "$i" info --format '{{.Swarm.NodeID}}')
    [ "$(sdk 1 node inspect --format '{{index .Spec.Labels "gantry-test-node"}}' "$id")" = "s$i" ] \
      || sdk 1 node update --label-add "gantry-test-node=s$i" "$id" >/dev/null
  done
}

# ensure_swarm: the test Swarm up, every node holding $HOST_IMAGE.
ensure_swarm() {
  local i pids=()
  [ "${GANTRY_TEST_SWARM:-1}" != 0 ] || return 0
  mkdir -p "$SWARM_DIR"
  swarm_forward
  for i in $(seq "$SWARM_NODES"); do swarm_net "$i"; done
  for i in $(seq "$SWARM_NODES"); do swarm_start "$i"; done
  for i in $(seq "$SWARM_NODES"); do
    wait_for 60 "" swarm_engine_up "$i" || {
      tail -n 30 "$(swarm_dir "$i")/dockerd.log" >&2 || true
      die "dockerd of swarm node s$i did not answer within 60 s"
    }
    swarm_registry_proxy "$i"
  done
  swarm_form
  for i in $(seq "$SWARM_NODES"); do
    sdk "$i" image inspect "$HOST_IMAGE" >/dev/null 2>&1 && continue
    sdk "$i" pull -q "$HOST_IMAGE" >"$(swarm_dir "$i")/pull.log" 2>&1 &
    pids+=("$i:$!")
  done
  for i in "${pids[@]}"; do
    wait "${i#*:}" || {
      cat "$(swarm_dir "${i%%:*}")/pull.log" >&2
      die "swarm node s${i%%:*} cannot pull $HOST_IMAGE"
    }
  done
  log "test swarm: manager s1 at $(swarm_addr 1), $(swarm_ready_count) nodes Ready"
}

# swarm_env: the Swarm's lines of $STATE/env (none when it is not up).
swarm_env() {
  local i
  [ "${GANTRY_TEST_SWARM:-1}" != 0 ] || return 0
  swarm_engine_up 1 && [ "$(swarm_state 1)" = active ] || return 0
  echo "# The test swarm (scripts/test-env-swarm.sh): node 1 manages, 2 and 3 work."
  printf 'export GANTRY_TEST_SWARM_MANAGER=%q\n' "unix://$(swarm_sock 1)"
  printf 'export GANTRY_TEST_SWARM_NODES=%q\n' "$SWARM_NODES"
  for i in $(seq "$SWARM_NODES"); do
    printf 'export GANTRY_TEST_SWARM_%s_DOCKER=%q\n' "$i" "unix://$(swarm_sock "$i")"
    printf 'export GANTRY_TEST_SWARM_%s_ADDRESS=%q\n' "$i" "$(swarm_addr "$i")"
  done
}
