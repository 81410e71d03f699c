#!/usr/bin/env bash
# Runs turn.test.mjs, room.test.mjs and sfu.test.mjs (headless Chromium via
# playwright-core) against the server under test, in its own network
# namespace. room.test.mjs and sfu.test.mjs (the served pages, the SDK,
# signaling and the SFU) need icebreaker itself: they are skipped with
# ICEBREAKER_TEST_SERVER=coturn.
# Usage: tests/browser/run.sh   (ICEBREAKER_TEST_SERVER=coturn to validate
# the suite against coturn; CHROMIUM_PATH to use another Chromium binary).
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

ib_gen_cert "$IB_TMP/cert"
ib_start_server main 20000 --tls 20010

run_browser() {
  export IB_TURN_PORT IB_SECRET_PORT IB_TLS_PORT IB_USER IB_PASS IB_SECRET IB_CERT_SPKI CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 180 node turn.test.mjs
}
ib_check "Chromium WebRTC over TURN/UDP, TURN/TCP, TURNS" run_browser

run_room() {
  export IB_HTTP_PORT IB_CERT_SPKI CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 220 node room.test.mjs
}
if [[ "$IB_SERVER" == "icebreaker" ]]; then
  ib_check "Chromium room pages + SDK: mesh video, TURN, resume, SSE/poll fallback, ICE tester" run_room
fi

run_sfu() {
  # The same server: its SFU listens on IB_SFU_PORT (UDP + ICE-TCP).
  export IB_HTTP_PORT IB_SFU_PORT CHROMIUM_PATH
  cd "$HERE"
  HOME="$IB_TMP" ib_run timeout -k 5 180 node sfu.test.mjs
}
if [[ "$IB_SERVER" == "icebreaker" ]]; then
  ib_check "Chromium SFU rooms: 6-way video, data channel, leave/rejoin, simulcast views, TURN, mesh→SFU switch, resume" run_sfu
fi

ib_finish
