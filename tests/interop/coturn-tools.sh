#!/usr/bin/env bash
# coturn's own client tools against the server under test:
#   turnutils_uclient + turnutils_peer (echo) over UDP, TCP and TLS, with a
#   static user and with TURN REST API (shared secret) credentials, asserting
#   that every paced message comes back; turnutils_stunclient's mapped
#   address; and the refusals (wrong password -> 401, loopback peer on a
#   server without --allow-peer -> 403).
#
# Usage: tests/interop/coturn-tools.sh   (ICEBREAKER_TEST_SERVER=coturn to
# validate the suite against coturn itself). Runs in its own namespaces.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
ib_enter_netns "$0" "$@"
ib_init coturn-tools

for tool in turnutils_uclient turnutils_peer turnutils_stunclient python3 openssl; do
  command -v "$tool" >/dev/null || { echo "FAIL coturn-tools: $tool missing (scripts/install-deps)"; exit 1; }
done

PORT=20000        # TURN UDP+TCP
TLS_PORT=20010    # TURN over TLS
STRICT_PORT=25000 # the server without --allow-peer
PEER_PORT=3480    # turnutils_peer echo
# Paced load, bounded: CLIENTS clients x MSGS messages of LEN bytes every 20 ms.
MSGS=200
CLIENTS=5
LEN=120
EXPECTED=$((MSGS * CLIENTS))

ib_gen_cert "$IB_TMP/cert"
ib_start_server main "$PORT" --tls "$TLS_PORT"
ib_start_peer "$PEER_PORT"

# Runs turnutils_uclient (bounded by `timeout`) and checks its counters:
# every message sent must be echoed back, nothing lost, no error printed.
# Usage: uclient_run LABEL [uclient flags...]
uclient_run() {
  local label="$1" out rc=0
  shift
  out="$IB_TMP/uclient-$label.log"
  ib_run timeout -k 5 90 turnutils_uclient -n "$MSGS" -m "$CLIENTS" -l "$LEN" -z 20 -c \
    -e 127.0.0.1 -r "$PEER_PORT" "$@" 127.0.0.1 >"$out" 2>&1 || rc=$?
  local sent recv lost dropped
  sent="$(grep -oE 'start_mclient: tot_send_msgs=[0-9]+' "$out" | tail -1 | grep -oE '[0-9]+$' || true)"
  recv="$(grep -oE 'start_mclient: tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+' "$out" | tail -1 | grep -oE '[0-9]+$' || true)"
  lost="$(grep -oE 'Total lost packets [0-9]+' "$out" | tail -1 | grep -oE '[0-9]+$' || true)"
  dropped="$(grep -oE 'total send dropped [0-9]+' "$out" | tail -1 | grep -oE '[0-9]+$' || true)"
  echo "    uclient $label: rc=$rc sent=${sent:-?} recv=${recv:-?} lost=${lost:-?} send-dropped=${dropped:-?} (expected $EXPECTED)"
  if ((rc != 0)) || [[ "$sent" != "$EXPECTED" || "$recv" != "$EXPECTED" || "$lost" != "0" || "$dropped" != "0" ]] ||
    grep -qE 'ERROR|error [0-9]{3}' "$out"; then
    sed 's/^/    | /' "$out" | sort -u | grep -E 'ERROR|error|lost|tot_' | head -n 15 || true
    return 1
  fi
}

rest_uclient() {
  # uclient -W computes "<now+ttl>:<user>" and HMAC-SHA1 with the secret itself.
  uclient_run "$@" -u rest-user -W "$IB_SECRET"
}

ib_check "uclient UDP, static user" uclient_run udp-static -p "$PORT" -u "$IB_USER" -w "$IB_PASS"
ib_check "uclient UDP, REST secret" rest_uclient udp-rest -p "$IB_SECRET_PORT"
ib_check "uclient TCP, static user" uclient_run tcp-static -t -p "$PORT" -u "$IB_USER" -w "$IB_PASS"
ib_check "uclient TCP, REST secret" rest_uclient tcp-rest -t -p "$IB_SECRET_PORT"
ib_check "uclient TLS, static user" uclient_run tls-static -t -S -p "$TLS_PORT" -u "$IB_USER" -w "$IB_PASS"
ib_check "uclient TLS, REST secret" rest_uclient tls-rest -t -S -p "$IB_SECRET_TLS_PORT"

stunclient_mapped() {
  local out
  ib_run timeout -k 2 10 turnutils_stunclient -p "$PORT" 127.0.0.1 >"$IB_TMP/stunclient.log" 2>&1 || true
  out="$(cat "$IB_TMP/stunclient.log")"
  echo "    $(echo "$out" | grep -m1 -E 'reflexive addr' || echo "$out" | head -n 3)"
  echo "$out" | grep -qE 'UDP reflexive addr: 127\.0\.0\.1:[0-9]+'
}
ib_check "stunclient mapped address is 127.0.0.1" stunclient_mapped

