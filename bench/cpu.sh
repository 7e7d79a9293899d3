#!/usr/bin/env bash
# CPU time per request of the edge worker (issue 16): what authentication costs the runtime,
# measured less noisily than throughput on a shared machine.
#
#   auth:      the release worker (key verify + revocation + scope + rate limit + usage metering
#              + signed identity), as scripts/build-edge.sh builds it;
#   no-fields: the `bench-no-rate-fields` feature (all of it but the RateLimit fields on the
#              origin's response, which the runtime makes us rebuild: that stage alone);
#   no-limits: the same worker with the `bench-no-limits` feature (no rate limit, no metering);
#   no-auth:   the `bench-no-auth` feature (forwards with a signed identity, checks no key).
#
# Every build gets the same requests, the key's Authorization header included (the bare proxy
# ignores it, as it would in front of the same clients).
#
# All of them are served by one `workerd` process (bench/lib.sh workerd_workers), in front of one
# trivial origin (a separate process, not counted). Each round sends every build the same fixed
# number of requests with wrk on loopback (one thread, stopped by a Lua script at the count),
# in an order that rotates every round; the cost of a run is the CPU (user + system, from
# /proc/<workerd pid>/stat, its children included) workerd spent from the run's start until 1.5 s
# after its end (so a meter flush or a lease refill the run caused counts against it, not the
# next run), divided by the requests wrk saw answered. Medians over the rounds; the throughput of
# the same runs beside it.
#
#   bash bench/cpu.sh [requests per run, default 20000] [rounds, default 7] [connections, default 16]
#
# CPU_BUILDS="auth no-auth" limits the builds measured (default "auth no-fields no-limits no-auth"); an
# entry <name>=<dir> adds a build made earlier (worker-build output in <dir>), e.g. the worker of
# another commit: `CPU_BUILDS="auth before=/tmp/before/auth no-auth"`. The last is the baseline.
#
#   bash bench/cpu.sh profile [requests per build, default 20000]
#
# instead profiles each build once through workerd's DevTools inspector (bench/cpu-profile.mjs):
# the isolate's time per request by stage of the request path. The inspector slows the isolate,
# so its totals are not the benchmark's; its shares say where the time goes.
#
#   bash bench/cpu.sh count [requests per run, default 3000] [rounds, default 3] [connections, default 8]
#
# instead counts instructions: workerd runs under valgrind's callgrind (Debian: apt-get install
# valgrind), and each run's cost is the user-space instructions of the whole process (all its
# threads) from the run's start until 3 s after its end, divided by the requests answered.
# Unlike CPU time, this does not move with the load of a shared machine, so a difference of a
# few percent shows in one run. Under valgrind workerd serves about 50 requests a second instead
# of thousands, so whatever the worker does per second rather than per request (the meter's
# flush once a second and the meter object's batches, activity entries kept per flush) weighs
# about a hundred times more per request than at full speed: compare stages whose work is per
# request, and measure the timed work with the CPU benchmark. Warm-up COUNT_WARMUP seconds
# (default 45) per build first: the JIT's tier-up is slow under valgrind, and the first rounds
# still fall as it ends, so compare builds within a round. Writes <build>-<round>.callgrind
# (callgrind_annotate reads them: workerd's own functions are named, the JIT's code is not).
# Needs scripts/bootstrap.sh and wrk (Debian: apt-get install wrk). Writes bench/out/cpu/.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need wrk "Debian: apt-get install wrk"

profile=false
count=false
if [[ "${1:-}" == profile ]]; then
  profile=true
  shift
elif [[ "${1:-}" == count ]]; then
  count=true
  shift
  need valgrind "Debian: apt-get install valgrind"
fi
if $count; then
  requests="${1:-3000}"
  rounds="${2:-3}"
  connections="${3:-8}"
  settle=3
  export WORKERD_WRAP="valgrind --tool=callgrind --smc-check=all-non-file --dump-instr=no --callgrind-out-file=$LYNXO_ROOT/bench/out/cpu/callgrind.out"
else
  requests="${1:-20000}"
  rounds="${2:-7}"
  connections="${3:-16}"
  settle=1.5
fi
threads=1
read -r -a builds <<<"${CPU_BUILDS:-auth no-fields no-limits no-auth}"
out="$LYNXO_ROOT/bench/out/cpu"
hz="$(getconf CLK_TCK)"

