#!/usr/bin/env bash
# Runs Lynxo Keys locally, all on loopback: the control plane (admin API), the edge worker under
# workerd (wrangler dev) and a demo origin standing in for the Lynxo API, with a demo account
# and a demo key. Ctrl-C stops everything it started.
#
#   bash scripts/dev.sh
#
# Installs and builds what it needs first. Local state (secrets, database, KV) lives in .dev/
# (gitignored) and is reused, so the demo account and key survive restarts; delete .dev/ to
# start over. Ports: CONTROL_PORT (8080), EDGE_PORT (8787), ORIGIN_PORT (8788).
# NODE_ORIGIN=1 puts the Node example origin (examples/node-origin, checking identities with the
# @lynxo/keys package) behind the edge instead of the Rust demo origin.
#
#   bash scripts/dev.sh --postgres
#
# runs the control plane on PostgreSQL instead of SQLite (docs/postgres.md): a private server
# (initdb + pg_ctl, as the tests' harness starts one) on a free loopback port in a temporary
# directory, stopped and deleted on exit; the demo account and key are made afresh each run
# (kept in .dev/postgres/, apart from SQLite's).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONTROL_PORT="${CONTROL_PORT:-8080}"
EDGE_PORT="${EDGE_PORT:-8787}"
ORIGIN_PORT="${ORIGIN_PORT:-8788}"
DEV=.dev

POSTGRES=0
for arg in "$@"; do
  case "$arg" in
    --postgres) POSTGRES=1 ;;
    *) die "unknown option $arg (the one option is --postgres)" ;;
  esac
done

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
for port in "$CONTROL_PORT" "$EDGE_PORT" "$ORIGIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use"; fi
done

bash scripts/bootstrap.sh
log "building the worker, the control plane and the demo origin"
bash scripts/build-edge.sh
cargo build --quiet -p control --bin control -p e2e --bin demo_origin
bin="${CARGO_TARGET_DIR:-target}/debug"

# Secrets, made once: the key-signing keyring (shared by control plane and edge) and the
# identity keyring (shared by edge and origin).
mkdir -p "$DEV"
chmod 700 "$DEV"
[[ -s $DEV/keyring ]] || printf 'active=1;1:%s\n' "$(random_hex 32)" >"$DEV/keyring"
[[ -s $DEV/origin-keyring ]] || printf 'active=1;1:%s\n' "$(random_hex 32)" >"$DEV/origin-keyring"
# The control plane's own: keys its audit chain (never given to the edge).
[[ -s $DEV/audit-keyring ]] || printf 'active=1;1:%s\n' "$(random_hex 32)" >"$DEV/audit-keyring"
keyring="$(cat "$DEV/keyring")"
origin_keyring="$(cat "$DEV/origin-keyring")"
export LYNXO_AUDIT_KEYRING_FILE="$DEV/audit-keyring"

pids=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The database: SQLite's file in .dev/, or a private PostgreSQL server for this run.
state="$DEV"
db="$DEV/control.sqlite3"
if [[ $POSTGRES == 1 ]]; then
  pg_bin="$(dirname "$(command -v pg_ctl 2>/dev/null || true)")"
  [[ -x $pg_bin/pg_ctl ]] || pg_bin="$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
  [[ -x $pg_bin/initdb ]] || die "PostgreSQL's initdb/pg_ctl not found (bash scripts/bootstrap.sh installs them)"
  pg_dir="$(mktemp -d /tmp/lynxo-dev-pg-XXXXXX)"
  as_pg=()
  # initdb and pg_ctl refuse to run as root: then as the postgres user, which owns the directory.
  if [[ $(id -u) == 0 ]]; then
    chown postgres:postgres "$pg_dir"
    as_pg=(runuser -u postgres --)
  fi
  # shellcheck disable=SC2317  # invoked by the EXIT trap
  stop_postgres() {
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  }
  # shellcheck disable=SC2317  # invoked by the EXIT trap
  cleanup_all() { cleanup; stop_postgres; }
  trap cleanup_all EXIT
  "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U lynxo -E UTF8 --locale=C \
    --no-instructions >"$DEV/postgres.log" 2>&1 || die "initdb failed (see $DEV/postgres.log)"
  pg_port="$(free_port)"
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
    -o "-k '$pg_dir' -h 127.0.0.1 -p $pg_port" start >>"$DEV/postgres.log" 2>&1 ||
    die "PostgreSQL did not start (see $pg_dir/server.log)"
  db="postgres://lynxo@127.0.0.1:$pg_port/postgres"
  # A fresh server each run: a fresh demo account and key too.
  state="$DEV/postgres"
  rm -rf "$state"
  mkdir -p "$state"
fi

