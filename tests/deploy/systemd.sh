#!/usr/bin/env bash
# Checks what docs/DEPLOYMENT.md ships, without a running systemd (PID 1 need not be systemd):
#
#   1. deploy/icebreaker.service passes `systemd-analyze verify` on a temporary copy whose
#      /usr/local/bin/icebreaker is the release binary (verify needs ExecStart's executable).
#      verify exits 0 on an unknown directive or a value it cannot parse ("..., ignoring"), so
#      any line it prints about the unit fails the check too, not only its exit status;
#   2. every absolute executable of an Exec*= line exists (verify looks at ExecStart only);
#   3. TimeoutStopSec is longer than drain_timeout (its default in crates/server/src/config.rs,
#      and the value in deploy/icebreaker.toml), so that systemd does not SIGKILL a drain;
#   4. `systemd-analyze security --offline=yes` rates the unit's exposure at most 2.5
#      (it is 1.5: this catches hardening that goes missing);
#   5. `icebreaker config check --config deploy/icebreaker.toml` accepts the example file;
#   6. the checker itself catches broken copies of the unit: an unknown directive, a missing
#      executable, an invalid value, a TimeoutStopSec below the drain timeout, a missing
#      ExecReload executable. A check that lets one of them through fails the test.
#
# Needs systemd-analyze (Debian package systemd; scripts/install-deps) and the release build.
# Environment: ICEBREAKER_BIN (default target/release/icebreaker), SYSTEMD_ANALYZE (default
# /usr/bin/systemd-analyze), IB_KEEP_TMP=1 (keep the work dir).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
UNIT="$ROOT/deploy/icebreaker.service"
TOML="$ROOT/deploy/icebreaker.toml"
BIN="${ICEBREAKER_BIN:-$ROOT/target/release/icebreaker}"
SA="${SYSTEMD_ANALYZE:-/usr/bin/systemd-analyze}"
INSTALLED_BIN=/usr/local/bin/icebreaker
MAX_EXPOSURE=25 # systemd-analyze's scale: 25 = an exposure level of 2.5

log() { printf '[systemd] %s\n' "$*"; }
die() {
  log "FAIL: $*"
  exit 1
}

[[ -f "$UNIT" ]] || die "$UNIT is missing"
[[ -f "$TOML" ]] || die "$TOML is missing"
[[ -x "$BIN" ]] || die "$BIN is missing: build it first (cargo build --release)"
[[ -x "$SA" ]] || die "$SA is missing: install the Debian package systemd (scripts/install-deps)"
log "$("$SA" --version | head -n1)"

TMP="$(mktemp -d /tmp/ib-systemd.XXXXXX)"
cleanup() {
  if [[ "${IB_KEEP_TMP:-}" == 1 ]]; then log "work dir kept: $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
mkdir -p "$TMP/bin"
ln -s "$(realpath "$BIN")" "$TMP/bin/icebreaker"

# Options that make verify look at this unit only, offline: no man pages (Documentation=), no
# generators, no errors of the units it depends on (the machine's own unit files).
VERIFY_OPTS=(--man=no --generators=no)
if "$SA" --help 2>/dev/null | grep -q -- '--recursive-errors'; then
  VERIFY_OPTS+=(--recursive-errors=no)
fi
export SYSTEMD_LOG_LEVEL=info SYSTEMD_LOG_COLOR=0 SYSTEMD_PAGER=cat SYSTEMD_COLORS=0

# The unit as installed, but with the release binary: DIR/icebreaker.service.
installable() {
  local dir="$1"
  mkdir -p "$dir"
  sed "s|$INSTALLED_BIN|$TMP/bin/icebreaker|g" "$UNIT" >"$dir/icebreaker.service"
}

# A [Service] setting of a unit file (the last assignment wins, as in systemd).
setting() { sed -n "s/^[[:space:]]*$2=[[:space:]]*//p" "$1" | tail -n1; }

DEFAULT_DRAIN="$(sed -n 's/^pub const DEFAULT_DRAIN_TIMEOUT: u32 = \([0-9]*\);/\1/p' \
  "$ROOT/crates/server/src/config.rs")"
[[ "$DEFAULT_DRAIN" =~ ^[0-9]+$ ]] || die "DEFAULT_DRAIN_TIMEOUT not found in crates/server/src/config.rs"
FILE_DRAIN="$(sed -n 's/^[[:space:]]*drain_timeout[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$TOML" | tail -n1)"
DRAIN=$((FILE_DRAIN > DEFAULT_DRAIN ? FILE_DRAIN : DEFAULT_DRAIN))

