#!/usr/bin/env bash
# Times the shared crate's full verify path in wasm32 under Node for a v2 key and a v1 key, side
# by side in one run with their crypto alone (v1's pre-keyed HMAC-SHA256, one of v2's three PRF
# compressions); then the edge worker's own work per authenticated request, stage by stage
# (edge::testing::stages: key check, lease take, meter push, RateLimit field values, and the
# origin request's plan that every build makes), without the runtime's calls.
#
#   bash bench/wasm-verify.sh
#
# Builds bench/wasm (the same `shared` and `edge` code and release profile the worker links), binds it with
# the locked wasm-bindgen CLI, and runs bench/wasm-verify.mjs. Needs scripts/bootstrap.sh.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$LYNXO_ROOT"

cargo build --quiet -p bench-wasm --release --target wasm32-unknown-unknown
out=bench/out/wasm
"$WASM_BINDGEN_BIN" --target nodejs --out-dir "$out" target/wasm32-unknown-unknown/release/bench_wasm.wasm
node bench/wasm-verify.mjs "$out/bench_wasm.js"
