#!/usr/bin/env bash
# Runs socketio_codelab.mjs (npm socket.io-client 4, the classic WebRTC
# codelab's client logic) against the server's /socket.io/, in its own network
# namespace. Icebreaker only (coturn has no signaling).
# Usage: tests/interop/socketio.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
ib_enter_netns "$0" "$@"
ib_init socketio

if [[ "$IB_SERVER" != "icebreaker" ]]; then
  echo "skip socketio: the socket.io suite needs icebreaker"
  exit 0
fi
if [[ ! -d "$IB_ROOT/tests/browser/node_modules/socket.io-client" ]]; then
  echo "FAIL socketio: socket.io-client not installed in tests/browser (scripts/install-deps)"
  exit 1
fi

# A second server with room tokens (HTTP on 20305).
IB_TOKEN_SECRET="socketio-room-token-secret-0123456789"
ib_start_server tokens 20300 -- --signal-token-secret "$IB_TOKEN_SECRET"
IB_TOKEN_HTTP_PORT=$IB_HTTP_PORT
# A small signal_max_message, so that the oversized-message checks stay small.
IB_MAX_MESSAGE=8192
ib_start_server main 20000 -- --signal-max-message "$IB_MAX_MESSAGE"

run_socketio() {
  export IB_HTTP_PORT IB_MAX_MESSAGE IB_TOKEN_HTTP_PORT IB_TOKEN_SECRET
  ib_run timeout -k 5 90 node "$IB_ROOT/tests/interop/socketio_codelab.mjs"
}
ib_check "socket.io codelab clients: rooms of two, relay, full, bye, rooms apart, bad input, Origin, room tokens" run_socketio

ib_finish
