#!/usr/bin/env bash
# Throughput and latency through the edge worker (issue 4 acceptance), side by side in one run:
#   auth:    the release worker: key verify + revocation (shards in KV, cached) + scope + rate
#            limit (leased from its Durable Object) + usage metering (flushed after the
#            response to a Durable Object, batches to a stand-in control plane), then
#            forwarding with a signed identity to a trivial origin;
#   no-auth: the same worker built with the `bench-no-auth` feature (forwards without checking
#            any key) in front of the same origin.
# Both are served by the `workerd` binary that the wrangler package ships (wrangler dev's proxy
# caps a local run near 500 requests/s), from worker-build's output, with a stand-in KV service
# holding signed shards. Both builds are made by scripts/build-edge.sh, as the worker ships.
# Load: wrk on loopback; the two workers are measured in alternating rounds, the order flipped
# every round (no-auth first on odd rounds, auth first on even ones), medians over the rounds.
#
#   bash bench/throughput.sh [seconds per run, default 5] [rounds, default 5] [connections, default 32]
#
# Needs scripts/bootstrap.sh and wrk (Debian: apt-get install wrk). Writes bench/out/throughput/.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need wrk "Debian: apt-get install wrk"

seconds="${1:-5}"
rounds="${2:-5}"
connections="${3:-32}"
out="$LYNXO_ROOT/bench/out/throughput"

rm -rf "$out"
build_worker "" "$out/auth"
build_worker bench-no-auth "$out/no-auth"
printf 'throughput: auth wasm %d bytes gzip, no-auth wasm %d bytes gzip\n' \
  "$(gzip -9 -c "$out/auth/index_bg.wasm" | wc -c)" "$(gzip -9 -c "$out/no-auth/index_bg.wasm" | wc -c)"

workerd_pair "$out" auth no-auth

# Both must forward before they are measured.
got="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:${ports[auth]}/v1/jobs")"
[[ "$got" == 200 ]] || { cat "$out/workerd.log"; die "auth worker answered $got"; }
got="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ports[no-auth]}/v1/jobs")"
[[ "$got" == 200 ]] || { cat "$out/workerd.log"; die "no-auth worker answered $got"; }

# Both get the same requests, the key included: the bare proxy ignores it, as it would in front
# of the same clients (bench/cpu.sh does the same).
run() { # side round
  local side="$1" name="$1-$2"
  wrk_run "$out/$name.wrk" "http://127.0.0.1:${ports[$side]}/v1/jobs" 2 "$connections" "$seconds" \
    -H "Authorization: Bearer $key"
  printf '%-10s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "$non2xx"
  printf '%s\n' "$rps" >"$out/$name.rps"
}

printf 'throughput: %s rounds of %s s per worker, alternating (order flipped every round); %s connections, wrk -t2; workerd %s\n' \
  "$rounds" "$seconds" "$connections" "$("$workerd" --version 2>/dev/null | head -1)"
for round in $(seq "$rounds"); do
  for side in $(alternating "$round" no-auth auth); do
    run "$side" "$round"
  done
done
# Medians over the rounds: the machine is shared, single runs are noisy.
auth_median="$(cat "$out"/auth-*.rps | median)"
noauth_median="$(cat "$out"/no-auth-*.rps | median)"
awk -v a="$auth_median" -v b="$noauth_median" 'BEGIN {
  printf "median req/s: auth %.0f, no-auth %.0f: authenticated keeps %.1f%% of the throughput\n", a, b, 100 * a / b
}'
