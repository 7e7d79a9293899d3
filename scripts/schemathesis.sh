#!/usr/bin/env bash
# Property-based API test of the control plane against its own OpenAPI document (schemathesis).
#
#   bash scripts/schemathesis.sh
#
# 1. Installs schemathesis and its dependencies, each at the version pinned in
#    scripts/schemathesis/requirements.txt, from PyPI into a virtualenv outside the work tree,
#    ${XDG_CACHE_HOME:-~/.cache}/lynxo-keys/venv; skipped when that exact set is already there.
# 2. Builds `control` (release: argon2 sign-ins are too slow unoptimised), makes a fresh database
#    in a temp dir, `control init` for a management token, `control serve` on a free loopback
#    port with no publisher (revocations stay in memory), waits for /readyz.
# 3. Runs every schemathesis phase (examples, coverage, fuzzing, stateful) with every check
#    (`-c all`: 5xx, status code, content type, response headers and body against the schema,
#    positive/negative data, missing headers, ignored auth, use after free...) with a fixed seed
#    and a bounded number of examples, and the hooks of scripts/schemathesis/hooks.py; any
#    finding fails the script.
# 4. Stops the service and removes the temp dir whatever happens (trap on EXIT).
#
# Environment: SCHEMATHESIS_EXAMPLES (examples per operation, default 100), SCHEMATHESIS_SEED
# (default 20261128), LYNXO_VENV (the virtualenv). Extra arguments go to `schemathesis run`.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

examples="${SCHEMATHESIS_EXAMPLES:-100}"
seed="${SCHEMATHESIS_SEED:-20261128}"
venv="${LYNXO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lynxo-keys/venv}"

# --- 1. schemathesis -------------------------------------------------------------------------
# The exact set in scripts/schemathesis/requirements.txt (its comment says why every dependency
# is pinned); the stamp is that set without comments, so editing a comment reinstalls nothing.
requirements_file="$LYNXO_ROOT/scripts/schemathesis/requirements.txt"
requirements="$(grep -v '^#' "$requirements_file")"
SCHEMATHESIS_VERSION="$(sed -n 's/^schemathesis==//p' "$requirements_file")"
stamp="$venv/.lynxo-requirements"
step "schemathesis $SCHEMATHESIS_VERSION in $venv"
mkdir -p "$(dirname "$venv")"
(
  # Two runs at once must not install into the same virtualenv together.
  flock 9
  if [[ -x "$venv/bin/schemathesis" && -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$requirements" ]]; then
    echo "already installed"
  else
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      -r "$requirements_file"
    "$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null
    printf '%s' "$requirements" >"$stamp"
  fi
) 9>"$(dirname "$venv")/venv.lock"
"$venv/bin/schemathesis" --version

# --- 2. the service --------------------------------------------------------------------------
step "cargo build -p control --release"
cargo build -p control --release --quiet
bin="$LYNXO_ROOT/target/release/control"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/lynxo-schemathesis.XXXXXX")"
pid=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  [[ -z "$pid" ]] || stop_process "$pid"
  if ((rc != 0)) && [[ -f "$tmp/serve.log" ]]; then
    echo "--- last lines of the service's log ---" >&2
    tail -n 40 "$tmp/serve.log" >&2
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "fresh database, init, serve"
LYNXO_KEYRING="$("$bin" generate-keyring)"
LYNXO_AUDIT_KEYRING="$("$bin" generate-keyring)"
# The verify endpoint's budget is not what is tested here: schemathesis calls it thousands of
# times.
LYNXO_VERIFY_RATE_LIMIT=1000000
export LYNXO_KEYRING LYNXO_AUDIT_KEYRING LYNXO_VERIFY_RATE_LIMIT
token="$(LYNXO_INIT_PASSWORD='schemathesis-run-password' \
  "$bin" init --database "$tmp/control.sqlite3" --email schemathesis@example.com 2>/dev/null |
  sed -n 's/^management_token=//p')"
[[ "$token" == lnxm_* ]] || die "init printed no management token"

port="$(free_port)"
base="http://127.0.0.1:$port"
# No --edge-sync-url / --kv-*: --no-publish, the publisher keeps shards in memory (it logs a warning).
RUST_LOG=warn "$bin" serve --database "$tmp/control.sqlite3" --listen "127.0.0.1:$port" \
  --public-origin "$base" --no-publish >"$tmp/serve.log" 2>&1 &
pid=$!
wait_for_url "$base/readyz" 100 0.1 "$pid" || die "control serve not ready on $base"
echo "control serve pid $pid on $base"

# --- 3. schemathesis -------------------------------------------------------------------------
# The hooks (scripts/schemathesis/hooks.py) drop exactly the rejections of schema-valid requests
# that no JSON Schema can prevent (rules across fields, requests or the clock); its docstring
# lists them. Every other check, every other 422 and every other operation keep the defaults.

step "schemathesis run ($examples examples per operation, seed $seed)"
# Run from the temp dir so nothing (hypothesis' example database, reports) lands in the tree.
st_start=$SECONDS
set +e
(
  cd "$tmp"
  SCHEMATHESIS_HOOKS="$LYNXO_ROOT/scripts/schemathesis/hooks.py" "$venv/bin/schemathesis" run "$base/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --max-examples "$examples" \
    --seed "$seed" \
    --generation-database none \
    --workers 1 \
    --request-timeout 10 \
    --no-color \
    "$@"
)
st_rc=$?
set -e
st_secs=$((SECONDS - st_start))

kill -0 "$pid" 2>/dev/null || { echo "control serve died during the run" >&2; st_rc=1; }
if grep -q 'panicked' "$tmp/serve.log"; then
  echo "control serve logged a panic:" >&2
  grep -m5 -A3 'panicked' "$tmp/serve.log" >&2
  st_rc=1
fi

if ((st_rc == 0)); then
  echo "schemathesis: OK, no findings (schemathesis $SCHEMATHESIS_VERSION, -n $examples, seed $seed, ${st_secs}s run, ${SECONDS}s total)"
else
  echo "schemathesis: FAILED with exit code $st_rc (schemathesis $SCHEMATHESIS_VERSION, -n $examples, seed $seed, ${st_secs}s run, ${SECONDS}s total)" >&2
fi
exit "$st_rc"
