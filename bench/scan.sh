#!/usr/bin/env bash
# How fast `lynxo-keys scan` reads a large real tree, beside ripgrep with the documented regex
# on the same tree, in one run (issue 13: no slower than twice ripgrep).
#
#   bash bench/scan.sh                     # the cargo registry's sources, ~/.cargo/registry/src
#   bash bench/scan.sh DIR [ROUNDS]        # another tree; ROUNDS pairs (default 5)
#
# Both run with one thread per CPU over the same files: hidden ones included, .gitignore rules
# applied the same way, binary files skipped (the scanner: a NUL in the first 8000 bytes; rg: a
# NUL anywhere it reads). One untimed run of each warms the page cache; then the rounds
# alternate which goes first (ABBA...). ripgrep is installed if missing (Debian's package, or
# `cargo install` into $LYNXO_TOOLS); the scanner is built in release. Results:
# docs/benchmarks.md.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

tree="${1:-$HOME/.cargo/registry/src}"
rounds="${2:-5}"
[[ -d "$tree" ]] || die "no directory $tree"

# The regex of docs/key-format.md and docs/secret-scanning.md, as gitleaks or any grep runs it.
regex='\blnx_(?:live|stage|dev)_[0-9A-Za-z]{94}\b'

if ! command -v rg >/dev/null; then
  log "ripgrep: installing"
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    apt-get install -y -qq ripgrep >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq ripgrep >/dev/null; } ||
      cargo install --quiet --root "$LYNXO_TOOLS" ripgrep
  else
    cargo install --quiet --root "$LYNXO_TOOLS" ripgrep
  fi
fi
log "ripgrep: $(rg --version | head -1)"

cargo build --quiet --release -p lynxo-cli
scanner="$LYNXO_ROOT/target/release/lynxo-keys"

ms_now() { date +%s%3N; }
# Runs one side over the tree; prints "milliseconds hits". Exit 1 (found) is not a failure.
run() { # scanner|rg
  local start out end status=0
  start="$(ms_now)"
  case "$1" in
    scanner) out="$("$scanner" scan --json "$tree")" || status=$? ;;
    rg) out="$(rg --hidden --line-number --column -e "$regex" "$tree")" || status=$? ;;
  esac
  end="$(ms_now)"
  ((status <= 1)) || die "$1 failed with status $status"
  printf '%s %s\n' "$((end - start))" "$(grep -c . <<<"$out" || true)"
}

size="$(du -sh "$tree" | cut -f1)"
files="$(find "$tree" -type f | wc -l)"
log "tree: $tree ($size, $files files), $rounds rounds"
run scanner >/dev/null
run rg >/dev/null
scanner_ms=() rg_ms=()
for ((round = 1; round <= rounds; round++)); do
  for side in $(alternating "$round" scanner rg); do
    read -r ms hits < <(run "$side")
    log "round $round: $side ${ms} ms, $hits hits"
    if [[ $side == scanner ]]; then scanner_ms+=("$ms"); else rg_ms+=("$ms"); fi
  done
done
s="$(printf '%s\n' "${scanner_ms[@]}" | median)"
r="$(printf '%s\n' "${rg_ms[@]}" | median)"
ratio="$(awk -v s="$s" -v r="$r" 'BEGIN { printf "%.2f", s / r }')"
log "median: lynxo-keys scan ${s} ms, rg ${r} ms: ${ratio}x ripgrep (target: at most 2x)"
awk -v x="$ratio" 'BEGIN { exit !(x <= 2) }' || die "the scanner is more than twice ripgrep's time"
