#!/usr/bin/env bash
# A three-node Twill cluster on this machine, in network namespaces:
#   twill-demo-sw   a switch (bridge br0) with etcd at 198.51.100.254:2379
#   twill-demo-h1..3  hosts on 198.51.100.1-3, each running `twill agent` and a bridge
#                     (twd0, as docker0 would be) holding the first address of its subnet
# Usage: deploy/demo.sh up [backend] | down | status
# Only namespaces this script creates are touched; nothing is added to the machine's own.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=/run/twill-demo
NS_SW=twill-demo-sw
HOSTS=(twill-demo-h1 twill-demo-h2 twill-demo-h3)
ETCD=http://198.51.100.254:2379
TWILL=${TWILL:-$(swift build --show-bin-path 2>/dev/null)/twill}

down() {
  for ns in "${HOSTS[@]}" "$NS_SW"; do
    if ip netns list | grep -qw "$ns"; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
    fi
  done
  sleep 1
  for ns in "${HOSTS[@]}" "$NS_SW"; do
    if ip netns list | grep -qw "$ns"; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
      ip netns del "$ns"
    fi
  done
  rm -rf "$STATE"
  echo "twill demo removed"
}

status() {
  echo "== leases (twill leases, run inside the switch namespace)"
  ip netns exec "$NS_SW" "$TWILL" leases --etcd-endpoints "$ETCD"
  for i in 0 1 2; do
    echo "== ${HOSTS[$i]}: $(grep FLANNEL_SUBNET "$STATE/h$((i + 1))/subnet.env" 2>/dev/null || echo 'no subnet.env yet')"
  done
}

wait_for() { # wait_for SECONDS COMMAND...
  local until=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$until" ] && return 1
    sleep 0.2
  done
}

up() {
  local backend=${1:-udp}
  [ -x "$TWILL" ] || { echo "twill binary not found at $TWILL (run swift build)"; exit 1; }
  down >/dev/null 2>&1 || true
  mkdir -p "$STATE"
  ip netns add "$NS_SW"
  ip -n "$NS_SW" link set lo up
  ip -n "$NS_SW" link add br0 type bridge
  ip -n "$NS_SW" addr add 198.51.100.254/24 dev br0
  ip -n "$NS_SW" link set br0 up
  for i in 0 1 2; do
    local ns=${HOSTS[$i]} n=$((i + 1))
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$NS_SW" link add "p$n" type veth peer name eth0 netns "$ns"
    ip -n "$NS_SW" link set "p$n" master br0 up
    ip -n "$ns" addr add "198.51.100.$n/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  done
  ip netns exec "$NS_SW" etcd --name demo --data-dir "$STATE/etcd" --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster demo=http://127.0.0.1:2380 --log-level error >"$STATE/etcd.log" 2>&1 &
  wait_for 20 ip netns exec "$NS_SW" etcdctl --endpoints "$ETCD" endpoint health || { echo "etcd did not start: $STATE/etcd.log"; exit 1; }
  ip netns exec "$NS_SW" "$TWILL" network set --etcd-endpoints "$ETCD" --network 198.18.0.0/16 --backend "$backend"
  for i in 0 1 2; do
    local ns=${HOSTS[$i]} n=$((i + 1))
    mkdir -p "$STATE/h$n"
    ip netns exec "$ns" "$TWILL" agent --etcd-endpoints "$ETCD" --iface eth0 --subnet-file "$STATE/h$n/subnet.env" \
      >"$STATE/h$n/agent.log" 2>&1 &
  done
  for i in 0 1 2; do
    local n=$((i + 1))
    wait_for 30 test -s "$STATE/h$n/subnet.env" || { echo "agent on ${HOSTS[$i]} wrote no subnet.env: $STATE/h$n/agent.log"; tail -5 "$STATE/h$n/agent.log"; exit 1; }
    # shellcheck disable=SC1090
    local gw; gw=$(. "$STATE/h$n/subnet.env"; echo "$FLANNEL_SUBNET")
    ip -n "${HOSTS[$i]}" link add twd0 type bridge
    ip -n "${HOSTS[$i]}" addr add "$gw" dev twd0
    ip -n "${HOSTS[$i]}" link set twd0 up
  done
  status
  echo "== ping across the overlay, subnet to subnet"
  local ok=0
  for i in 0 1 2; do
    for j in 0 1 2; do
      [ "$i" = "$j" ] && continue
      local src dst
      src=$(. "$STATE/h$((i + 1))/subnet.env"; echo "${FLANNEL_SUBNET%/*}")
      dst=$(. "$STATE/h$((j + 1))/subnet.env"; echo "${FLANNEL_SUBNET%/*}")
      if wait_for 10 ip netns exec "${HOSTS[$i]}" ping -c1 -W1 -I "$src" "$dst"; then
        echo "  ${HOSTS[$i]} ($src) -> ${HOSTS[$j]} ($dst): ok"
      else
        echo "  ${HOSTS[$i]} ($src) -> ${HOSTS[$j]} ($dst): FAILED"; ok=1
      fi
    done
  done
  local s1 s2
  s1=$(. "$STATE/h1/subnet.env"; echo "${FLANNEL_SUBNET%/*}")
  s2=$(. "$STATE/h2/subnet.env"; echo "${FLANNEL_SUBNET%/*}")
  cat <<MSG

The demo is running ($backend backend). Try:
  ip netns exec ${HOSTS[0]} ping -I $s1 $s2                 # h1's subnet to h2's
  ip netns exec $NS_SW $TWILL leases --etcd-endpoints $ETCD   # the lease table
  ip netns exec ${HOSTS[0]} ip route show proto 84             # Twill's routes on h1
  tail -f $STATE/h1/agent.log
Remove everything with: make demo-down
MSG
  return $ok
}

case "${1:-up}" in
  up) shift || true; up "${1:-${BACKEND:-udp}}" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [udp|vxlan|host-gw] | down | status"; exit 2 ;;
esac
