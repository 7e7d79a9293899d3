# Sourced by bench/throughput.sh and bench/latency.sh: serves two builds of the edge worker side
# by side under the `workerd` binary that the wrangler package ships (wrangler dev's proxy caps
# and delays a local run), each with its Durable Objects on local disk, in front of one bench
# origin, with a stand-in KV holding signed revocation shards and a stand-in control plane that
# acknowledges every usage batch.
#
#   workerd_pair <out dir> <name a> <name b>
#
# expects worker-build output (index.js, index_bg.wasm) in <out>/<name a> and <out>/<name b>, and
# sets: workerd (the binary's path), key (a development Full Access key), ports[<name>] (each worker's loopback port) and
# ingest_port. The caller defines die(); everything started here stops when the script exits.
# Both workers get the same bindings, with a rate limit no run reaches.

workerd="node_modules/@cloudflare/workerd-linux-64/bin/workerd"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The bindings of worker <name>, as workerd config.
_pair_bindings() {
  cat <<EOB
    bindings = [
      (name = "LYNXO_ENV", text = "development"),
      (name = "LYNXO_KEYRING", text = "active=1;1:$(printf '11%.0s' {1..32})"),
      (name = "ORIGIN_KEYRING", text = "active=3;3:$(printf '33%.0s' {1..32})"),
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

workerd_pair() {
  local out="$1" a="$2" b="$3"
  [[ -x "$workerd" ]] || die "workerd not found at $workerd: run scripts/bootstrap.sh"
  mkdir -p "$out/kv" "$out/do-$a" "$out/do-$b"

  cargo build --quiet --release -p e2e --bin bench_origin --bin bench_fixtures
  target/release/bench_fixtures "$out/kv"
  key="$(cat "$out/kv/key.txt")"

  target/release/bench_origin --port 0 >"$out/origin.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q listening "$out/origin.log" && break; sleep 0.1; done
  origin="$(sed -n 's/.*listening on //p' "$out/origin.log")"
  [[ -n "$origin" ]] || die "bench origin did not start"

  declare -gA ports
  ports[$a]="$(free_port)"
  ports[$b]="$(free_port)"
  ingest_port="$(free_port)"

  local shards="" n
  for n in $(seq 0 15); do
    shards+="      (name = \"S$n\", data = embed \"kv/shard-$n.bin\"),"$'\n'
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
    (name = "$a", worker = .workerA),
    (name = "$b", worker = .workerB),
    (name = "kv", worker = .kvWorker),
    (name = "ingest", worker = .ingestWorker),
    (name = "do-$a", disk = (path = "$out/do-$a", writable = true)),
    (name = "do-$b", disk = (path = "$out/do-$b", writable = true)),
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "$a", address = "127.0.0.1:${ports[$a]}", http = (), service = "$a"),
    (name = "$b", address = "127.0.0.1:${ports[$b]}", http = (), service = "$b"),
    (name = "ingest", address = "127.0.0.1:$ingest_port", http = (), service = "ingest"),
  ],
);

$(_pair_worker "$a" workerA)

$(_pair_worker "$b" workerB)

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

  "$workerd" serve --experimental "$out/config.capnp" >"$out/workerd.log" 2>&1 &
  pids+=($!)
  local port
  for port in "${ports[$a]}" "${ports[$b]}"; do
    for _ in $(seq 100); do
      curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
      sleep 0.1
    done
  done
}
