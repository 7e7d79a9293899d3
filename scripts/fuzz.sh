#!/usr/bin/env bash
# Runs one fuzz target of shared/fuzz for a number of seconds, with its committed corpus.
#
#   bash scripts/fuzz.sh key_parse 300
#   bash scripts/fuzz.sh revocation_decode 300
#
# Installs cargo-fuzz (crates.io) if missing and uses the nightly toolchain libFuzzer needs. New
# corpus entries land in shared/fuzz/corpus/<target>; a crash lands in shared/fuzz/artifacts/ and
# the script fails. Commit corpus changes after `cargo +nightly fuzz cmin <target>`, and copy any
# crash input into shared/fuzz/regressions/<target>/ with the fix (docs/fuzzing.md).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd shared/fuzz

target="${1:?usage: fuzz.sh <key_parse|revocation_decode> [seconds]}"
seconds="${2:-60}"

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --quiet --root "$LYNXO_TOOLS" cargo-fuzz

mkdir -p "corpus/$target"
# Regression inputs are replayed first, as extra corpus directories libFuzzer only reads.
regressions=()
[[ -d "regressions/$target" ]] && regressions=("regressions/$target")
cargo +nightly fuzz run "$target" "corpus/$target" "${regressions[@]}" -- \
  -max_total_time="$seconds" -print_final_stats=1
