#!/usr/bin/env bash
# Measures revocation propagation end to end (issue 4 acceptance), with the default 2 s cache:
#
# - through the real control plane: keys created and revoked with its admin API, timed from the
#   moment the revoke call returns to the first 401 seen polling the edge every 10 ms; 20
#   revocations spaced more than a second apart and 20 back to back (some then wait out KV's
#   one write per key per second);
# - without it: 20 shards pushed to the sync endpoint and 20 written straight to KV.
#
# Starts its own demo origin, `wrangler dev` and control plane (one measurement at a time), and
# stops them.
#
#   bash bench/propagation.sh               # both
#   bash bench/propagation.sh control       # through the control plane only
#   bash bench/propagation.sh edge          # sync push and KV only
#   bash bench/propagation.sh load          # 30 revocations a second through the control plane
#                                           # for PROPAGATION_LOAD_SECS (20 by default): the rate
#                                           # reached, the load average, revoke -> published and
#                                           # -> 401 p50/p95/p99 (PROPAGATION_LOAD_RATE: another
#                                           # rate; PROPAGATION_LOAD_WATCH=0: revocations only,
#                                           # what the client reaches without watching the edge)
#   PROPAGATION_REVOCATIONS=50 bash bench/propagation.sh control
#
# Needs scripts/bootstrap.sh. Results and the production bound: docs/edge.md.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-all}" in
  all) filter=(revocation_propagation) ;;
  control) filter=(revocation_propagation_through_the_control_plane --exact) ;;
  edge) filter=(revocation_propagation --exact) ;;
  load) filter=(revocation_propagation_under_load --exact) ;;
  *) echo "usage: bash bench/propagation.sh [all|control|edge|load]" >&2; exit 2 ;;
esac

e2e_bench propagation 'propagation (via|under load).*' "${filter[@]}"