# check_unit FILE: prints what is wrong; status 0 when nothing is.
check_unit() {
  local unit="$1" name out rc=0 bad=0
  name="$(basename "$unit")"
  out="$(timeout 60 "$SA" verify "${VERIFY_OPTS[@]}" "$unit" 2>&1)" || rc=$?
  [[ -n "$out" ]] && printf '%s\n' "$out" | sed 's/^/    verify: /'
  if ((rc != 0)); then
    log "  systemd-analyze verify exited $rc"
    bad=1
  fi
  # Warnings name the file (path:line: ...) or the unit (icebreaker.service: ...).
  if grep -q -F -e "$unit" -e "$name:" <<<"$out"; then
    log "  systemd-analyze verify reports problems with the unit"
    bad=1
  fi
  local line cmd
  while IFS= read -r line; do
    cmd="${line#*=}"
    cmd="${cmd#"${cmd%%[![:space:]]*}"}"
    while [[ "$cmd" == [@+!:-]* ]]; do cmd="${cmd:1}"; done
    cmd="${cmd%%[[:space:]]*}"
    if [[ "$cmd" == /* && ! -x "$cmd" ]]; then
      log "  ${line%%=*}: $cmd is not an executable file"
      bad=1
    fi
  done < <(grep -E '^[[:space:]]*Exec[A-Za-z]+=' "$unit")
  local stop
  stop="$(setting "$unit" TimeoutStopSec)"
  if [[ ! "$stop" =~ ^[0-9]+$ ]]; then
    log "  TimeoutStopSec is '$stop', expected a number of seconds"
    bad=1
  elif ((stop <= DRAIN)); then
    log "  TimeoutStopSec=$stop is not longer than drain_timeout ($DRAIN s): systemd would kill a drain"
    bad=1
  fi
  return "$bad"
}

failed=0

log "1-3. verify deploy/icebreaker.service (ExecStart -> $BIN; drain_timeout $DRAIN s)"
installable "$TMP/unit"
if check_unit "$TMP/unit/icebreaker.service"; then
  log "  unit OK"
else
  log "  FAIL: deploy/icebreaker.service has problems (above)"
  failed=1
fi

log "4. hardening: systemd-analyze security --offline=yes, exposure at most $MAX_EXPOSURE/100"
if "$SA" --help 2>/dev/null | grep -q -- '--offline'; then
  rc=0
  out="$(timeout 60 "$SA" security --offline=yes --threshold="$MAX_EXPOSURE" --no-pager \
    "$TMP/unit/icebreaker.service" 2>&1)" || rc=$?
  grep -F 'Overall exposure level' <<<"$out" | sed 's/^/  /' || true
  if ((rc != 0)); then
    printf '%s\n' "$out" | grep -F '✗' | sed 's/^/    /' || true
    log "  FAIL: exposure above the threshold, or systemd-analyze security failed (exit $rc)"
    failed=1
  fi
else
  log "  skipped: this systemd-analyze has no --offline (systemd < 250)"
fi

log "5. icebreaker config check --config deploy/icebreaker.toml"
rc=0
out="$(timeout 30 "$BIN" config check --config "$TOML" 2>&1)" || rc=$?
printf '%s\n' "$out" | sed 's/^/    /'
if ((rc == 0)); then
  log "  example configuration OK"
else
  log "  FAIL: icebreaker config check refuses deploy/icebreaker.toml"
  failed=1
fi

log "6. the checks catch broken units"
broken() {
  local what="$1" expr="$2" dir="$TMP/broken-$3"
  installable "$dir"
  sed -i "$expr" "$dir/icebreaker.service"
  if cmp -s "$dir/icebreaker.service" "$TMP/unit/icebreaker.service"; then
    log "  FAIL: '$what': the edit changed nothing (test out of date with the unit)"
    failed=1
    return
  fi
  if check_unit "$dir/icebreaker.service" >"$dir/out" 2>&1; then
    cat "$dir/out"
    log "  FAIL: not caught: $what"
    failed=1
  else
    log "  caught: $what"
    sed 's/^/    /' "$dir/out"
  fi
}
broken "unknown directive (LimitNOFLIE=)" 's/^LimitNOFILE=/LimitNOFLIE=/' directive
broken "ExecStart executable missing" "s|^ExecStart=$TMP/bin/icebreaker|ExecStart=$TMP/bin/missing|" exec
broken "invalid value (Type=exce)" 's/^Type=exec/Type=exce/' value
broken "TimeoutStopSec below the drain timeout" "s/^TimeoutStopSec=.*/TimeoutStopSec=$DRAIN/" timeout
broken "ExecReload executable missing" 's|^ExecReload=/bin/kill|ExecReload=/bin/no-such-kill|' reload

if ((failed)); then
  die "see above"
fi
log "PASS"
