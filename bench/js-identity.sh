#!/usr/bin/env bash
# Times @lynxo/keys' verifyIdentity in Node beside a hand-written node:crypto check of the same
# identity headers, in one run (bench/js-identity.mjs says how).
#
#   bash bench/js-identity.sh
#
# Builds the package first (js/build.sh). Needs scripts/bootstrap.sh.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$LYNXO_ROOT"

bash js/build.sh
node bench/js-identity.mjs js/pkg/index.mjs
