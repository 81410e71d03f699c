#!/usr/bin/env bash
# Runs aioice_test.py (the aioice Python TURN/ICE client) against the server
# under test, in its own network namespace.
# Usage: tests/interop/aioice.sh   (ICEBREAKER_TEST_SERVER=coturn to validate
# the suite against coturn; IB_VERBOSE=1 for tracebacks).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
ib_enter_netns "$0" "$@"
ib_init aioice

PY="$IB_ROOT/.venv/bin/python"
if ! "$PY" -c 'import aioice' 2>/dev/null; then
  echo "FAIL aioice: $PY cannot import aioice (run scripts/install-deps)"
  exit 1
fi

ib_gen_cert "$IB_TMP/cert"
ib_start_server main 40000 --tls 40010

run_aioice() {
  IB_TURN_PORT="$IB_TURN_PORT" IB_SECRET_PORT="$IB_SECRET_PORT" \
    IB_TLS_PORT="$IB_TLS_PORT" IB_SECRET_TLS_PORT="$IB_SECRET_TLS_PORT" \
    IB_USER="$IB_USER" IB_PASS="$IB_PASS" IB_SECRET="$IB_SECRET" IB_CERT="$IB_CERT" \
    SSL_CERT_FILE="$IB_CERT" \
    timeout -k 5 150 "$PY" "$(dirname "$0")/aioice_test.py"
}
ib_check "aioice TURN relay + relay-only ICE" run_aioice

ib_finish