features_of() { # build
  case "$1" in
    auth) echo "" ;;
    no-limits) echo bench-no-limits ;;
    no-fields) echo bench-no-rate-fields ;;
    no-auth) echo bench-no-auth ;;
    *) die "unknown build $1 (auth, no-fields, no-limits, no-auth)" ;;
  esac
}

# A profile names the functions of each stage, so its builds keep the wasm's name section.
if $profile; then
  export EDGE_KEEP_NAMES=1
fi
rm -rf "$out"
for i in "${!builds[@]}"; do
  build="${builds[$i]}"
  if [[ "$build" == *=* ]]; then
    builds[i]="${build%%=*}"
    mkdir -p "$out/${builds[$i]}"
    cp "${build#*=}/index.js" "${build#*=}/index_bg.wasm" "$out/${builds[$i]}/"
    build="${builds[$i]}"
  else
    build_worker "$(features_of "$build")" "$out/$build"
  fi
  printf 'cpu: %s wasm %d bytes gzip -9\n' "$build" "$(gzip -9 -c "$out/$build/index_bg.wasm" | wc -c)"
done

if $profile; then
  WORKERD_INSPECTOR="127.0.0.1:$(free_port)"
  export WORKERD_INSPECTOR
fi
workerd_workers "$out" "${builds[@]}"
if $count; then
  # valgrind takes a minute or more to start workerd.
  for build in "${builds[@]}"; do
    wait_for_url "http://127.0.0.1:${ports[$build]}/healthz" 600 0.5 "$workerd_pid" ||
      { cat "$out/workerd.log"; die "workerd did not start under valgrind"; }
  done
fi

# wrk stops after the run's requests: its one thread stops at the count, then wrk's main thread
# (which otherwise sleeps out the duration, only a bound here) is interrupted and reports. The
# interrupt waits 50 ms for the thread to have exited (while it lives, the signal may land on it
# instead), and repeats until wrk is gone; those 50 ms count in the run's time (under 1% of a
# run of the default size), the same for every build.
cat >"$out/stop.lua" <<EOF
local left = $requests
local wrk_pid = io.open("/proc/self/stat"):read("*n")
function response()
  left = left - 1
  if left == 0 then
    wrk.thread:stop()
    os.execute("(for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.05; kill -INT " .. wrk_pid .. " 2>/dev/null || exit 0; done) &")
  end
end
EOF

# Every build gets the same request, the key included: the bare proxy receives the header as
# any client sends it (parsing and copying it is the proxy's cost too, about 2.5 us, 1.7%, at
# 2026-12-03 06:20), and ignores it.
auth=(-H "Authorization: Bearer $key")

for build in "${builds[@]}"; do
  got="$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "http://127.0.0.1:${ports[$build]}/v1/jobs")"
  [[ "$got" == 200 ]] || { cat "$out/workerd.log"; die "$build worker answered $got"; }
  # Warm-up, not counted: the isolate's JIT, its leases, its revocation shard.
  wrk -t"$threads" -c"$connections" -d"$($count && echo "${COUNT_WARMUP:-45}" || echo 3)s" "${auth[@]}" \
    "http://127.0.0.1:${ports[$build]}/v1/jobs" >/dev/null
done
sleep "$settle"

if $profile; then
  for build in "${builds[@]}"; do
    node bench/cpu-profile.mjs "$WORKERD_INSPECTOR" "$build" "$requests" "$out/$build.cpuprofile" -- \
      wrk -t"$threads" -c"$connections" -d60s -s "$out/stop.lua" "${auth[@]}" \
      "http://127.0.0.1:${ports[$build]}/v1/jobs"
  done
  exit 0
fi

