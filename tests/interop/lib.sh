# shellcheck shell=bash
# shellcheck disable=SC2034 # globals (IB_*) are read by the suites that source this
# Shared helpers for the interop and browser suites. Source it, do not run it.
#
#   ICEBREAKER_TEST_SERVER=icebreaker (default) runs target/release/icebreaker;
#   ICEBREAKER_TEST_SERVER=coturn runs coturn's turnserver with equivalent
#   settings, to validate the suites themselves against a reference server.
#
# Every suite runs in its own network namespace (only `lo`) and its own PID
# namespace: ports never clash with anything on the host (e.g. a system
# turnserver on 3478), no packet can leave the machine, and if the suite dies
# the kernel ends everything it started. On top of that, everything a suite
# starts is tracked by PID and stopped by the EXIT trap.
#
# Ports: suites use fixed ports below 32768 (the kernel's ephemeral range is
# 32768-60999), so that no client socket can take a server or relay port.
# A server on TURN port P uses P (UDP+TCP), the TLS port given, P+5 (HTTP),
# relay ports P+1000..P+1199 (coturn mode: a second instance on P+20 and
# TLS+20, relay P+1200..P+1399; coturn also binds P+2, P+3, P+4, TLS+2).

IB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IB_SERVER="${ICEBREAKER_TEST_SERVER:-icebreaker}"
IB_BIN="${ICEBREAKER_BIN:-$IB_ROOT/target/release/icebreaker}"
IB_REALM="test.local"
IB_USER="alice"
IB_PASS="secretpw"
IB_SECRET="icebreaker-test-shared-secret"
IB_PIDS=()
IB_TMP=""
IB_CHECKS_OK=0
IB_CHECKS_FAILED=0
IB_FAILED_NAMES=()

case "$IB_SERVER" in
  icebreaker | coturn) ;;
  *)
    echo "ICEBREAKER_TEST_SERVER must be 'icebreaker' or 'coturn', not '$IB_SERVER'" >&2
    exit 2
    ;;
esac

ib_log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${IB_SUITE:-suite}" "$*"; }

# ib_enter_netns "$0" "$@": re-executes the calling script inside a fresh
# network + PID namespace whose only interface is an up loopback. A no-op once
# inside. Needs root (CI and the dev machines run as root).
ib_enter_netns() {
  if [[ "${IB_IN_NETNS:-}" == "1" ]]; then
    return 0
  fi
  local script="$1"
  shift
  if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
    echo "unshare and ip (util-linux, iproute2) are required" >&2
    exit 2
  fi
  export IB_IN_NETNS=1
  # shellcheck disable=SC2016 # $0/$@ are expanded by the inner bash
  exec unshare --net --pid --fork --kill-child=SIGTERM \
    bash -c 'ip link set lo up && exec bash "$0" "$@"' "$script" "$@"
}

# A private temp dir, removed by the EXIT trap.
ib_init() {
  IB_SUITE="${1:-suite}"
  IB_TMP="$(mktemp -d "${TMPDIR:-/tmp}/icebreaker-${IB_SUITE}.XXXXXX")"
  IB_SUITE_START=$SECONDS
  trap ib_cleanup EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  ib_log "server under test: $IB_SERVER; workdir $IB_TMP"
}

ib_track() { IB_PIDS+=("$1"); }

# ib_run COMMAND...: runs COMMAND as a tracked background job and waits for
# it. Unlike a plain foreground command, a SIGTERM/SIGINT to the suite
# interrupts the wait at once, and the EXIT trap then stops the job.
ib_run() {
  local pid rc=0
  "$@" &
  pid=$!
  IB_PIDS+=("$pid")
  wait "$pid" || rc=$?
  return "$rc"
}

# Stops one PID: SIGTERM, up to ~3 s grace, then SIGKILL.
ib_stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  # Icebreaker drains on SIGTERM; a second one stops it at once.
  sleep 0.3
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

ib_cleanup() {
  local rc=$? pid
  trap - EXIT
  for pid in "${IB_PIDS[@]}"; do
    ib_stop_pid "$pid"
  done
  if [[ -n "$IB_TMP" && -d "$IB_TMP" ]]; then
    if [[ "${IB_KEEP_TMP:-}" == "1" ]]; then
      ib_log "kept $IB_TMP"
    else
      rm -rf "$IB_TMP"
    fi
  fi
  exit "$rc"
}

