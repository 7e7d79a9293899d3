#!/usr/bin/env bash
# What rate limiting and usage metering add to a request's latency (issue 5), side by side in
# one run: the release worker against the same worker built with `--features bench-no-limits`,
# both under `wrangler dev`, called alternately with one key, one request at a time; p50 and p99
# of each (tests/tests/latency.rs).
#
#   bash bench/latency.sh [rounds, default 3000]
#
# Needs scripts/bootstrap.sh. Writes bench/out/latency.txt.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$LYNXO_ROOT"

rounds="${1:-3000}"
baseline="edge/build-bench-no-limits"
mkdir -p bench/out

bash scripts/build-edge.sh
EDGE_FEATURES=bench-no-limits EDGE_OUT_DIR=build-bench-no-limits bash scripts/build-edge.sh
trap 'rm -rf "$LYNXO_ROOT/$baseline"' EXIT

LYNXO_BASELINE_BUILD="$baseline" LYNXO_LATENCY_ROUNDS="$rounds" \
  cargo test --quiet --release -p e2e --test latency -- --ignored --nocapture 2>&1 |
  tee bench/out/latency.txt
