#!/usr/bin/env bash
# Runs turn.test.mjs, room.test.mjs, sfu.test.mjs, socketio.test.mjs,
# cluster.test.mjs, admin.test.mjs, sip.test.mjs and dial.test.mjs (headless
# Chromium via playwright-core) against the server under test, in its own
# network namespace. All but turn.test.mjs (the served pages, the SDK,
# signaling, the SFU, socket.io, the Redis cluster, the /admin view, the SIP
# gateway with JsSIP and sipp, and phones dialed into a room) need icebreaker
# itself: they are skipped with ICEBREAKER_TEST_SERVER=coturn.
# Usage: tests/browser/run.sh   (ICEBREAKER_TEST_SERVER=coturn to validate
# the suite against coturn; CHROMIUM_PATH to use another Chromium binary;
# IB_BROWSER_STEPS=turn,room,sfu,socketio,cluster,admin,sip,dial to run only some
# steps, default all).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/../interop
source "$(dirname "$0")/../interop/lib.sh"
ib_enter_netns "$0" "$@"
ib_init browser

HERE="$IB_ROOT/tests/browser"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM_PATH" ]]; then
  echo "FAIL browser: $CHROMIUM_PATH not found (scripts/install-deps)"
  exit 1
fi
if [[ ! -d "$HERE/node_modules/playwright-core" ]]; then
  echo "FAIL browser: playwright-core not installed in tests/browser (scripts/install-deps)"
  exit 1
fi

IB_BROWSER_STEPS="${IB_BROWSER_STEPS:-turn,room,sfu,socketio,cluster,admin,sip,dial}"
want_step() { [[ ",$IB_BROWSER_STEPS," == *",$1,"* ]]; }

ib_gen_cert "$IB_TMP/cert"
if want_step turn || want_step room || want_step sfu || want_step socketio; then
  ib_start_server main 20000 --tls 20010
fi

run_browser() {
  export IB_TURN_PORT IB_SECRET_PORT IB_TLS_PORT IB_USER IB_PASS IB_SECRET IB_CERT_SPKI CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 180 node turn.test.mjs
}
if want_step turn; then
  ib_check "Chromium WebRTC over TURN/UDP, TURN/TCP, TURNS" run_browser
fi

run_room() {
  export IB_HTTP_PORT IB_CERT_SPKI CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 220 node room.test.mjs
}
if [[ "$IB_SERVER" == "icebreaker" ]] && want_step room; then
  ib_check "Chromium room pages + SDK: mesh video, TURN, resume, SSE/poll fallback, ICE tester" run_room
fi

run_sfu() {
  # The same server: its SFU listens on IB_SFU_PORT (UDP + ICE-TCP).
  export IB_HTTP_PORT IB_SFU_PORT CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 180 node sfu.test.mjs
}
if [[ "$IB_SERVER" == "icebreaker" ]] && want_step sfu; then
  ib_check "Chromium SFU rooms: 6-way video, data channel, leave/rejoin, simulcast views, TURN, mesh→SFU switch, resume" run_sfu
fi

run_socketio() {
  export IB_HTTP_PORT CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 160 node socketio.test.mjs
}
if [[ "$IB_SERVER" == "icebreaker" ]] && want_step socketio; then
  if [[ ! -d "$HERE/node_modules/socket.io-client" ]]; then
    echo "FAIL browser: socket.io-client not installed in tests/browser (scripts/install-deps)"
    exit 1
  fi
  ib_check "Chromium socket.io codelab page: two tabs decode each other's video, bye on a closed tab, full" run_socketio
fi

