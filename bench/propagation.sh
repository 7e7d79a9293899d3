#!/usr/bin/env bash
# Measures revocation propagation end to end (issue 4 acceptance): publish -> first 401 at the
# edge, 20 revocations through the sync endpoint and 20 written straight to KV, with the default
# 2 s cache. Starts its own demo origin and `wrangler dev`, and stops them.
#
#   bash bench/propagation.sh
#
# Needs scripts/bootstrap.sh. Results and the production bound: docs/edge.md.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$LYNXO_ROOT"

bash scripts/build-edge.sh
cargo test --quiet -p e2e --test propagation -- --ignored --nocapture 2>&1 | grep -E '^propagation|panicked|FAILED|error' || true
