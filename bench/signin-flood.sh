#!/usr/bin/env bash
# A flood of sign-ins with made-up emails against the real control plane (issue 10, finding 1):
# the release `control` binary with the production argon2id cost (19 MiB, t=2), WAVES bursts
# of CLIENTS concurrent `POST /v1/sessions`, each from its own loopback address (127.0.1.x, so
# per-address limits do not hide the global one) unless SOURCES=1. Reports the process's
# resident memory at start, after one sign-in, at its peak during the flood (VmHWM, reset just
# before) and after it (SETTLE seconds later), the most threads seen, the most password hashes
# that ran at once (from the server's debug log; builds without that line print "n/a") and the
# answers by status.
#
#   bash bench/signin-flood.sh                                  # this tree's release build
#   CONTROL_BIN=/path/to/control bash bench/signin-flood.sh     # another build, e.g. 15c57ae's
#   CLIENTS=120 WAVES=5 SOURCES=1 SETTLE=5 bash bench/signin-flood.sh
#
# Writes bench/out/signin-flood/ (server log, answers, RSS samples). Linux only (/proc).
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$LYNXO_ROOT"

clients="${CLIENTS:-120}"
waves="${WAVES:-3}"
sources="${SOURCES:-$clients}"
settle="${SETTLE:-5}"
out="$LYNXO_ROOT/bench/out/signin-flood"
die() { printf 'signin-flood: error: %s\n' "$*" >&2; exit 1; }
command -v curl >/dev/null || die "curl not found"
(( sources >= 1 && sources <= 250 )) || die "SOURCES must be 1 to 250"

if [[ -z "${CONTROL_BIN:-}" ]]; then
  cargo build --quiet --release -p control --bin control
  CONTROL_BIN="${CARGO_TARGET_DIR:-$LYNXO_ROOT/target}/release/control"
fi
[[ -x "$CONTROL_BIN" ]] || die "no control binary at $CONTROL_BIN"

rm -rf "$out"
mkdir -p "$out"
db="$out/control.sqlite3"
LYNXO_INIT_PASSWORD='flood-bench-password' "$CONTROL_BIN" init --database "$db" \
  --email owner@example.com >/dev/null
keyring="$("$CONTROL_BIN" generate-keyring)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

RUST_LOG='info,control::auth::hasher=debug' LYNXO_LOG_FORMAT=json LYNXO_KEYRING="$keyring" \
  "$CONTROL_BIN" serve --database "$db" --listen "127.0.0.1:$port" --no-publish >"$out/server.log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" || die "the control plane did not start"

status() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$server/status"; }
mib() { echo $(( $1 / 1024 )); }

start="$(status VmRSS)"
# One sign-in first, so "before" includes what any sign-in leaves (one block buffer here).
curl -s -o /dev/null -H 'content-type: application/json' \
  -d '{"email":"warm-up@example.com","password":"warm up"}' "http://127.0.0.1:$port/v1/sessions"
sleep 1
before="$(status VmRSS)"
echo 5 >"/proc/$server/clear_refs" # resets VmHWM: the peak below is the flood's
: >"$out/answers"
(
  while kill -0 "$server" 2>/dev/null; do
    printf '%s %s\n' "$(status VmRSS)" "$(status Threads)" >>"$out/samples" || true
    sleep 0.02
  done
) &
sampler=$!

logged="$(wc -l <"$out/server.log")"
for wave in $(seq "$waves"); do
  pids=()
  for i in $(seq 0 $((clients - 1))); do
    from="127.0.1.$(( 10 + i % sources ))"
    curl -s -o /dev/null -w '%{http_code}\n' --interface "$from" \
      -H 'content-type: application/json' \
      -d "{\"email\":\"made-up-$wave-$i@example.com\",\"password\":\"guess number $i\"}" \
      "http://127.0.0.1:$port/v1/sessions" >>"$out/answers" &
    pids+=("$!")
  done
  wait "${pids[@]}"
done
sleep "$settle"
after="$(status VmRSS)"
peak="$(status VmHWM)"
kill "$sampler" 2>/dev/null || true
max_threads="$(awk '{ if ($2 > m) m = $2 } END { print m + 0 }' "$out/samples")"
flood_log="$(tail -n +"$((logged + 1))" "$out/server.log")"
in_flight="$(grep -o '"in_flight":[0-9]*' <<<"$flood_log" | cut -d: -f2 | sort -n | tail -1 || true)"
hashes="$(grep -c 'sign-in hash started' <<<"$flood_log" || true)"

printf 'signin-flood: %s, %d waves x %d concurrent sign-ins from %d address(es)\n' \
  "$CONTROL_BIN" "$waves" "$clients" "$sources"
printf '  RSS at start %d MiB, after one sign-in %d MiB; flood: peak %d MiB, after %d MiB (%ds later)\n' \
  "$(mib "$start")" "$(mib "$before")" "$(mib "$peak")" "$(mib "$after")" "$settle"
printf '  threads at most %d\n' "$max_threads"
printf '  hashes at once: at most %s; hashes run: %s\n' "${in_flight:-n/a}" \
  "$([[ -n "$in_flight" ]] && echo "$hashes" || echo n/a)"
printf '  answers: %s\n' "$(sort "$out/answers" | uniq -c | awk '{ printf "%s x %s  ", $1, $2 }')"