uclient_must_fail() {
  local label="$1" out rc=0
  shift
  out="$IB_TMP/uclient-$label.log"
  ib_run timeout -k 5 30 turnutils_uclient -n 5 -m 1 -c -e 127.0.0.1 -r "$PEER_PORT" "$@" 127.0.0.1 >"$out" 2>&1 || rc=$?
  echo "    uclient $label: rc=$rc $(grep -m1 -oE 'ERROR.*|error [0-9]+.*' "$out" || true)"
  ((rc != 0))
}
probe_ok() {
  local rc=0
  ib_run timeout -k 2 20 python3 "$IB_ROOT/tests/interop/stun_probe.py" "$@" >"$IB_TMP/probe.log" 2>&1 || rc=$?
  sed 's/^/    /' "$IB_TMP/probe.log"
  return "$rc"
}

ib_check "wrong password: uclient fails" uclient_must_fail wrong-pass -p "$PORT" -u "$IB_USER" -w not-the-password
ib_check "wrong password: Allocate answered 401" \
  probe_ok --port "$PORT" --user "$IB_USER" --password not-the-password expect-allocate 401
ib_check "wrong REST secret: uclient fails" uclient_must_fail wrong-secret -p "$IB_SECRET_PORT" -u rest-user -W not-the-secret
EXPIRED_USER="$(($(date +%s) - 60)):rest-user"
ib_check "expired REST username: Allocate answered 401" \
  probe_ok --port "$IB_SECRET_PORT" --user "$EXPIRED_USER" --password "$(ib_rest_pass "$EXPIRED_USER")" expect-allocate 401
REST_USER="$(ib_rest_user rest-user 600)"
ib_check "REST credentials computed by the test: Allocate succeeds" \
  probe_ok --port "$IB_SECRET_PORT" --user "$REST_USER" --password "$(ib_rest_pass "$REST_USER")" expect-allocate 0
ib_check "allowed loopback peer: CreatePermission succeeds" \
  probe_ok --port "$PORT" --user "$IB_USER" --password "$IB_PASS" expect-permission 0 127.0.0.1

if [[ "$IB_SERVER" == "icebreaker" ]]; then
  # icebreaker only: `icebreaker credentials` must print REST credentials
  # ({"username": "<expiry>:<user>", "password": base64 HMAC-SHA1}) that
  # the server accepts, and the HTTP endpoints must answer.
  cli_credentials() {
    local json user pass
    local out
    out="$(timeout 10 "$IB_BIN" credentials --secret "$IB_SECRET" --user cli-user --ttl 600)" || return 1
    # The JSON object may follow human-readable lines: parse from the first "{".
    json="$(sed -n '/^{/,$p' <<<"$out")"
    echo "    $(jq -c '{username, password}' <<<"$json" 2>/dev/null || echo "no JSON object in: $out")"
    user="$(jq -er .username <<<"$json")" && pass="$(jq -er .password <<<"$json")" || return 1
    [[ "$user" =~ ^[0-9]+:cli-user$ ]] || { echo "    username not <expiry>:cli-user"; return 1; }
    [[ "$pass" == "$(ib_rest_pass "$user")" ]] || { echo "    password is not base64(HMAC-SHA1(secret, username))"; return 1; }
    probe_ok --port "$IB_SECRET_PORT" --user "$user" --password "$pass" expect-allocate 0
  }
  ib_check "icebreaker credentials: printed credentials allocate" cli_credentials
  http_endpoints() {
    ib_http_get "$IB_HTTP_PORT" /healthz >/dev/null || { echo "    GET /healthz failed"; return 1; }
    local metrics
    metrics="$(ib_http_get "$IB_HTTP_PORT" /metrics)" || { echo "    GET /metrics failed"; return 1; }
    echo "    /metrics: $(grep -vc '^#' <<<"$metrics") samples"
    [[ -n "$metrics" ]]
  }
  ib_check "icebreaker HTTP: /healthz and /metrics answer" http_endpoints
fi

# A second server with the default peer policy (no --allow-peer): relaying to
# the echo peer on 127.0.0.1 must be refused.
ib_start_server strict "$STRICT_PORT" --no-allow-peer --static-only
ib_check "default policy: uclient to 127.0.0.1 peer fails" \
  uclient_must_fail strict-peer -p "$STRICT_PORT" -u "$IB_USER" -w "$IB_PASS"
ib_check "default policy: CreatePermission 127.0.0.1 answered 403" \
  probe_ok --port "$STRICT_PORT" --user "$IB_USER" --password "$IB_PASS" expect-permission 403 127.0.0.1

ib_finish
