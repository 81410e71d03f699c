#!/usr/bin/env bash
# Spoofed-source flood against the release binary, in a network namespace of its own:
#   - millions (default 1,000,000; argument 1) of UDP packets from random 127.x.y.z sources to
#     the STUN/TURN port: bare Bindings and Allocates, garbage, ChannelData for no allocation,
#     forged integrity, unknown required attributes (tests/attack/spoof.py, a raw socket);
#   - iptables counters measure, outside the server, the UDP bytes that reach its port and the
#     bytes it sends from it: the answers must be fewer bytes than the flood (no amplification);
#   - the server's RSS after the flood must stay within 2 MiB of its RSS before (no state per
#     source), it must still be alive, and an honest TURN client must allocate afterwards.
# Needs root (unshare, iptables, raw sockets) and python3. Every process started here is
# stopped by PID; the namespace disappears with the script.
#   tests/attack/flood.sh [PACKETS]       ICEBREAKER_BIN to test another binary
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${ICEBREAKER_BIN:-$ROOT/target/release/icebreaker}"
PACKETS="${1:-1000000}"

if [[ "${IB_FLOOD_IN_NS:-}" != 1 ]]; then
  exec env IB_FLOOD_IN_NS=1 unshare --net -- "$0" "$@"
fi

log() { printf '[%s flood] %s\n' "$(date +%H:%M:%S)" "$*"; }
ip link set lo up
PORT=3478
HTTP=8080
iptables -w -A INPUT -p udp --dport $PORT
iptables -w -A OUTPUT -p udp --sport $PORT
counter() { # CHAIN -> bytes of our rule (IP packets, headers included)
  iptables -w -nvxL "$1" | awk 'NR>2 && /dpt:|spt:/ {print $2; exit}'
}
TMP="$(mktemp -d)"
# The server drains on the first SIGTERM and stops on the second; nothing here may fail.
trap 'kill "$SRV" 2>/dev/null || true; sleep 0.3; kill "$SRV" 2>/dev/null || true; rm -rf "$TMP"' EXIT
"$BIN" serve --turn-listen 127.0.0.1:$PORT --http-listen 127.0.0.1:$HTTP --sfu-listen off --user alice:secretpw \
  --log warn >"$TMP/server.log" 2>&1 &
SRV=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk '/VmRSS/ {print $2}' "/proc/$SRV/status"; }

# Warm-up: the fixed tables are allocated by the first packets.
python3 "$ROOT/tests/attack/spoof.py" 127.0.0.1 $PORT 20000 7 >/dev/null
sleep 0.5
RSS0=$(rss)
IN0=$(counter INPUT) OUT0=$(counter OUTPUT)
log "flooding with $PACKETS spoofed packets (RSS before: $RSS0 KiB)"
RESULT=$(python3 "$ROOT/tests/attack/spoof.py" 127.0.0.1 $PORT "$PACKETS" 11)
sleep 1
IN=$(( $(counter INPUT) - IN0 )) OUT=$(( $(counter OUTPUT) - OUT0 ))
RSS1=$(rss)
log "sender: $RESULT"
log "bytes to the server's port: $IN; bytes it sent: $OUT; ratio $(awk -v o=$OUT -v i=$IN 'BEGIN{printf "%.3f", o/i}')"
log "RSS after: $RSS1 KiB (before $RSS0 KiB)"
curl -s "http://127.0.0.1:$HTTP/metrics" | grep -E '^icebreaker_(refusals_total\{reason="turn_unauth|turn_dropped_packets_total)' || true

fail=0
if ! kill -0 "$SRV" 2>/dev/null; then log "FAIL: the server died"; fail=1; fi
if (( OUT >= IN )); then log "FAIL: the answers ($OUT bytes) are not fewer than the flood ($IN bytes)"; fail=1; fi
if (( RSS1 - RSS0 > 2048 )); then log "FAIL: RSS grew by $((RSS1 - RSS0)) KiB"; fail=1; fi
if grep -q panicked "$TMP/server.log"; then log "FAIL: the server panicked"; cat "$TMP/server.log"; fail=1; fi
sleep 1
if ! "$BIN" turn-check 127.0.0.1:$PORT --user alice:secretpw --timeout 5 >"$TMP/check.log" 2>&1; then
  log "FAIL: an honest client could not allocate and relay after the flood"; cat "$TMP/check.log"; fail=1
fi
if (( fail )); then exit 1; fi
log "PASS: no amplification, memory flat, still serving"
exit 0
