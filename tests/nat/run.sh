#!/usr/bin/env bash
# Real NAT traversal: two browsers behind two MASQUERADE NATs call each other through the room
# page (/r/<room>), with the Icebreaker server in a third network namespace that does not forward.
#
#   peerA 10.1.0.2 -- 10.1.0.1 natA 203.0.113.2 --+
#                                                 inet (a bridge: "the Internet") -- 203.0.113.1 srv
#   peerB 10.2.0.2 -- 10.2.0.1 natB 203.0.113.3 --+
#
#   - srv runs `icebreaker serve` (STUN/TURN on 203.0.113.1:3478, signaling and pages on :8080),
#     ip_forward=0: the peers can never meet through it, only relayed by TURN;
#   - natA/natB: ip_forward=1, MASQUERADE out of their public interface, and a router's usual
#     stateful firewall (from the public side only replies get in: see setup_nat for why it
#     matters); no route to the other side's private network (private host candidates are
#     unreachable);
#   - srv, natA and natB have a default route into nowhere (a veth whose gateway is a static
#     neighbour entry): traffic to unroutable addresses (the other side's 10.x candidates) is
#     dropped silently, as on the Internet, instead of failing with ENETUNREACH;
#   - 203.0.113.0/24 is a documentation range (TEST-NET-3): public as far as Icebreaker's peer
#     filter is concerned, so the server runs with its secure defaults (no --allow-peer). These
#     addresses exist only inside the namespaces this script creates.
#
# Headless Chromium runs inside peerA and peerB (Playwright launches a wrapper that execs it under
# `ip netns exec`); the test itself (tests/nat/nat.test.mjs) runs in the host namespace and talks to
# the browsers over pipes only. Scenarios: default policy = a direct call through the NATs'
# STUN-discovered public addresses; ?relay=1 = the call relayed by Icebreaker's TURN.
#
# Needs root, iproute2, iptables, chromium, node and tests/browser's playwright-core
# (scripts/install-deps). Namespace names carry this script's PID, so parallel runs do not clash;
# the EXIT trap stops everything started here (by PID) and deletes the namespaces.
# Environment: ICEBREAKER_BIN, CHROMIUM_PATH, IB_KEEP_TMP=1 (keep the work dir with the logs).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/tests/nat"
BIN="${ICEBREAKER_BIN:-$ROOT/target/release/icebreaker}"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
T0=$SECONDS

log() { printf '[%s nat] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
  echo "FAIL nat: $*"
  exit 1
}

# --- prerequisites -------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, iptables)"
for tool in ip iptables sysctl curl node; do
  command -v "$tool" >/dev/null || die "'$tool' not found (Debian: apt-get install iproute2 iptables procps curl nodejs)"
done
[[ -x "$CHROMIUM_PATH" ]] || die "$CHROMIUM_PATH not found (scripts/install-deps)"
[[ -d "$ROOT/tests/browser/node_modules/playwright-core" ]] ||
  die "playwright-core not installed in tests/browser (scripts/install-deps)"
[[ -x "$BIN" ]] || die "icebreaker binary not found at $BIN (cargo build --release -p icebreaker)"

# --- state and cleanup ---------------------------------------------------------------------
TAG="ibnat$$"
NS_INET="$TAG-inet" NS_SRV="$TAG-srv"
NS_NATA="$TAG-natA" NS_NATB="$TAG-natB"
NS_PEERA="$TAG-peerA" NS_PEERB="$TAG-peerB"
SRV_IP=203.0.113.1 NATA_IP=203.0.113.2 NATB_IP=203.0.113.3
HTTP_PORT=8080 TURN_PORT=3478
CREATED_NS=()
PIDS=()
TMP="$(mktemp -d "${TMPDIR:-/tmp}/icebreaker-nat.XXXXXX")"

stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  # Icebreaker drains on SIGTERM; a second one stops it at once.
  sleep 0.3
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid ns
  trap - EXIT
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  # Anything still running inside our namespaces (e.g. a Chromium left behind by a killed test
  # runner) was started by this script: the namespaces are ours alone.
  for ns in "${CREATED_NS[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for ns in "${CREATED_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [[ "${IB_KEEP_TMP:-}" == "1" ]]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# --- topology ------------------------------------------------------------------------------
in_ns() {
  local ns="$1"
  shift
  ip netns exec "$ns" "$@"
}

new_ns() {
  ip netns add "$1"
  CREATED_NS+=("$1")
  ip -n "$1" link set lo up
  in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# veth NS1 IF1 NS2 IF2: a veth pair created directly inside the namespaces (never in the host's).
veth() {
  ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
  ip -n "$1" link set "$2" up
  ip -n "$3" link set "$4" up
}

# A default route into nowhere: a veth pair inside NS, the gateway a static neighbour entry with
# a MAC nobody has. Packets to unroutable destinations leave and vanish without an error.
void_default() {
  ip -n "$1" link add void0 type veth peer name void1
  ip -n "$1" link set void0 up
  ip -n "$1" link set void1 up
  ip -n "$1" neigh add 169.254.0.1 lladdr 02:00:5e:00:de:ad dev void0 nud permanent
  ip -n "$1" route add default via 169.254.0.1 dev void0 onlink
}

log "creating namespaces $TAG-{inet,srv,natA,natB,peerA,peerB}"
for ns in "$NS_INET" "$NS_SRV" "$NS_NATA" "$NS_NATB" "$NS_PEERA" "$NS_PEERB"; do new_ns "$ns"; done

# The "Internet": a bridge in its own namespace, with srv, natA and natB plugged into it.
ip -n "$NS_INET" link add inet0 type bridge
ip -n "$NS_INET" link set inet0 up
for side in srv:"$NS_SRV" natA:"$NS_NATA" natB:"$NS_NATB"; do
  veth "$NS_INET" "${side%%:*}" "${side#*:}" pub
  ip -n "$NS_INET" link set "${side%%:*}" master inet0
done

# srv: one public address, no forwarding.
ip -n "$NS_SRV" addr add "$SRV_IP/24" dev pub
in_ns "$NS_SRV" sysctl -qw net.ipv4.ip_forward=0
void_default "$NS_SRV"

# nat X: public side on the Internet, private side toward peer X, MASQUERADE.
setup_nat() {
  local nat="$1" peer="$2" pub_ip="$3" net="$4"
  ip -n "$nat" addr add "$pub_ip/24" dev pub
  veth "$nat" priv "$peer" eth0
  ip -n "$nat" addr add "$net.1/24" dev priv
  in_ns "$nat" sysctl -qw net.ipv4.ip_forward=1
  void_default "$nat"
  in_ns "$nat" iptables -t nat -A POSTROUTING -o pub -j MASQUERADE ||
    die "iptables MASQUERADE in a namespace failed (kernel without netfilter NAT / nf_tables?)"
  # The stateful firewall every NAT router has: from the public side, only replies get in.
  # It matters for hole punching: without it, the other peer's first check (arriving before
  # this side has sent anything to it) is accepted for local delivery and leaves a conntrack
  # entry whose tuple then clashes with this side's own outgoing flow to that peer, so
  # MASQUERADE picks another source port for it (endpoint-dependent mapping) and the direct
  # path never forms. Dropped packets are never confirmed in conntrack: no clash.
  in_ns "$nat" iptables -A INPUT -i pub -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  in_ns "$nat" iptables -A INPUT -i pub -j DROP
  in_ns "$nat" iptables -A FORWARD -i pub -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  in_ns "$nat" iptables -A FORWARD -i pub -j DROP
  ip -n "$peer" addr add "$net.2/24" dev eth0
  ip -n "$peer" route add default via "$net.1"
}
setup_nat "$NS_NATA" "$NS_PEERA" "$NATA_IP" 10.1.0
setup_nat "$NS_NATB" "$NS_PEERB" "$NATB_IP" 10.2.0

[[ "$(in_ns "$NS_SRV" sysctl -n net.ipv4.ip_forward)" == 0 ]] || die "srv forwards"
log "topology: peerA 10.1.0.2 -> natA $NATA_IP, peerB 10.2.0.2 -> natB $NATB_IP, srv $SRV_IP (ip_forward=0)"

# --- the server ----------------------------------------------------------------------------
SECRET="nat-test-$RANDOM$RANDOM"
SRV_LOG="$TMP/server.log"
RUST_LOG="${RUST_LOG:-info}" ip netns exec "$NS_SRV" "$BIN" serve \
  --turn-listen "$SRV_IP:$TURN_PORT" --relay-ip "$SRV_IP" --relay-ports 50000-50999 \
  --http-listen "$SRV_IP:$HTTP_PORT" --turn-secret "$SECRET" >"$SRV_LOG" 2>&1 &
SRV_PID=$!
PIDS+=("$SRV_PID")
ready=0
for _ in $(seq 1 75); do
  kill -0 "$SRV_PID" 2>/dev/null || break
  if in_ns "$NS_SRV" curl -fsS --max-time 2 "http://$SRV_IP:$HTTP_PORT/healthz" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if ((!ready)); then
  tail -n 40 "$SRV_LOG" || true
  die "icebreaker did not become ready in srv"
fi
log "icebreaker ready in srv (pid $SRV_PID): turn $SRV_IP:$TURN_PORT, http $SRV_IP:$HTTP_PORT"

# Both peers reach the server through their NAT (TCP), and only as the NAT's public address.
for p in "$NS_PEERA" "$NS_PEERB"; do
  in_ns "$p" curl -fsS --max-time 3 -o /dev/null "http://$SRV_IP:$HTTP_PORT/healthz" ||
    die "${p#"$TAG-"} cannot reach the server through its NAT"
done

# --- the browsers --------------------------------------------------------------------------
for p in peerA peerB; do
  ns="$TAG-$p"
  printf '#!/bin/sh\nexec ip netns exec %q %q "$@"\n' "$ns" "$CHROMIUM_PATH" >"$TMP/chromium-$p"
  chmod +x "$TMP/chromium-$p"
done
mkdir -p "$TMP/home"

dump_diagnostics() {
  local ns
  echo "--- server log (last 30 lines)"
  tail -n 30 "$SRV_LOG" || true
  for ns in "$NS_NATA" "$NS_NATB"; do
    echo "--- ${ns#"$TAG-"}: MASQUERADE counters and UDP conntrack entries"
    in_ns "$ns" iptables -t nat -L POSTROUTING -v -n 2>&1 | tail -n +3 || true
    in_ns "$ns" grep -w udp /proc/net/nf_conntrack 2>/dev/null | head -n 20 || true
  done
}

export IB_NAT_BASE="http://$SRV_IP:$HTTP_PORT"
export IB_NAT_SERVER_IP="$SRV_IP" IB_NAT_PUBLIC_A="$NATA_IP" IB_NAT_PUBLIC_B="$NATB_IP"
export IB_NAT_CHROMIUM_A="$TMP/chromium-peerA" IB_NAT_CHROMIUM_B="$TMP/chromium-peerB"
rc=0
(cd "$HERE" && HOME="$TMP/home" TMPDIR="$TMP" exec timeout -k 5 90 node nat.test.mjs) &
PIDS+=("$!")
wait "$!" || rc=$?
if ((rc != 0)); then
  dump_diagnostics
  echo "FAIL nat: real NAT traversal ($((SECONDS - T0))s, exit $rc)"
  exit 1
fi
echo "PASS nat: real NAT traversal, direct via STUN and relayed via TURN ($((SECONDS - T0))s)"
