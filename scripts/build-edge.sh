#!/usr/bin/env bash
# Builds the edge worker for release with worker-build and prints the size of its wasm.
#
#   bash scripts/build-edge.sh
#   EDGE_FEATURES=bench-no-limits EDGE_OUT_DIR=build-bench-no-limits bash scripts/build-edge.sh
#
# Output: edge/build/index.js (entry module, which wrangler.toml's main re-exports through
# edge/build/worker/shim.mjs) and edge/build/index_bg.wasm, without its function names
# (scripts/strip-wasm-names.mjs), at most 400,000 bytes gzip -9 or the build fails. wrangler
# runs this as the [build] command of wrangler.toml. Needs the tools of scripts/bootstrap.sh.
#
# EDGE_KEEP_NAMES=1 keeps the function names (profiling only; see below).
#
# Benchmark baselines: EDGE_FEATURES (comma-separated cargo features of edge/, e.g.
# bench-no-limits or bench-no-auth) builds into EDGE_OUT_DIR (a directory under edge/, required
# with features, never `build`), so the normal build in edge/build is left as it was.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v worker-build >/dev/null || die "worker-build not found: run scripts/bootstrap.sh"
[[ -x "$ESBUILD_BIN" ]] || die "esbuild not found at $ESBUILD_BIN: run scripts/bootstrap.sh"

# worker-build runs $WASM_BINDGEN_BIN on the module; a CLI of another version than the
# wasm-bindgen crate it was compiled against fails at run time, so check before a long build.
locked="$(locked_version wasm-bindgen)"
have="$("$WASM_BINDGEN_BIN" --version 2>/dev/null | awk '{ print $NF }' || true)"
[[ -n "$have" && "$have" == "$locked" ]] ||
  die "wasm-bindgen CLI ${have:-missing} does not match wasm-bindgen ${locked:-?} in Cargo.lock: run scripts/bootstrap.sh"

features="${EDGE_FEATURES:-}"
out_dir="${EDGE_OUT_DIR:-build}"
[[ $out_dir =~ ^[A-Za-z0-9._-]+$ ]] || die "EDGE_OUT_DIR must be a plain directory name under edge/"
if [[ -n $features ]]; then
  [[ $out_dir != build ]] || die "a build with EDGE_FEATURES=$features needs its own EDGE_OUT_DIR"
  (cd edge && worker-build --release --out-dir "$out_dir" --features "$features")
else
  (cd edge && worker-build --release --out-dir "$out_dir")
fi

wasm="edge/$out_dir/index_bg.wasm"
[[ -f "$wasm" ]] || die "worker-build produced no $wasm"
# The function names are for stack traces only, and a quarter of the module (docs/edge.md, "Size").
# EDGE_KEEP_NAMES=1 keeps them, for a profile that names functions (bench/cpu.sh profile): such a
# module is never deployed, and is not held to the budget.
keep_names="${EDGE_KEEP_NAMES:-}"
[[ -n $keep_names ]] || node scripts/strip-wasm-names.mjs "$wasm"
raw=$(wc -c <"$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
printf 'build-edge: %s: %d bytes, %d bytes gzip -9 (%d KiB)\n' "$wasm" "$raw" "$gz" $(((gz + 1023) / 1024))
# The size budget (docs/edge.md, "Size"): a module over it fails the build, so no test runs it.
budget=400000
[[ -n $keep_names ]] || ((gz <= budget)) || die "$wasm is $gz bytes gzip -9, over the budget of $budget"
