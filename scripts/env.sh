# shellcheck shell=bash
# Environment for every project script: `source scripts/env.sh` (from any directory).
#
# Puts the tools that scripts/bootstrap.sh installs first on PATH (cargo-installed binaries under
# $LYNXO_TOOLS/bin, npm packages under node_modules) and points worker-build at them, so nothing
# is downloaded at build time.

LYNXO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LYNXO_ROOT
# `cargo install --root` for wasm-bindgen-cli, worker-build and cargo-fuzz. Outside the work tree
# on purpose: they take minutes to compile, and a fresh clone on the same machine (every CI run,
# every new session's work tree) then reuses them. Safe to share: bootstrap.sh checks the exact
# versions Cargo.lock needs. Set LYNXO_TOOLS to keep them elsewhere (e.g. "$LYNXO_ROOT/.tools").
export LYNXO_TOOLS="${LYNXO_TOOLS:-$HOME/.cache/lynxo-keys/tools}"

_lynxo_path_prepend() {
  case ":$PATH:" in
    *":$1:"*) ;;
    *) PATH="$1:$PATH" ;;
  esac
}
_lynxo_path_prepend "$HOME/.cargo/bin"
_lynxo_path_prepend "$LYNXO_ROOT/node_modules/.bin"
_lynxo_path_prepend "$LYNXO_TOOLS/bin"
unset -f _lynxo_path_prepend
export PATH

# worker-build would otherwise download wasm-bindgen from a host these machines cannot reach.
# This CLI must be the exact version of the wasm-bindgen crate in Cargo.lock (bootstrap.sh).
export WASM_BINDGEN_BIN="$LYNXO_TOOLS/bin/wasm-bindgen"
# worker-build bundles its JS glue with esbuild; use the one package-lock.json pins (wrangler's)
# instead of a download at build time.
export ESBUILD_BIN="$LYNXO_ROOT/node_modules/esbuild/bin/esbuild"
# wrangler: no telemetry.
export WRANGLER_SEND_METRICS=false
