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
# holding signed shards. Load: wrk on loopback.
#
#   bash bench/throughput.sh [seconds per run, default 5] [rounds, default 5] [connections, default 32]
#
# Needs scripts/bootstrap.sh and wrk (Debian: apt-get install wrk). Writes bench/out/throughput/.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$LYNXO_ROOT"

seconds="${1:-5}"
rounds="${2:-5}"
connections="${3:-32}"
out="$LYNXO_ROOT/bench/out/throughput"
die() { printf 'throughput: error: %s\n' "$*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found (apt-get install wrk)"

rm -rf "$out"
mkdir -p "$out/auth" "$out/no-auth"

# The two builds. worker-build writes relative to the crate; move the baseline out of edge/.
bash scripts/build-edge.sh
cp edge/build/index.js edge/build/index_bg.wasm "$out/auth/"
(cd edge && worker-build --release --out-dir build-bench-no-auth --features bench-no-auth >/dev/null)
cp edge/build-bench-no-auth/index.js edge/build-bench-no-auth/index_bg.wasm "$out/no-auth/"
rm -rf edge/build-bench-no-auth
printf 'throughput: auth wasm %d bytes gzip, no-auth wasm %d bytes gzip\n' \
  "$(gzip -9 -c "$out/auth/index_bg.wasm" | wc -c)" "$(gzip -9 -c "$out/no-auth/index_bg.wasm" | wc -c)"

# shellcheck source=bench/workerd-pair.sh
source bench/workerd-pair.sh
workerd_pair "$out" auth no-auth
auth_port="${ports[auth]}"
noauth_port="${ports[no-auth]}"

# Both must forward before they are measured.
got="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:$auth_port/v1/jobs")"
[[ "$got" == 200 ]] || { cat "$out/workerd.log"; die "auth worker answered $got"; }
got="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$noauth_port/v1/jobs")"
[[ "$got" == 200 ]] || { cat "$out/workerd.log"; die "no-auth worker answered $got"; }

run() { # name port [header]
  local name="$1" port="$2"
  shift 2
  # Warm-up, then the measured run.
  wrk -t2 -c"$connections" -d2s "$@" "http://127.0.0.1:$port/v1/jobs" >/dev/null
  wrk -t2 -c"$connections" -d"${seconds}s" --latency "$@" "http://127.0.0.1:$port/v1/jobs" >"$out/$name.wrk"
  local rps p50 p99 non2xx
  rps="$(awk '/^Requests\/sec/ { print $2 }' "$out/$name.wrk")"
  p50="$(awk '$1 == "50%" { print $2 }' "$out/$name.wrk")"
  p99="$(awk '$1 == "99%" { print $2 }' "$out/$name.wrk")"
  non2xx="$(awk '/Non-2xx/ { print $NF }' "$out/$name.wrk")"
  printf '%-8s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
  printf '%s\n' "$rps" >"$out/$name.rps"
}

printf 'throughput: %s rounds of %s s per worker, alternating; %s connections, wrk -t2; workerd %s\n' \
  "$rounds" "$seconds" "$connections" "$("$workerd" --version 2>/dev/null | head -1)"
for round in $(seq "$rounds"); do
  run "no-auth-$round" "$noauth_port"
  run "auth-$round" "$auth_port" -H "Authorization: Bearer $key"
done
# Medians over the rounds: the machine is shared, single runs are noisy.
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
auth_median="$(cat "$out"/auth-*.rps | median)"
noauth_median="$(cat "$out"/no-auth-*.rps | median)"
awk -v a="$auth_median" -v b="$noauth_median" 'BEGIN {
  printf "median req/s: auth %.0f, no-auth %.0f: authenticated keeps %.1f%% of the throughput\n", a, b, 100 * a / b
}'
