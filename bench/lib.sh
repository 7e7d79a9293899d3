# shellcheck shell=bash
# Helpers every benchmark script shares: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"` from
# bench/. Sources scripts/lib.sh (tools on PATH, the repository's root as working directory,
# log/die/free_port/wait_for_url) and adds:
#
#   build_worker <features> <dir>    the release worker, built as scripts/build-edge.sh builds it
#                                    (features "" for the normal build), its index.js and
#                                    index_bg.wasm copied into <dir>
#   alternating <round> <a> <b>      prints "a b" on odd rounds and "b a" on even ones (ABBA...),
#                                    so neither side always runs first on a warming machine
#   wrk_run <file> <url> <threads> <connections> <seconds> [wrk args]
#                                    a 2 s warm-up, then the measured run into <file>; sets
#                                    rps, p50, p99 and non2xx from wrk's report
#   median                           the median of the numbers on stdin, one per line
#   to_us <wrk time>                 812.00us, 1.23ms or 1.02s in microseconds
#   workerd_pair <out> <a> <b>       two worker builds side by side under workerd (below)
#   workerd_workers <out> <names...> the same for any number of builds
#   cpu_ticks <pid>                  user + system clock ticks of a process and its children
#   e2e_bench <test> <pattern> [test args]
#                                    an ignored measurement test of tests/ (below)
#
# Everything started here stops when the script exits.

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

build_worker() { # features dir
  local features="$1" dir="$2" build=build
  mkdir -p "$dir"
  if [[ -n "$features" ]]; then
    build="build-${features//,/-}"
    EDGE_FEATURES="$features" EDGE_OUT_DIR="$build" bash scripts/build-edge.sh
  else
    bash scripts/build-edge.sh
  fi
  cp "edge/$build/index.js" "edge/$build/index_bg.wasm" "$dir/"
  # A feature build lives beside the normal one only while it is copied out.
  [[ "$build" == build ]] || rm -rf "edge/$build"
}

alternating() { # round a b
  if (($1 % 2)); then echo "$2 $3"; else echo "$3 $2"; fi
}

# shellcheck disable=SC2034  # rps, p50, p99 and non2xx are the caller's
wrk_run() { # file url threads connections seconds [wrk args...]
  local file="$1" url="$2" threads="$3" connections="$4" seconds="$5"
  shift 5
  need wrk "Debian: apt-get install wrk"
  wrk -t"$threads" -c"$connections" -d2s "$@" "$url" >/dev/null
  wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency "$@" "$url" >"$file"
  rps="$(awk '/^Requests\/sec/ { print $2 }' "$file")"
  p50="$(awk '$1 == "50%" { print $2 }' "$file")"
  p99="$(awk '$1 == "99%" { print $2 }' "$file")"
  non2xx="$(awk '/Non-2xx/ { print $NF }' "$file")"
  non2xx="${non2xx:-0}"
}

median() {
  sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

to_us() { # wrk prints 812.00us, 1.23ms or 1.02s
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else print n * 1000000
  }'
}

# --- e2e_bench -------------------------------------------------------------------------------
# Builds the worker and the control plane, runs the ignored end-to-end measurement <test> of
# tests/tests/ (one test at a time, [test args] name which), prints only its report lines (those
# matching <pattern>) and any failure, and fails if the test failed.
e2e_bench() { # test pattern [test args...]
  local test="$1" pattern="$2" log rc=0
  shift 2
  bash scripts/build-edge.sh
  cargo build --quiet -p control --bin control
  log="$(mktemp)"
  cargo test --quiet -p e2e --test "$test" -- "$@" --ignored --nocapture --test-threads=1 \
    >"$log" 2>&1 || rc=$?
  grep -oE "$pattern|panicked.*|FAILED.*|error.*" "$log" || true
  rm -f "$log"
  return "$rc"
}

# --- workerd_pair ------------------------------------------------------------------------------
# Serves two builds of the edge worker side by side under the `workerd` binary that the wrangler
# package ships (wrangler dev's proxy caps and delays a local run), each with its Durable Objects
# on local disk, in front of one bench origin, with a stand-in KV holding signed revocation
# shards and a stand-in control plane that acknowledges every usage batch.
#
#   workerd_pair <out dir> <name a> <name b>
#
# expects worker-build output (index.js, index_bg.wasm) in <out>/<name a> and <out>/<name b>,
# and sets: workerd (the binary's path), workerd_pid (its process), key (a development Full Access key), keyring and
# origin_keyring (the test keyrings, from bench_fixtures), ports[<name>]
# (each worker's loopback port) and ingest_port. Both workers get the same bindings, with a rate
# limit no run reaches. `workerd_workers <out> <name>...` serves any number of builds the same
# way (workerd_pair is it with two). WORKERD_INSPECTOR=<host:port> starts workerd with its
# DevTools inspector there (bench/cpu-profile.mjs reads a CPU profile through it).
# WORKERD_WRAP=<command> starts workerd under it (`bench/cpu.sh count`: valgrind's callgrind).

workerd="node_modules/@cloudflare/workerd-linux-64/bin/workerd"
_pair_pids=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
_pair_stop() {
  local pid
  for pid in "${_pair_pids[@]}"; do stop_process "$pid"; done
}

