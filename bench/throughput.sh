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
workerd="node_modules/@cloudflare/workerd-linux-64/bin/workerd"
die() { printf 'throughput: error: %s\n' "$*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found (apt-get install wrk)"
[[ -x "$workerd" ]] || die "workerd not found at $workerd: run scripts/bootstrap.sh"

rm -rf "$out"
mkdir -p "$out/auth" "$out/no-auth" "$out/kv" "$out/do-auth" "$out/do-no-auth"

# The two builds. worker-build writes relative to the crate; move the baseline out of edge/.
bash scripts/build-edge.sh
cp edge/build/index.js edge/build/index_bg.wasm "$out/auth/"
(cd edge && worker-build --release --out-dir build-bench-no-auth --features bench-no-auth >/dev/null)
cp edge/build-bench-no-auth/index.js edge/build-bench-no-auth/index_bg.wasm "$out/no-auth/"
rm -rf edge/build-bench-no-auth
printf 'throughput: auth wasm %d bytes gzip, no-auth wasm %d bytes gzip\n' \
  "$(gzip -9 -c "$out/auth/index_bg.wasm" | wc -c)" "$(gzip -9 -c "$out/no-auth/index_bg.wasm" | wc -c)"

cargo build --quiet --release -p e2e --bin bench_origin --bin bench_fixtures
target/release/bench_fixtures "$out/kv"
key="$(cat "$out/kv/key.txt")"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

target/release/bench_origin --port 0 >"$out/origin.log" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$out/origin.log" && break; sleep 0.1; done
origin="$(sed -n 's/.*listening on //p' "$out/origin.log")"
[[ -n "$origin" ]] || die "bench origin did not start"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
auth_port="$(free_port)"
noauth_port="$(free_port)"
ingest_port="$(free_port)"
keyring="active=1;1:$(printf '11%.0s' {1..32})"
origin_keyring="active=3;3:$(printf '33%.0s' {1..32})"

bindings() { # the worker's name, for its Durable Object storage
  cat <<EOB
    bindings = [
      (name = "LYNXO_ENV", text = "development"),
      (name = "LYNXO_KEYRING", text = "$keyring"),
      (name = "ORIGIN_KEYRING", text = "$origin_keyring"),
      (name = "ORIGIN_URL", text = "$origin"),
      (name = "REVOCATION_SHARDS", text = "16"),
      (name = "REVOCATION_CACHE_MS", text = "2000"),
      (name = "CONTROL_URL", text = "http://127.0.0.1:$ingest_port"),
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

shard_bindings=""
for n in $(seq 0 15); do
  shard_bindings+="      (name = \"S$n\", data = embed \"kv/shard-$n.bin\"),"$'\n'
done

cat >"$out/kv.js" <<'EOJ'
// Stand-in for Workers KV: serves revocations/v1/<n> from data bindings S<n>, as workerd's KV
// binding asks for it (GET /<url-encoded key>).
export default {
  async fetch(request, env) {
    const key = decodeURIComponent(new URL(request.url).pathname.slice(1));
    const match = /^revocations\/v1\/(\d+)$/.exec(key);
    const value = match && env["S" + match[1]];
    return value ? new Response(value) : new Response(null, { status: 404 });
  },
};
EOJ

cat >"$out/ingest.js" <<'EOJ'
// Stand-in for the control plane's usage ingestion: reads each batch and acknowledges it.
export default {
  async fetch(request) {
    await request.arrayBuffer();
    return Response.json({ applied: true });
  },
};
EOJ

cat >"$out/config.capnp" <<EOC
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "auth", worker = .authWorker),
    (name = "no-auth", worker = .noAuthWorker),
    (name = "kv", worker = .kvWorker),
    (name = "ingest", worker = .ingestWorker),
    (name = "do-auth", disk = (path = "$out/do-auth", writable = true)),
    (name = "do-no-auth", disk = (path = "$out/do-no-auth", writable = true)),
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "auth", address = "127.0.0.1:$auth_port", http = (), service = "auth"),
    (name = "no-auth", address = "127.0.0.1:$noauth_port", http = (), service = "no-auth"),
    (name = "ingest", address = "127.0.0.1:$ingest_port", http = (), service = "ingest"),
  ],
);

const authWorker :Workerd.Worker = (
  modules = [
    (name = "index.js", esModule = embed "auth/index.js"),
    (name = "index_bg.wasm", wasm = embed "auth/index_bg.wasm"),
  ],
  compatibilityDate = "2026-04-01",
$(bindings auth)
  globalOutbound = "internet",
);

const noAuthWorker :Workerd.Worker = (
  modules = [
    (name = "index.js", esModule = embed "no-auth/index.js"),
    (name = "index_bg.wasm", wasm = embed "no-auth/index_bg.wasm"),
  ],
  compatibilityDate = "2026-04-01",
$(bindings no-auth)
  globalOutbound = "internet",
);

const kvWorker :Workerd.Worker = (
  modules = [(name = "kv.js", esModule = embed "kv.js")],
  compatibilityDate = "2026-04-01",
  bindings = [
$shard_bindings  ],
);

const ingestWorker :Workerd.Worker = (
  modules = [(name = "ingest.js", esModule = embed "ingest.js")],
  compatibilityDate = "2026-04-01",
);
EOC

"$workerd" serve --experimental "$out/config.capnp" >"$out/workerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$auth_port/healthz" && break
  sleep 0.1
done

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