# Calls <run> <build> <round> for every build of every round. The order rotates every round, so
# no build always runs first on a warming machine.
every_round() { # run
  local round i n=${#builds[@]}
  for round in $(seq "$rounds"); do
    for i in $(seq 0 $((n - 1))); do
      "$1" "${builds[$(((i + round) % n))]}" "$round"
    done
  done
}

# One counted run: callgrind's counters zeroed at its start, dumped after it has settled.
count_run() { # build round
  local build="$1" name="$1-$2" served dump
  callgrind_control --zero "$workerd_pid" >/dev/null 2>&1
  wrk -t"$threads" -c"$connections" -d600s -s "$out/stop.lua" "${auth[@]}" \
    "http://127.0.0.1:${ports[$build]}/v1/jobs" >"$out/$name.wrk"
  sleep "$settle"
  callgrind_control --dump="$name" "$workerd_pid" >/dev/null 2>&1
  for _ in $(seq 50); do
    dump="$(grep -l "^desc: Trigger: dump $name\$" "$out"/callgrind.out.* 2>/dev/null | head -1 || true)"
    [[ -z "$dump" ]] || break
    sleep 0.2
  done
  [[ -n "$dump" ]] || die "$name: callgrind wrote no dump"
  mv "$dump" "$out/$name.callgrind"
  served="$(awk '/requests in/ { print $1 }' "$out/$name.wrk")"
  [[ -z "$(awk '/Non-2xx/ { print $NF }' "$out/$name.wrk")" ]] || die "$name: answers that were not 2xx"
  awk -v n="$served" -v name="$name" '/^(summary|totals):/ && !done {
    printf "%-14s %6d requests  %10.0f instructions/request\n", name, n, $2 / n
    printf "%.0f\n", $2 / n > ("'"$out"'/" name ".instr")
    done = 1
  }' "$out/$name.callgrind"
}

if $count; then
  printf 'cpu: counting instructions under callgrind: %s rounds of %s requests per build; wrk -t%s -c%s\n' \
    "$rounds" "$requests" "$threads" "$connections"
  every_round count_run
  base="${builds[-1]}"
  printf 'instructions per request, %s as the baseline, by round:\n' "$base"
  for build in "${builds[@]}"; do
    line="$(printf '  %-10s' "$build")"
    for round in $(seq "$rounds"); do
      line+="$(awk -v a="$(cat "$out/$build-$round.instr")" -v b="$(cat "$out/$base-$round.instr")" \
        'BEGIN { printf "  %8.0f (%+6.0f, %5.1f%%)", a, a - b, 100 * a / b }')"
    done
    echo "$line"
  done
  exit 0
fi

run() { # build round
  local build="$1" name="$1-$2" before after served seconds non2xx
  before="$(cpu_ticks "$workerd_pid")"
  wrk -t"$threads" -c"$connections" -d60s -s "$out/stop.lua" "${auth[@]}" \
    "http://127.0.0.1:${ports[$build]}/v1/jobs" >"$out/$name.wrk"
  sleep "$settle"
  after="$(cpu_ticks "$workerd_pid")"
  served="$(awk '/requests in/ { print $1 }' "$out/$name.wrk")"
  seconds="$(awk '/requests in/ {
    t = $4; sub(/,$/, "", t); n = t + 0
    if (t ~ /ms$/) n /= 1000; else if (t ~ /m$/) n *= 60; else if (t ~ /h$/) n *= 3600
    print n
  }' "$out/$name.wrk")"
  non2xx="$(awk '/Non-2xx/ { print $NF }' "$out/$name.wrk")"
  [[ -z "$non2xx" ]] || die "$name: $non2xx answers were not 2xx"
  awk -v t=$((after - before)) -v hz="$hz" -v n="$served" -v s="$seconds" -v name="$name" 'BEGIN {
    us = t / hz * 1e6 / n
    printf "%-14s %6d requests  %8.1f us CPU/request  %7.0f req/s\n", name, n, us, n / s
    printf "%.2f\n", us > ("'"$out"'/" name ".us")
    printf "%.1f\n", n / s > ("'"$out"'/" name ".rps")
  }'
}

printf 'cpu: %s rounds of %s requests per build, order rotated every round; wrk -t%s -c%s; %s ticks/s; workerd %s\n' \
  "$rounds" "$requests" "$threads" "$connections" "$hz" "$("$workerd" --version 2>/dev/null | head -1)"
every_round run

# Medians over the rounds: the machine is shared, single runs are noisy.
declare -A us rps
for build in "${builds[@]}"; do
  us[$build]="$(cat "$out/$build"-*.us | median)"
  rps[$build]="$(cat "$out/$build"-*.rps | median)"
done
base="${builds[-1]}"
printf 'median CPU per request (throughput), %s as the baseline:\n' "$base"
for build in "${builds[@]}"; do
  awk -v name="$build" -v u="${us[$build]}" -v b="${us[$base]}" -v r="${rps[$build]}" -v rb="${rps[$base]}" 'BEGIN {
    printf "  %-10s %8.1f us  %+7.1f us  %6.1f%% of the baseline CPU   %7.0f req/s  %6.1f%% of the baseline throughput\n", name, u, u - b, 100 * u / b, r, 100 * r / rb
  }'
done