# The bindings of worker <name>, as workerd config.
_pair_bindings() {
  cat <<EOB
    bindings = [
      (name = "LYNXO_ENV", text = "development"),
      (name = "LYNXO_KEYRING", text = "$keyring"),
      (name = "ORIGIN_KEYRING", text = "$origin_keyring"),
      (name = "ORIGIN_URL", text = "$origin"),
      (name = "REVOCATION_SHARDS", text = "16"),
      (name = "REVOCATION_CACHE_MS", text = "2000"),
      (name = "CONTROL_URL", text = "http://127.0.0.1:$ingest_port"),
      (name = "METER_SHARDS", text = "4"),
      (name = "RATE_LIMIT_DEFAULT", text = "1000000000/60"),
      (name = "REVOCATIONS", kvNamespace = (name = "kv")),
      (name = "RATE_LIMITER", durableObjectNamespace = "KeyLimiter"),
      (name = "METER", durableObjectNamespace = "UsageMeter"),
    ],
    durableObjectNamespaces = [
      (className = "KeyLimiter", uniqueKey = "lynxo-bench-key-limiter-$1", enableSql = true),
      (className = "UsageMeter", uniqueKey = "lynxo-bench-usage-meter-$1", enableSql = true),
    ],
    durableObjectStorage = (localDisk = "do-$1"),
EOB
}

# The worker <name> (const <const>) serving the build in <out>/<name>.
_pair_worker() {
  cat <<EOW
const $2 :Workerd.Worker = (
  modules = [
    (name = "index.js", esModule = embed "$1/index.js"),
    (name = "index_bg.wasm", wasm = embed "$1/index_bg.wasm"),
  ],
  compatibilityDate = "2026-04-01",
$(_pair_bindings "$1")
  globalOutbound = "internet",
);
EOW
}

workerd_pair() { # out a b
  workerd_workers "$@"
}

workerd_workers() { # out name...
  local out="$1" name
  shift
  [[ -x "$workerd" ]] || die "workerd not found at $workerd: run scripts/bootstrap.sh"
  trap _pair_stop EXIT
  mkdir -p "$out/kv"
  for name in "$@"; do mkdir -p "$out/do-$name"; done

  cargo build --quiet --release -p e2e --bin bench_origin --bin bench_fixtures
  target/release/bench_fixtures "$out/kv"
  # shellcheck disable=SC2034  # for the caller
  key="$(cat "$out/kv/key.txt")"
  keyring="$(cat "$out/kv/keyring.txt")"
  origin_keyring="$(cat "$out/kv/origin-keyring.txt")"

  target/release/bench_origin --port 0 >"$out/origin.log" &
  _pair_pids+=($!)
  for _ in $(seq 100); do grep -q listening "$out/origin.log" && break; sleep 0.1; done
  origin="$(sed -n 's/.*listening on //p' "$out/origin.log")"
  [[ -n "$origin" ]] || die "bench origin did not start"

  declare -gA ports
  for name in "$@"; do ports[$name]="$(free_port)"; done
  ingest_port="$(free_port)"

  local shards="" n
  for n in $(seq 0 15); do
    shards+="      (name = \"S$n\", data = embed \"kv/shard-$n.bin\"),"$'\n'
  done

  # The stand-ins for KV and the control plane's ingestion, beside the config that embeds them.
  cp bench/workerd/kv.js bench/workerd/ingest.js "$out/"

  local services="" sockets="" workers="" n=0
  for name in "$@"; do
    n=$((n + 1))
    services+="    (name = \"$name\", worker = .worker$n),"$'\n'
    services+="    (name = \"do-$name\", disk = (path = \"$out/do-$name\", writable = true)),"$'\n'
    sockets+="    (name = \"$name\", address = \"127.0.0.1:${ports[$name]}\", http = (), service = \"$name\"),"$'\n'
    workers+="$(_pair_worker "$name" "worker$n")"$'\n\n'
  done

  cat >"$out/config.capnp" <<EOC
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
$services    (name = "kv", worker = .kvWorker),
    (name = "ingest", worker = .ingestWorker),
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
$sockets    (name = "ingest", address = "127.0.0.1:$ingest_port", http = (), service = "ingest"),
  ],
);

$workers
const kvWorker :Workerd.Worker = (
  modules = [(name = "kv.js", esModule = embed "kv.js")],
  compatibilityDate = "2026-04-01",
  bindings = [
$shards  ],
);

const ingestWorker :Workerd.Worker = (
  modules = [(name = "ingest.js", esModule = embed "ingest.js")],
  compatibilityDate = "2026-04-01",
);
EOC

  local inspector=()
  [[ -z "${WORKERD_INSPECTOR:-}" ]] || inspector=(--inspector-addr="$WORKERD_INSPECTOR")
  local wrap=()
  [[ -z "${WORKERD_WRAP:-}" ]] || read -r -a wrap <<<"$WORKERD_WRAP"
  "${wrap[@]}" "$workerd" serve --experimental "${inspector[@]}" "$out/config.capnp" >"$out/workerd.log" 2>&1 &
  # shellcheck disable=SC2034  # for the caller
  workerd_pid=$!
  _pair_pids+=($!)
  for name in "$@"; do
    wait_for_url "http://127.0.0.1:${ports[$name]}/healthz" || true
  done
}

# User + system CPU of process <pid> and of its children (living, and those it waited for), in
# clock ticks (getconf CLK_TCK per second), from /proc/<pid>/stat: fields 14 to 17.
cpu_ticks() { # pid
  local pid="$1" total=0 child
  total=$(_stat_ticks "$pid")
  # shellcheck disable=SC2013  # the file holds pids separated by spaces
  for child in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
    total=$((total + $(cpu_ticks "$child")))
  done
  echo "$total"
}

_stat_ticks() { # pid
  # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
  sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }' || echo 0
}
