#!/usr/bin/env bash
# Runs Lynxo Keys locally on loopback: the edge worker under workerd (wrangler dev), and the
# parts of the system that exist so far. Ctrl-C stops everything it started.
#
#   bash scripts/dev.sh
#
# Installs what it needs first (scripts/bootstrap.sh). Local secrets are generated once into
# .dev/ (gitignored) and reused, so keys issued in one run keep working in the next.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LYNXO_ROOT"

EDGE_PORT="${EDGE_PORT:-8787}"

bash scripts/bootstrap.sh
mkdir -p .dev
if [[ ! -s .dev/keyring ]]; then
  printf 'active=1;1:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >.dev/keyring
  chmod 600 .dev/keyring
fi
keyring="$(cat .dev/keyring)"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

setsid npx --no-install wrangler dev --env development --port "$EDGE_PORT" --ip 127.0.0.1 \
  --persist-to .dev/wrangler --var "LYNXO_KEYRING:$keyring" &
pids+=($!)

for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$EDGE_PORT/healthz" >/dev/null 2>&1 && break
  sleep 1
done

cat <<INFO

  Lynxo Keys, local
  edge worker : http://127.0.0.1:$EDGE_PORT  (health: /healthz)
  not built yet: the control plane and dashboard (issue 3), the demo origin (issue 4).

  Ctrl-C stops everything.
INFO
wait
