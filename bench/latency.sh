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
# workers are measured in alternating rounds, the order flipped every round. A first run against a trivial JavaScript worker in
# the same process ("floor") shows the runtime's own tail: on these machines workerd's p99 is
# tens of milliseconds for any worker and grows with the requests served, so p99 differences
# far below that cannot be resolved here (docs/rate-limits.md).
#
#   bash bench/latency.sh [seconds per run, default 10] [rounds, default 5]
#
# Needs scripts/bootstrap.sh and wrk (Debian: apt-get install wrk). Writes bench/out/latency/.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need wrk "Debian: apt-get install wrk"

seconds="${1:-10}"
rounds="${2:-5}"
out="$LYNXO_ROOT/bench/out/latency"

rm -rf "$out"
build_worker "" "$out/on"
build_worker bench-no-limits "$out/off"

workerd_pair "$out" on off

# Both must forward before they are measured, and only "on" limits.
for side in on off; do
  got="$(curl -s -D "$out/headers-$side" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:${ports[$side]}/v1/jobs")"
  [[ "$got" == 200 ]] || { cat "$out/workerd.log"; die "worker $side answered $got"; }
done
grep -qi '^ratelimit-policy: "default";q=1000000000;w=60' "$out/headers-on" ||
  { cat "$out/headers-on" "$out/workerd.log"; die "the limited worker sent no RateLimit-Policy"; }
! grep -qi '^ratelimit' "$out/headers-off" || die "the baseline worker limits"

run() { # name port [path]
  local name="$1" port="$2" path="${3:-/v1/jobs}"
  wrk_run "$out/$name.wrk" "http://127.0.0.1:$port$path" 1 1 "$seconds" -H "Authorization: Bearer $key"
  [[ "$non2xx" == 0 ]] || die "$name: $non2xx non-2xx answers"
  printf '%-6s %9s req/s   p50 %9s   p99 %9s\n' "$name" "$rps" "$p50" "$p99"
  printf '%s %s\n' "$(to_us "$p50")" "$(to_us "$p99")" >"$out/$name.lat"
}

printf 'latency: %s rounds of %s s per worker, alternating (order flipped every round); 1 connection; workerd %s\n' \
  "$rounds" "$seconds" "$("$workerd" --version 2>/dev/null | head -1)"
# The runtime's own tail, for scale: the trivial JavaScript ingest stand-in in the same process.
run "floor" "$ingest_port" /
for round in $(seq "$rounds"); do
  # The runtime's tail grows with the requests it has served: neither side always goes first.
  for side in $(alternating "$round" off on); do
    run "$side-$round" "${ports[$side]}"
  done
done
on50="$(awk '{ print $1 }' "$out"/on-*.lat | median)"
on99="$(awk '{ print $2 }' "$out"/on-*.lat | median)"
off50="$(awk '{ print $1 }' "$out"/off-*.lat | median)"
off99="$(awk '{ print $2 }' "$out"/off-*.lat | median)"
awk -v a="$on50" -v b="$on99" -v c="$off50" -v d="$off99" 'BEGIN {
  printf "median over rounds: on p50 %.0f us p99 %.0f us; off p50 %.0f us p99 %.0f us; added p50 %+.0f us, p99 %+.0f us\n", a, b, c, d, a - c, b - d
}'
