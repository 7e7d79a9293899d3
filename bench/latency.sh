#!/usr/bin/env bash
# What rate limiting and usage metering add to a request's latency (issue 5), side by side in
# one run:
#   on:  the release worker: key check, revocation, scope, then the per-key rate limit (lease
#        from its KeyLimiter object) and the usage event (buffered, flushed to a UsageMeter
#        object after the response, batches posted to an ingest stand-in);
#   off: the same worker built with `--features bench-no-limits` (no limit, no metering).
# Both are served by the `workerd` binary that the wrangler package ships (wrangler dev's proxy
# adds milliseconds of its own), with Durable Objects on local disk, a stand-in KV holding
# signed revocation shards, and a stand-in control plane that acknowledges every batch.
# Load: wrk with ONE connection, so each figure is one request's latency, not queueing; the two
# workers are measured in alternating rounds. A first run against a trivial JavaScript worker in
# the same process ("floor") shows the runtime's own tail: on these machines workerd's p99 is
# tens of milliseconds for any worker and grows with the requests served, so p99 differences
# far below that cannot be resolved here (docs/rate-limits.md).
#
#   bash bench/latency.sh [seconds per run, default 10] [rounds, default 5]
#
# Needs scripts/bootstrap.sh and wrk (Debian: apt-get install wrk). Writes bench/out/latency/.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$LYNXO_ROOT"

seconds="${1:-10}"
rounds="${2:-5}"
out="$LYNXO_ROOT/bench/out/latency"
die() { printf 'latency: error: %s\n' "$*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found (apt-get install wrk)"

rm -rf "$out"
mkdir -p "$out/on" "$out/off"

bash scripts/build-edge.sh
cp edge/build/index.js edge/build/index_bg.wasm "$out/on/"
EDGE_FEATURES=bench-no-limits EDGE_OUT_DIR=build-bench-no-limits bash scripts/build-edge.sh
cp edge/build-bench-no-limits/index.js edge/build-bench-no-limits/index_bg.wasm "$out/off/"
rm -rf edge/build-bench-no-limits

# shellcheck source=bench/workerd-pair.sh
source bench/workerd-pair.sh
workerd_pair "$out" on off
on_port="${ports[on]}"
off_port="${ports[off]}"

# Both must forward before they are measured, and only "on" limits.
for port in "$on_port" "$off_port"; do
  got="$(curl -s -D "$out/headers-$port" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/jobs")"
  [[ "$got" == 200 ]] || { cat "$out/workerd.log"; die "worker on $port answered $got"; }
done
grep -qi '^ratelimit-policy: "default";q=1000000000;w=60' "$out/headers-$on_port" ||
  { cat "$out/headers-$on_port" "$out/workerd.log"; die "the limited worker sent no RateLimit-Policy"; }
! grep -qi '^ratelimit' "$out/headers-$off_port" || die "the baseline worker limits"

run() { # name port [path]
  local name="$1" port="$2" path="${3:-/v1/jobs}"
  wrk -t1 -c1 -d2s -H "Authorization: Bearer $key" "http://127.0.0.1:$port$path" >/dev/null
  wrk -t1 -c1 -d"${seconds}s" --latency -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$port$path" >"$out/$name.wrk"
  local rps p50 p99 non2xx
  rps="$(awk '/^Requests\/sec/ { print $2 }' "$out/$name.wrk")"
  p50="$(awk '$1 == "50%" { print $2 }' "$out/$name.wrk")"
  p99="$(awk '$1 == "99%" { print $2 }' "$out/$name.wrk")"
  non2xx="$(awk '/Non-2xx/ { print $NF }' "$out/$name.wrk")"
  [[ -z "$non2xx" ]] || die "$name: $non2xx non-2xx answers"
  printf '%-6s %9s req/s   p50 %9s   p99 %9s\n' "$name" "$rps" "$p50" "$p99"
  printf '%s %s\n' "$(to_us "$p50")" "$(to_us "$p99")" >"$out/$name.lat"
}
to_us() { # wrk prints 812.00us, 1.23ms or 1.02s
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else print n * 1000000
  }'
}

printf 'latency: %s rounds of %s s per worker, alternating; 1 connection; workerd %s\n' \
  "$rounds" "$seconds" "$("$workerd" --version 2>/dev/null | head -1)"
# The runtime's own tail, for scale: the trivial JavaScript ingest stand-in in the same process.
run "floor" "$ingest_port" /
for round in $(seq "$rounds"); do
  # Alternate which goes first: the runtime's tail grows with the requests it has served.
  if ((round % 2)); then
    run "off-$round" "$off_port"
    run "on-$round" "$on_port"
  else
    run "on-$round" "$on_port"
    run "off-$round" "$off_port"
  fi
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
on50="$(awk '{ print $1 }' "$out"/on-*.lat | median)"
on99="$(awk '{ print $2 }' "$out"/on-*.lat | median)"
off50="$(awk '{ print $1 }' "$out"/off-*.lat | median)"
off99="$(awk '{ print $2 }' "$out"/off-*.lat | median)"
awk -v a="$on50" -v b="$on99" -v c="$off50" -v d="$off99" 'BEGIN {
  printf "median over rounds: on p50 %.0f us p99 %.0f us; off p50 %.0f us p99 %.0f us; added p50 %+.0f us, p99 %+.0f us\n", a, b, c, d, a - c, b - d
}'
