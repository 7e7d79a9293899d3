# shellcheck shell=bash
# Helpers every project script shares: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"` (from
# scripts/; bench/lib.sh sources it for the benchmarks). Sources scripts/env.sh (tools on PATH)
# and moves to the repository's root. Messages name the script that sourced this file.

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LYNXO_ROOT" || exit

# The name messages carry: the script's file name without `.sh` (a script may set it first).
LYNXO_SCRIPT="${LYNXO_SCRIPT:-$(basename "$0" .sh)}"

log() { printf '%s: %s\n' "$LYNXO_SCRIPT" "$*"; }
die() { printf '%s: error: %s\n' "$LYNXO_SCRIPT" "$*" >&2; exit 1; }
# Fails unless command $1 is on PATH; $2 says how to get it.
need() { command -v "$1" >/dev/null || die "$1 not found${2:+ ($2)}"; }
# A heading between the steps of a long script.
step() { printf '\n==> %s\n' "$*"; }

# Prints the version of package $1 in Cargo.lock; fails if it is absent or locked more than once.
locked_version() {
  local versions
  versions="$(awk -v want="\"$1\"" '
    /^\[\[package\]\]/ { name = "" }
    $1 == "name" && $2 == "=" { name = $3 }
    $1 == "version" && $2 == "=" && name == want { gsub(/"/, "", $3); print $3 }
  ' Cargo.lock)"
  [[ -n "$versions" ]] || die "$1 is not in Cargo.lock"
  [[ "$(wc -l <<<"$versions")" -eq 1 ]] || die "Cargo.lock holds several versions of $1: $(tr '\n' ' ' <<<"$versions")"
  printf '%s\n' "$versions"
}

# A free loopback port: the kernel picks one, then it is released for the caller's server.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until `curl -f URL` succeeds: at most TRIES tries (default 100) INTERVAL seconds apart
# (default 0.1). With a PID, gives up as soon as that process has exited. Fails when it never
# answered.
wait_for_url() { # url [tries] [interval] [pid]
  local url="$1" tries="${2:-100}" interval="${3:-0.1}" pid="${4:-}" _
  for _ in $(seq "$tries"); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep "$interval"
  done
  curl -fsS -o /dev/null "$url" 2>/dev/null
}

# Stops process PID: SIGTERM, up to 5 s for it to exit, then SIGKILL. Quiet if it is gone.
stop_process() { # pid
  local pid="$1" _
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
