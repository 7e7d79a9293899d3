#!/usr/bin/env bash
# How cost grows with data (docs/benchmarks.md, "Growth"): for each scale (the percent of the
# population's keys that carry traffic; default 1 10 100), control/examples/growth.rs generates
# a database of the real schema (10,000 accounts, 1 to 50 keys each, 30 days of traffic) and
# measures the real store functions on it. Prints a markdown table and each query's plan, and
# deletes every generated file.
#
#   bash bench/growth.sh [scale...]          GROWTH_DIR=<dir> to generate elsewhere
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

scales=("${@:-1 10 100}")
# shellcheck disable=SC2206 # one argument "1 10 100" or several
scales=(${scales[*]})
dir="${GROWTH_DIR:-target/growth}"
mkdir -p "$dir"
trap 'rm -f "$dir"/growth-*.sqlite3*' EXIT

# About 130 bytes a usage row; the 100% scale is about 6 GB: refuse to start without 15 GB.
free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
((free_kb > 15 * 1024 * 1024)) || die "less than 15 GB free under $dir"

nice cargo build -q -p control --example growth
out="$dir/growth.log"
: >"$out"
for scale in "${scales[@]}"; do
  log "scale ${scale}%: generating and measuring"
  nice target/debug/examples/growth "$scale" "$dir" 2>/dev/null | tee -a "$out" | grep '^RESULT'
  rm -f "$dir"/growth-*.sqlite3*
done

echo
echo "| keys with traffic | usage rows (minute + hour) | activity rows | database | generated in | key list p99 | key 30-day usage p99 | account 30-day usage p99 | ingest | compaction pass |"
echo "|---|---|---|---|---|---|---|---|---|---|"
grep '^RESULT' "$out" | while read -r line; do
  declare -A r=()
  for kv in ${line#RESULT }; do r[${kv%%=*}]=${kv#*=}; done
  printf '| %s%% (%s of %s) | %s + %s | %s | %s MB | %s s | %s ms | %s ms | %s ms | %s counts/s | %s s, %s steps |\n' \
    "${r[scale]}" "${r[active_keys]}" "${r[keys]}" "${r[minute_rows]}" "${r[hour_rows]}" \
    "${r[activity_rows]}" "$((r[bytes] / 1000000))" "${r[generation_s]}" "${r[key_list_p99_ms]}" \
    "${r[key_usage_p99_ms]}" "${r[account_usage_p99_ms]}" "${r[ingest_counts_per_s]}" \
    "${r[compact_s]}" "${r[compact_steps]}"
done
echo
grep '^PLAN' "$out" | awk '!seen[$0]++'