# Records one check. Usage: ib_check NAME COMMAND...
ib_check() {
  local name="$1" t0=$SECONDS
  shift
  ib_log "--- $name"
  if "$@"; then
    IB_CHECKS_OK=$((IB_CHECKS_OK + 1))
    echo "  ok   $name ($((SECONDS - t0))s)"
  else
    IB_CHECKS_FAILED=$((IB_CHECKS_FAILED + 1))
    IB_FAILED_NAMES+=("$name")
    echo "  FAIL $name ($((SECONDS - t0))s)"
  fi
}

# Prints the suite's verdict line and exits accordingly.
ib_finish() {
  local total=$((IB_CHECKS_OK + IB_CHECKS_FAILED)) dt=$((SECONDS - IB_SUITE_START))
  if ((IB_CHECKS_FAILED == 0 && total > 0)); then
    echo "PASS ${IB_SUITE} [$IB_SERVER]: $IB_CHECKS_OK/$total checks ok (${dt}s)"
    exit 0
  fi
  echo "FAIL ${IB_SUITE} [$IB_SERVER]: $IB_CHECKS_FAILED/$total checks failed (${dt}s): ${IB_FAILED_NAMES[*]:-no checks ran}"
  exit 1
}

# Self-signed certificate for "localhost" / 127.0.0.1 in DIR: DIR/cert.pem,
# DIR/key.pem; sets IB_CERT, IB_KEY and IB_CERT_SPKI (base64 SHA-256 of the
# SubjectPublicKeyInfo, for Chromium's --ignore-certificate-errors-spki-list).
ib_gen_cert() {
  local dir="$1"
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
  IB_CERT="$dir/cert.pem"
  IB_KEY="$dir/key.pem"
  IB_CERT_SPKI="$(openssl x509 -in "$IB_CERT" -pubkey -noout |
    openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)"
}

# TURN REST API credentials (draft-uberti-behave-turn-rest):
#   username = "<expiry unix time>:<user>", password = base64(HMAC-SHA1(secret, username)).
# Usage: ib_rest_user USER TTL_SECONDS  /  ib_rest_pass USERNAME [SECRET]
ib_rest_user() { echo "$(($(date +%s) + $2)):$1"; }
ib_rest_pass() {
  printf '%s' "$1" | openssl dgst -sha1 -hmac "${2:-$IB_SECRET}" -binary | base64
}

ib_http_get() { curl -fsS --max-time 2 "http://127.0.0.1:$1$2"; }

