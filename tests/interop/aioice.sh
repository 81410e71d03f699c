#!/usr/bin/env bash
# Runs aioice_test.py (the aioice Python TURN/ICE client) against the server
# under test, in its own network namespace.
# Usage: tests/interop/aioice.sh   (ICEBREAKER_TEST_SERVER=coturn to validate
# the suite against coturn; IB_VERBOSE=1 for tracebacks).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
ib_enter_netns "$0" "$@"
ib_init aioice

PY="$IB_ROOT/.venv/bin/python"
if ! "$PY" -c 'import aioice' 2>/dev/null; then
  echo "FAIL aioice: $PY cannot import aioice (run scripts/install-deps)"
  exit 1
fi

ib_gen_cert "$IB_TMP/cert"
ib_start_server main 20000 --tls 20010

run_aioice() {
  export IB_TURN_PORT IB_SECRET_PORT IB_TLS_PORT IB_SECRET_TLS_PORT IB_USER IB_PASS IB_SECRET IB_CERT
  # aioice's turn_ssl=True verifies with the default CA store: make that the test cert.
  SSL_CERT_FILE="$IB_CERT" ib_run timeout -k 5 150 "$PY" "$IB_ROOT/tests/interop/aioice_test.py"
}
ib_check "aioice TURN relay + relay-only ICE" run_aioice

ib_finish
