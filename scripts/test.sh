#!/usr/bin/env bash
# Runs every test of the project, installing what it needs first (idempotent, fast when done).
#
#   bash scripts/test.sh
#
# .ci/run calls exactly this. The steps, in the order they run:
#   1. bootstrap: the toolchain and tools (scripts/bootstrap.sh);
#   2. formatting (`cargo fmt --check`) and lints (`cargo clippy`, warnings are errors);
#   3. a check that `shared` depends on no clock, RNG or I/O crate (scripts/check-shared-pure.sh);
#   4. the worker's release build (the end-to-end tests run it) and an offline
#      `wrangler deploy --dry-run` of each environment;
#   5. the native tests of the whole workspace, including the end-to-end suite in tests/ (the
#      worker under `wrangler dev` in front of the demo origin); then the control plane's suite
#      and the end-to-end suite again, every control plane on PostgreSQL (a private server for
#      each run: e2e's with_postgres; the same tests, each on a fresh database; docs/postgres.md);
#   6. schemathesis against a live control plane (scripts/schemathesis.sh), and the deploy
#      runbook's local commands: the systemd unit verified, a first start, TLS in front
#      (scripts/check-deploy.sh);
#   7. the shared crate's vector tests again as wasm32 under Node (scripts/test-wasm.sh);
#   8. the JavaScript package @lynxo/keys: built with wasm-pack, packed, and its tests run by
#      Node's own test runner from the same vectors files (js/build.sh, js/test/).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step "bootstrap"
bash scripts/bootstrap.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "shared has no clock, RNG or I/O dependency"
bash scripts/check-shared-pure.sh

step "edge worker: release build and offline deploy dry-run per environment"
bash scripts/build-edge.sh
for env in development staging production; do
  out="$(mktemp -d)"
  npx --no-install wrangler deploy --dry-run --env "$env" --outdir "$out" >"$out.log" 2>&1 ||
    { cat "$out.log"; exit 1; }
  printf 'wrangler deploy --dry-run --env %s: ok (%s)\n' "$env" "$(du -sh "$out" | cut -f1)"
  rm -rf "$out" "$out.log"
done

step "native tests, end-to-end suite included"
cargo test --workspace

step "the control plane's suite again, on PostgreSQL"
cargo run -q -p e2e --bin with_postgres -- cargo test -q -p control

step "the end-to-end suite again, on PostgreSQL"
cargo run -q -p e2e --bin with_postgres -- cargo test -q -p e2e

step "schemathesis against a live control plane"
bash scripts/schemathesis.sh

step "deploy runbook: systemd unit, first start, TLS in front, stop and compact"
bash scripts/check-deploy.sh

step "shared tests as wasm32 under Node"
bash scripts/test-wasm.sh

step "JavaScript package: build, npm pack, node --test from the vectors files"
bash js/build.sh
node --test js/test/

step "all tests passed"