# A cluster: one Redis and two nodes (same --turn-secret, realm and users, from
# ib_start_server), on ports apart from the server above: TURN 23000 / 23500,
# HTTP +5, SFU +7, relays +1000..+1199; Redis on 23950; the test's own TCP
# proxy (the load balancer) on 23900. The test kills node 1 (SIGKILL) itself.
# The locals keep ib_start_server's globals (IB_HTTP_PORT, ...) of the server
# above intact.
run_cluster() {
  local IB_SERVER_PID IB_SERVER_LOG IB_TURN_PORT IB_TLS_PORT IB_SFU_PORT IB_HTTP_PORT IB_SECRET_PORT IB_SECRET_TLS_PORT
  local IB_REDIS_PID IB_REDIS_URL IB_REDIS_LOG rc=0 n1 n2 log1 log2
  ib_start_redis 23950 || return 1
  # Node 1 takes one TURN allocation at most: scenario 2 checks Chromium follows its 300.
  ib_start_server node1 23000 -- --cluster "$IB_REDIS_URL" --node-id n1 --max-allocations 1 || return 1
  n1=$IB_SERVER_PID log1=$IB_SERVER_LOG
  local IB_CLUSTER_N1_PID=$n1 IB_CLUSTER_HTTP1=$IB_HTTP_PORT
  # Chromium refuses a TURN redirect (300 Try Alternate) to a loopback address: node 2 also
  # listens on an address of a veth pair inside this namespace, which it announces first.
  if ! ip addr show dev ib-v0 >/dev/null 2>&1; then
    ip link add ib-v0 type veth peer name ib-v1 || return 1
    ip addr add 10.77.0.2/32 dev ib-v0 || return 1
    ip link set ib-v0 up
    ip link set ib-v1 up
  fi
  ib_start_server node2 23500 -- --cluster "$IB_REDIS_URL" --node-id n2 --turn-listen 10.77.0.2:23500 || return 1
  n2=$IB_SERVER_PID log2=$IB_SERVER_LOG
  local IB_CLUSTER_HTTP2=$IB_HTTP_PORT IB_CLUSTER_PROXY_PORT=23900 IB_CLUSTER_TURN1=23000 IB_CLUSTER_TURN2=23500
  export IB_CLUSTER_N1_PID IB_CLUSTER_HTTP1 IB_CLUSTER_HTTP2 IB_CLUSTER_PROXY_PORT IB_CLUSTER_TURN1 IB_CLUSTER_TURN2 IB_SECRET CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 120 node cluster.test.mjs || rc=$?
  kill -0 "$n1" 2>/dev/null || ib_log "node 1 (pid $n1) was killed by the test, as planned (bash may report it as 'Killed')"
  if ((rc != 0)); then
    echo "node 1 log (tail):"
    tail -n 30 "$log1" || true
    echo "node 2 log (tail):"
    tail -n 30 "$log2" || true
  fi
  ib_stop_pid "$n2"
  ib_stop_pid "$n1"
  ib_stop_pid "$IB_REDIS_PID"
  return "$rc"
}
if [[ "$IB_SERVER" == "icebreaker" ]] && want_step cluster; then
  ib_check "Chromium on two cluster nodes: a call across nodes; a node killed behind a load balancer, sessions resume on the other" run_cluster
fi

# The admin view on a server of its own with --admin-token (the test drains it at the end):
# TURN 26000, HTTP 26005, SFU 26007, relays 27000..27199.
run_admin() {
  local IB_SERVER_PID IB_SERVER_LOG IB_TURN_PORT IB_TLS_PORT IB_SFU_PORT IB_HTTP_PORT IB_SECRET_PORT IB_SECRET_TLS_PORT
  local rc=0 IB_ADMIN_TOKEN="admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  ib_start_server admin 26000 -- --admin-token "$IB_ADMIN_TOKEN" || return 1
  local IB_ADMIN_HTTP_PORT=$IB_HTTP_PORT
  export IB_ADMIN_HTTP_PORT IB_ADMIN_TOKEN CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 110 node admin.test.mjs || rc=$?
  if ((rc != 0)); then
    echo "server log (tail):"
    tail -n 30 "$IB_SERVER_LOG" || true
  fi
  ib_stop_pid "$IB_SERVER_PID"
  return "$rc"
}
if [[ "$IB_SERVER" == "icebreaker" ]] && want_step admin; then
  ib_check "Chromium admin view: live room and participants, bandwidth chart, remove a participant, drain" run_admin
fi

