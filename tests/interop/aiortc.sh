#!/usr/bin/env bash
# Runs aiortc_sfu.py (Python aiortc, a non-browser WebRTC stack) in an SFU room
# of the server under test, in its own network namespace. Icebreaker only (the
# SFU is ours; coturn has none).
# Usage: tests/interop/aiortc.sh   (VERBOSE=1 for aiortc's debug log).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
ib_enter_netns "$0" "$@"
ib_init aiortc

PY="$IB_ROOT/.venv/bin/python"
if ! "$PY" -c 'import aiortc, websockets' 2>/dev/null; then
  echo "FAIL aiortc: $PY cannot import aiortc and websockets (run scripts/install-deps)"
  exit 1
fi
if [[ "$IB_SERVER" != "icebreaker" ]]; then
  echo "skip aiortc: the SFU suite needs icebreaker"
  exit 0
fi

# aioice gathers host candidates from the interfaces but skips 127.0.0.1: give
# this namespace's loopback a second address for aiortc to use.
ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true

ib_start_server main 20000

run_aiortc() {
  ib_run timeout -k 5 90 "$PY" "$IB_ROOT/tests/interop/aiortc_sfu.py" "$IB_HTTP_PORT"
}
ib_check "aiortc publishes in an SFU room, another aiortc receives video, audio, data" run_aiortc

ib_finish
