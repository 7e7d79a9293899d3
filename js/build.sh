#!/usr/bin/env bash
# Builds the npm package @lynxo/keys into js/pkg/ with wasm-pack, for Node (CommonJS; ESM
# through index.mjs), bundlers and browsers (`@lynxo/keys/web`), then packs it and prints the
# tarball's size.
#
#   bash js/build.sh    # js/pkg/, js/pkg/lynxo-keys-<version>.tgz, installed in examples/node-origin
#
# Needs scripts/bootstrap.sh (wasm-pack, the locked wasm-bindgen CLI, esbuild). wasm-pack reads
# the wasm-bindgen version from Cargo.lock and runs the first `wasm-bindgen` on PATH if it is that
# version (scripts/env.sh puts the bootstrap's first); `--mode no-install` makes it fail rather
# than download any other, and `wasm-opt = false` in js/Cargo.toml keeps it from downloading
# binaryen.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$LYNXO_ROOT"

die() { printf 'js/build: error: %s\n' "$*" >&2; exit 1; }
for tool in wasm-pack wasm-bindgen "$ESBUILD_BIN"; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/bootstrap.sh"
done

pkg=js/pkg
rm -rf "$pkg"
mkdir -p "$pkg/wasm"
# One build of the glue per loader (wasm-pack's own package.json is replaced by ours). The
# module itself is the same bytes for every loader, so the package ships it once, in wasm/, with
# each loader's glue beside it: lynxo_keys.cjs (Node), lynxo_keys.js and lynxo_keys_bg.js
# (bundlers), lynxo_keys_web.js (browsers, Deno).
for target in nodejs bundler web; do
  wasm-pack --quiet build js --release --mode no-install --no-pack \
    --target "$target" --out-dir "pkg/.$target" --out-name lynxo_keys
done
for target in bundler web; do
  cmp -s "$pkg/.nodejs/lynxo_keys_bg.wasm" "$pkg/.$target/lynxo_keys_bg.wasm" ||
    die "wasm-bindgen made another module for --target $target: ship one per loader instead"
done
mv "$pkg/.nodejs/lynxo_keys_bg.wasm" "$pkg/wasm/"
mv "$pkg/.nodejs/lynxo_keys.js" "$pkg/wasm/lynxo_keys.cjs"
mv "$pkg/.bundler/lynxo_keys.js" "$pkg/.bundler/lynxo_keys_bg.js" "$pkg/wasm/"
mv "$pkg/.web/lynxo_keys.js" "$pkg/wasm/lynxo_keys_web.js"
rm -rf "$pkg/.nodejs" "$pkg/.bundler" "$pkg/.web"
# The bundler and web glue are ES modules in .js files; the package itself is CommonJS.
printf '{ "type": "module" }\n' >"$pkg/wasm/package.json"
cp js/package/*.mjs js/package/*.cjs js/package/*.d.ts js/package/*.d.mts js/package/package.json \
  js/package/README.md "$pkg/"
# The CommonJS copy of the shared wrapper, for require().
"$ESBUILD_BIN" js/package/core.mjs --format=cjs --log-level=warning --outfile="$pkg/core.cjs"

wasm="$pkg/wasm/lynxo_keys_bg.wasm"
tarball="$(cd "$pkg" && npm pack --silent)"
# The example origin installs the tarball as a user would (no registry: a local file, no deps),
# so it and the end-to-end test run exactly what `npm pack` shipped.
rm -rf examples/node-origin/node_modules
(cd examples/node-origin && npm install --silent --no-audit --no-fund --no-package-lock --offline)
printf 'js/build: %s: %d bytes, %d bytes gzip -9; npm pack %s: %d bytes\n' "$wasm" \
  "$(wc -c <"$wasm")" "$(gzip -9 -c "$wasm" | wc -c)" "$tarball" "$(wc -c <"$pkg/$tarball")"
