#!/usr/bin/env bash
# Measures what unauthenticated 48 MiB chunked bodies cost (issue 10, finding 2): the resident
# set of the worker's workerd (under `wrangler dev`) and of the control plane across 30 whole
# attacks on each endpoint that reads a body, and on an API route, beside 30 plain
# `GET /healthz` (tests/tests/body_memory.rs).
#
#   bash bench/body-memory.sh                 # this tree's worker and control plane
#   bash bench/body-memory.sh 15c57ae         # also the worker of that commit, in the same run
#
# The baseline commit's worker is built from `git archive` in a temporary directory (a few
# minutes). Needs scripts/bootstrap.sh. Results: docs/edge.md.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n ${1:-} ]]; then
  base="$(mktemp -d -t lynxo-baseline-XXXXXX)"
  trap 'rm -rf "$base"' EXIT
  git archive "$1" | tar -x -C "$base"
  ln -s "$LYNXO_ROOT/node_modules" "$base/node_modules"
  # Its own target directory (cargo names a workspace's own crates by their path inside the
  # workspace, so two trees sharing one would overwrite each other's), seeded with this tree's
  # compiled wasm dependencies.
  mkdir -p "$base/target"
  cp -r target/wasm32-unknown-unknown "$base/target/" 2>/dev/null || true
  bash "$base/scripts/build-edge.sh"
  export LYNXO_BASELINE_BUILD="$base/edge/build"
fi

e2e_bench body_memory 'body-memory:.*'
