#!/usr/bin/env bash
# Runs the shared crate's vector tests again as wasm32 under Node, from the same vectors files
# the native tests read: what the edge worker links is held to the same bytes.
#
#   bash scripts/test-wasm.sh
#
# Needs scripts/bootstrap.sh (wasm32 target, wasm-bindgen-test-runner at the locked version).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
cargo test -p shared --target wasm32-unknown-unknown --test vectors --test identity_vectors \
  --test wycheproof --test audit_vectors