# ib_start_server NAME TURN_PORT [options]
#   --tls PORT        also TURN over TLS on PORT (needs ib_gen_cert first)
#   --http PORT       icebreaker's /metrics and /healthz (default TURN_PORT+5)
#   --sfu PORT        icebreaker's SFU media port, UDP + ICE-TCP (default TURN_PORT+7)
#   --relay LO-HI     relay port range (default TURN_PORT+1000 .. +1199)
#   --no-allow-peer   do NOT allow loopback peers (default: --allow-peer 127.0.0.0/8)
#   --static-only     coturn mode: skip the REST-secret instance (unused by the caller)
#   -- ARGS...        icebreaker only: everything after `--` is appended to the
#                     `icebreaker serve` command line as is, e.g.
#                     -- --cluster "$IB_REDIS_URL" --node-id n1
# Starts the server under test in the background, waits until it is ready and
# sets IB_SERVER_PID and IB_SERVER_LOG. Returns non-zero (and prints the log)
# if it does not come up within ~15 s.
ib_start_server() {
  local name="$1" port="$2"
  shift 2
  local tls_port="" http_port=$((port + 5)) sfu_port=$((port + 7)) relay="$((port + 1000))-$((port + 1199))" allow_peer=1 static_only=0
  local extra=()
  while (($#)); do
    case "$1" in
      --tls) tls_port="$2"; shift 2 ;;
      --http) http_port="$2"; shift 2 ;;
      --sfu) sfu_port="$2"; shift 2 ;;
      --relay) relay="$2"; shift 2 ;;
      --no-allow-peer) allow_peer=0; shift ;;
      --static-only) static_only=1; shift ;;
      --) shift; extra=("$@"); break ;;
      *) echo "ib_start_server: unknown option $1" >&2; return 2 ;;
    esac
  done
  if ((${#extra[@]})) && [[ "$IB_SERVER" != "icebreaker" ]]; then
    echo "ib_start_server: arguments after -- are for icebreaker only (server under test: $IB_SERVER)" >&2
    return 2
  fi
  local log="$IB_TMP/server-$name.log" args=()
  IB_SERVER_LOG="$log"
  IB_TURN_PORT="$port"
  IB_TLS_PORT="$tls_port"
  IB_SFU_PORT="$sfu_port"
  IB_HTTP_PORT="$http_port"
  # Where to send TURN REST API (shared secret) credentials. icebreaker takes
  # static users and secrets at once; coturn 4.6 does not (with
  # --use-auth-secret it rejects the static --user list), so in coturn mode a
  # second instance with the secret listens on PORT+20 (TLS: TLS_PORT+20).
  IB_SECRET_PORT="$port"
  IB_SECRET_TLS_PORT="$tls_port"
  if [[ "$IB_SERVER" == "coturn" ]]; then
    IB_SECRET_PORT=$((port + 20))
    [[ -n "$tls_port" ]] && IB_SECRET_TLS_PORT=$((tls_port + 20))
    ib_start_coturn "$name" "$port" "$tls_port" "${relay%-*}" "${relay#*-}" "$allow_peer" \
      --lt-cred-mech --user="$IB_USER:$IB_PASS" || return 1
    ((static_only)) && return 0
    ib_start_coturn "$name-secret" "$IB_SECRET_PORT" "$IB_SECRET_TLS_PORT" \
      $((${relay%-*} + 200)) $((${relay#*-} + 200)) "$allow_peer" \
      --use-auth-secret --static-auth-secret="$IB_SECRET" || return 1
    return 0
  fi
  if [[ ! -x "$IB_BIN" ]]; then
    echo "icebreaker binary not found at $IB_BIN (run cargo build --release first)" >&2
    return 1
  fi
  args=(serve --turn-listen "127.0.0.1:$port" --relay-ip 127.0.0.1 --relay-ports "$relay"
    --http-listen "127.0.0.1:$http_port" --sfu-listen "127.0.0.1:$sfu_port" --realm "$IB_REALM"
    --user "$IB_USER:$IB_PASS" --turn-secret "$IB_SECRET")
  if [[ -n "$tls_port" ]]; then
    args+=(--turns-listen "127.0.0.1:$tls_port" --tls-cert "$IB_CERT" --tls-key "$IB_KEY")
  fi
  ((allow_peer)) && args+=(--allow-peer 127.0.0.0/8)
  args+=("${extra[@]}")
  RUST_LOG="${RUST_LOG:-info}" "$IB_BIN" "${args[@]}" >"$log" 2>&1 &
  IB_SERVER_PID=$!
  ib_track "$IB_SERVER_PID"
  if ! ib_wait_ready "$port" "$http_port" "$tls_port"; then
    echo "server '$name' did not become ready; its log:" >&2
    tail -n 40 "$log" >&2 || true
    return 1
  fi
  ib_log "server '$name' ready (pid $IB_SERVER_PID, turn 127.0.0.1:$port${tls_port:+, tls :$tls_port}, relay $relay)"
}

# ib_start_coturn NAME PORT TLS_PORT RELAY_LO RELAY_HI ALLOW_PEER AUTH_ARGS...
ib_start_coturn() {
  local name="$1" port="$2" tls_port="$3" lo="$4" hi="$5" allow_peer="$6"
  shift 6
  local log="$IB_TMP/server-$name.log" args
  args=(-n --log-file=stdout --simple-log --no-cli --no-dtls
    --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$port"
    --min-port="$lo" --max-port="$hi" --realm="$IB_REALM" "$@"
    --pidfile="$IB_TMP/turnserver-$name.pid" --userdb="$IB_TMP/turndb-$name"
    --no-rfc5780 --no-stun-backward-compatibility --no-multicast-peers
    --alt-listening-port=$((port + 2)))
  # Keep coturn's alternate/TLS listeners on ports of our choosing.
  if [[ -n "$tls_port" ]]; then
    args+=(--tls-listening-port="$tls_port" --alt-tls-listening-port=$((tls_port + 2))
      --cert="$IB_CERT" --pkey="$IB_KEY")
  else
    args+=(--no-tls --tls-listening-port=$((port + 3)) --alt-tls-listening-port=$((port + 4)))
  fi
  ((allow_peer)) && args+=(--allow-loopback-peers)
  turnserver "${args[@]}" >"$log" 2>&1 &
  IB_SERVER_PID=$!
  IB_SERVER_LOG="$log"
  ib_track "$IB_SERVER_PID"
  if ! ib_wait_ready "$port" "" "$tls_port"; then
    echo "coturn '$name' did not become ready; its log:" >&2
    tail -n 40 "$log" >&2 || true
    return 1
  fi
  ib_log "coturn '$name' ready (pid $IB_SERVER_PID, turn 127.0.0.1:$port${tls_port:+, tls :$tls_port}, relay $lo-$hi)"
}

# Readiness: icebreaker answers GET /healthz; coturn answers a STUN binding
# request. In both cases the TLS port must accept TCP connections too.
ib_wait_ready() {
  local port="$1" http_port="$2" tls_port="$3" i
  for i in $(seq 1 75); do
    kill -0 "$IB_SERVER_PID" 2>/dev/null || return 1
    if [[ "$IB_SERVER" == "coturn" ]]; then
      if timeout 2 turnutils_stunclient -p "$port" 127.0.0.1 2>/dev/null | grep -q 'UDP reflexive addr'; then
        if [[ -z "$tls_port" ]] || ib_tcp_open "$tls_port"; then return 0; fi
      fi
    else
      if ib_http_get "$http_port" /healthz >/dev/null 2>&1; then
        if [[ -z "$tls_port" ]] || ib_tcp_open "$tls_port"; then return 0; fi
      fi
    fi
    sleep 0.2
  done
  return 1
}

ib_tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# ib_start_redis PORT: a throwaway redis-server on 127.0.0.1:PORT for cluster
# tests (no persistence, working directory in IB_TMP), tracked. Waits until it
# answers PING and sets IB_REDIS_PID, IB_REDIS_URL (database 0) and
# IB_REDIS_LOG. Returns non-zero (and prints the log) if it does not come up
# within ~10 s.
ib_start_redis() {
  local port="$1" i
  local dir="$IB_TMP/redis-$port"
  IB_REDIS_LOG="$IB_TMP/redis-$port.log"
  if ! command -v redis-server >/dev/null; then
    echo "redis-server not found (scripts/install-deps installs it)" >&2
    return 1
  fi
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$dir" --daemonize no >"$IB_REDIS_LOG" 2>&1 &
  IB_REDIS_PID=$!
  ib_track "$IB_REDIS_PID"
  IB_REDIS_URL="redis://127.0.0.1:$port/0"
  for i in $(seq 1 50); do
    kill -0 "$IB_REDIS_PID" 2>/dev/null || break
    if ib_redis_ping "$port"; then
      ib_log "redis-server ready (pid $IB_REDIS_PID, 127.0.0.1:$port)"
      return 0
    fi
    sleep 0.2
  done
  echo "redis-server on port $port did not become ready; its log:" >&2
  tail -n 20 "$IB_REDIS_LOG" >&2 || true
  return 1
}

# PING over RESP without redis-cli (bash's /dev/tcp).
# shellcheck disable=SC2016 # $1 and $l are the inner bash's
ib_redis_ping() {
  timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "PING\r\n" >&3 && IFS= read -r l <&3 && [[ "$l" == "+PONG"* ]]' _ "$1" 2>/dev/null
}

# UDP echo peer (coturn's turnutils_peer) on 127.0.0.1:PORT, tracked.
ib_start_peer() {
  turnutils_peer -L 127.0.0.1 -p "$1" >"$IB_TMP/peer-$1.log" 2>&1 &
  ib_track $!
  sleep 0.3
}
