#!/usr/bin/env bash
# Fails if the `shared` crate, as the worker links it (wasm32, normal dependencies), depends on
# anything that brings a clock, randomness, JavaScript bindings or I/O.
#
#   bash scripts/check-shared-pure.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

tree="$(cargo tree -p shared -e normal --target wasm32-unknown-unknown --prefix none --format '{p}')"
forbidden='^(getrandom|rand|rand_core|js-sys|web-sys|wasm-bindgen|chrono|time|tokio|std-time|instant|web-time) '
if grep -E "$forbidden" <<<"$tree"; then
  echo "check-shared-pure: shared must not depend on the crates above" >&2
  exit 1
fi
printf 'check-shared-pure: shared depends only on: %s\n' "$(cut -d' ' -f1 <<<"$tree" | sort -u | grep -vx shared | tr '\n' ' ')"