# The SIP gateway on a server of its own: TURN 28000, HTTP 28005, SFU 28007, relays
# 29000..29199, its SIP socket toward the upstream on 28060. The upstream is sipp, which
# sip.test.mjs starts itself (one scenario after the other, on SIP port 28070, RTP echo on
# 28080 and 28082).
run_sip() {
  local IB_SERVER_PID IB_SERVER_LOG IB_TURN_PORT IB_TLS_PORT IB_SFU_PORT IB_HTTP_PORT IB_SECRET_PORT IB_SECRET_TLS_PORT
  local rc=0 IB_SIP_SIPP_PORT=28070 IB_SIP_MEDIA_PORT=28080 IB_SIP_DIR="$IB_TMP/sip"
  mkdir -p "$IB_SIP_DIR"
  ib_start_server sip 28000 -- --sip-upstream "sip:127.0.0.1:$IB_SIP_SIPP_PORT" --sip-listen 127.0.0.1:28060 || return 1
  local IB_SIP_HTTP_PORT=$IB_HTTP_PORT
  export IB_SIP_HTTP_PORT IB_SIP_SIPP_PORT IB_SIP_MEDIA_PORT IB_SIP_DIR CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 90 node sip.test.mjs || rc=$?
  if ((rc != 0)); then
    echo "server log (tail):"
    tail -n 30 "$IB_SERVER_LOG" || true
    local f
    for f in "$IB_SIP_DIR"/*; do
      [[ -s "$f" ]] || continue
      echo "$(basename "$f") (tail):"
      tail -n 40 "$f" || true
    done
  fi
  ib_stop_pid "$IB_SERVER_PID"
  return "$rc"
}
if [[ "$IB_SERVER" == "icebreaker" ]] && want_step sip; then
  if [[ ! -d "$HERE/node_modules/jssip" ]]; then
    echo "FAIL browser: jssip not installed in tests/browser (scripts/install-deps)"
    exit 1
  fi
  if ! command -v sipp >/dev/null; then
    echo "FAIL browser: sipp not found (Debian sip-tester; scripts/install-deps)"
    exit 1
  fi
  ib_check "Chromium + JsSIP through /sip to sipp: register, call with audio both ways via the media bridge, DTMF, hang up from either side" run_sip
fi

# Phones dialed into a room (the SDK's call.dial): a server of its own with the SIP gateway
# toward sipp (the phone, started by the test once per scenario) and --sip-dial true:
# TURN 30000, HTTP 30005, SFU 30007, relays 31000..31199; the gateway's SIP socket 30050,
# sipp on 30060 (SIP) and 30070 (RTP echo). A second server without --sip-dial (TURN 30200,
# HTTP 30205, SFU 30207, relays 31200..31399) for the refusal.
run_dial() {
  local IB_SERVER_PID IB_SERVER_LOG IB_TURN_PORT IB_TLS_PORT IB_SFU_PORT IB_HTTP_PORT IB_SECRET_PORT IB_SECRET_TLS_PORT
  local rc=0 IB_DIAL_SIPP_PORT=30060 IB_DIAL_SIPP_MEDIA_PORT=30070 IB_DIAL_SIP_DIR="$IB_ROOT/tests/sip"
  if ! command -v sipp >/dev/null; then
    echo "sipp not installed (Debian sip-tester; scripts/install-deps)"
    return 1
  fi
  ib_start_server dial-off 30200 || return 1
  local off_pid=$IB_SERVER_PID IB_DIAL_OFF_HTTP_PORT=$IB_HTTP_PORT
  ib_start_server dial 30000 -- --sip-upstream "sip:127.0.0.1:$IB_DIAL_SIPP_PORT" \
    --sip-listen 127.0.0.1:30050 --sip-dial true || return 1
  local IB_DIAL_HTTP_PORT=$IB_HTTP_PORT
  export IB_DIAL_HTTP_PORT IB_DIAL_OFF_HTTP_PORT IB_DIAL_SIPP_PORT IB_DIAL_SIPP_MEDIA_PORT IB_DIAL_SIP_DIR CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 90 node dial.test.mjs || rc=$?
  if ((rc != 0)); then
    echo "server log (tail):"
    tail -n 30 "$IB_SERVER_LOG" || true
  fi
  ib_stop_pid "$IB_SERVER_PID"
  ib_stop_pid "$off_pid"
  return "$rc"
}
if [[ "$IB_SERVER" == "icebreaker" ]] && want_step dial; then
  ib_check "Chromium dials a phone into a room (sipp): phone tile, its audio on every page (mixer), hang up, the phone hangs up" run_dial
fi

ib_finish
