#!/usr/bin/env bash
# Bootstrap Twill on a Kubernetes node: install the binary and unit, write the CNI conflist,
# start the agent, wait for subnet.env. Safe to run again (idempotent).
set -euo pipefail

usage() {
  cat <<USAGE
Usage: bootstrap-node.sh --etcd-endpoints URLS [options]
  --etcd-endpoints URLS   comma-separated etcd client URLs (required)
  --binary PATH           twill binary to install (default: ./twill or \`command -v twill\`)
  --iface NAME            interface for node-to-node traffic (default: the default route's)
  --prefix DIR            install root, for testing (default: /)
  --cni-bin-dir DIR       CNI plugin directory (default: /opt/cni/bin)
  --cni-conf-dir DIR      CNI config directory (default: /etc/cni/net.d)
  --no-start              install and configure, but do not start the service
  --timeout SECONDS       how long to wait for subnet.env (default 60)
  -h, --help              this text
USAGE
}

ENDPOINTS="" BINARY="" IFACE="" PREFIX="/" CNI_BIN=/opt/cni/bin CNI_CONF=/etc/cni/net.d START=1 TIMEOUT=60
while [ $# -gt 0 ]; do
  case "$1" in
    --etcd-endpoints) ENDPOINTS=$2; shift 2 ;;
    --binary) BINARY=$2; shift 2 ;;
    --iface) IFACE=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --cni-bin-dir) CNI_BIN=$2; shift 2 ;;
    --cni-conf-dir) CNI_CONF=$2; shift 2 ;;
    --no-start) START=0; shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bootstrap-node.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$ENDPOINTS" ] || { echo "bootstrap-node.sh: --etcd-endpoints is required" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
[ -n "$BINARY" ] || BINARY=$( [ -x ./twill ] && echo ./twill || command -v twill || true)
[ -x "$BINARY" ] || { echo "bootstrap-node.sh: no twill binary (use --binary)" >&2; exit 2; }
root=${PREFIX%/}

install_if_changed() { # src dst mode
  if ! cmp -s "$1" "$2" 2>/dev/null; then install -D -m "$3" "$1" "$2"; echo "installed $2"; fi
}
install_if_changed "$BINARY" "$root/usr/local/bin/twill" 0755
install_if_changed "$BINARY" "$root$CNI_BIN/flannel" 0755
install_if_changed "$here/../systemd/twill.service" "$root/etc/systemd/system/twill.service" 0644

env_file="$root/etc/twill/twill.env"
tmp=$(mktemp)
{
  echo "FLANNELD_ETCD_ENDPOINTS=$ENDPOINTS"
  echo "FLANNELD_SUBNET_FILE=/run/flannel/subnet.env"
  [ -n "$IFACE" ] && echo "FLANNELD_IFACE=$IFACE"
  echo "FLANNELD_IP_MASQ=true"
} >"$tmp"
install_if_changed "$tmp" "$env_file" 0600
rm -f "$tmp"
install_if_changed "$here/../../Examples/kubernetes/10-twill.conflist" "$root$CNI_CONF/10-twill.conflist" 0644

if [ "$START" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now twill.service
  deadline=$(( $(date +%s) + TIMEOUT ))
  until [ -s /run/flannel/subnet.env ]; do
    [ "$(date +%s)" -ge "$deadline" ] && { echo "bootstrap-node.sh: no /run/flannel/subnet.env after ${TIMEOUT}s; see journalctl -u twill" >&2; exit 1; }
    sleep 1
  done
  echo "twill is up: $(grep FLANNEL_SUBNET /run/flannel/subnet.env)"
fi