# Demo account, once: its management token and password are kept in .dev/ for later runs.
if [[ ! -s $state/management-token ]]; then
  [[ $POSTGRES == 1 ]] || rm -f "$db" "$db-wal" "$db-shm"
  password="$(random_hex 9)"
  out="$(LYNXO_KEYRING="$keyring" LYNXO_INIT_PASSWORD="$password" "$bin/control" init \
    --database "$db" --account-name "Demo account" --email demo@lynxo.local 2>/dev/null)"
  sed -n 's/^management_token=//p' <<<"$out" >"$state/management-token"
  printf '%s\n' "$password" >"$state/demo-password"
  [[ -s $state/management-token ]] || die "control init printed no management token"
fi
token="$(cat "$state/management-token")"

origin_name="demo origin"
if [[ ${NODE_ORIGIN:-} == 1 ]]; then
  origin_name="Node origin (example)"
  bash js/build.sh
  ORIGIN_KEYRING="$origin_keyring" setsid node examples/node-origin/server.mjs --port "$ORIGIN_PORT" \
    >"$DEV/origin.log" 2>&1 &
else
  ORIGIN_KEYRING="$origin_keyring" setsid "$bin/demo_origin" --port "$ORIGIN_PORT" \
    >"$DEV/origin.log" 2>&1 &
fi
pids+=($!)

WRANGLER_DISABLE_REQUEST_BODY_DRAINING=true setsid npx --no-install wrangler dev --env development --port "$EDGE_PORT" --ip 127.0.0.1 \
  --persist-to "$DEV/wrangler" \
  --var "LYNXO_KEYRING:$keyring" --var "ORIGIN_KEYRING:$origin_keyring" \
  --var "ORIGIN_URL:http://127.0.0.1:$ORIGIN_PORT" \
  --var "CONTROL_URL:http://127.0.0.1:$CONTROL_PORT" >"$DEV/edge.log" 2>&1 &
pids+=($!)

wait_for() { # url, name, log; wrangler dev reruns the (incremental) worker build first
  wait_for_url "$1" 600 0.5 && return 0
  tail -n 30 "$3" >&2
  die "$2 did not come up at $1"
}
wait_for "http://127.0.0.1:$EDGE_PORT/healthz" "edge worker" "$DEV/edge.log"

LYNXO_KEYRING="$keyring" setsid "$bin/control" serve --database "$db" \
  --listen "127.0.0.1:$CONTROL_PORT" --public-origin "http://127.0.0.1:$CONTROL_PORT" \
  --edge-sync-url "http://127.0.0.1:$EDGE_PORT" >"$DEV/control.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$CONTROL_PORT/readyz" "control plane" "$DEV/control.log"

api() { curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
# A demo key, once (shown once by the API, so kept in .dev/ for later runs).
if [[ ! -s $state/demo-key ]]; then
  api -X POST "http://127.0.0.1:$CONTROL_PORT/v1/keys" \
    -d '{"name":"Demo key","environment":"development","permission":"read_write","description":"Made by scripts/dev.sh"}' |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const k=JSON.parse(s);console.log(k.key+" "+k.id)})' >"$state/demo-key"
fi
read -r key key_id <"$state/demo-key"

# The edge fails closed until the control plane has published the revocation shards.
for _ in $(seq 1 60); do
  status="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:$EDGE_PORT/v1/jobs")"
  [[ $status == 200 ]] && break
  sleep 0.5
done
[[ $status == 200 ]] || log "warning: the demo key got $status from the edge (see $DEV/edge.log)"

cat <<INFO

  Lynxo Keys is running locally.

  control plane (admin API) : http://127.0.0.1:$CONTROL_PORT   (OpenAPI: /openapi.json)
  edge (the Lynxo API)      : http://127.0.0.1:$EDGE_PORT
  $(printf '%-26s' "$origin_name"): http://127.0.0.1:$ORIGIN_PORT   (reached only through the edge)
  dashboard                 : http://127.0.0.1:$CONTROL_PORT/   (sign in with the demo account)

  database      : $(if [[ $POSTGRES == 1 ]]; then echo "PostgreSQL, $db (this run only)"; else echo "SQLite, $db"; fi)
  demo account  : demo@lynxo.local / $(cat "$state/demo-password")
  management token (admin API):
    $token

  Call the API through the edge with the demo key:
    curl -X GET "http://127.0.0.1:$EDGE_PORT/v1/jobs" -H "Authorization: Bearer $key"

  Usage of the demo key (arrives within a couple of seconds):
    curl "http://127.0.0.1:$CONTROL_PORT/v1/keys/$key_id/usage" -H "Authorization: Bearer $token"

  Create another key:
    curl -X POST "http://127.0.0.1:$CONTROL_PORT/v1/keys" -H "Authorization: Bearer $token" \\
      -H "Content-Type: application/json" -d '{"name":"My key","environment":"development","permission":"read_only"}'

  Logs: $DEV/*.log. Ctrl-C stops everything.
INFO
wait -n "${pids[@]}" || true
die "a service stopped; see $DEV/*.log"
