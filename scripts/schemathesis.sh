#!/usr/bin/env bash
# Property-based API test of the control plane against its own OpenAPI document (schemathesis).
#
#   bash scripts/schemathesis.sh
#
# 1. Installs schemathesis (exact version, and its dependencies pinned below) from PyPI into a
#    virtualenv outside the work tree, ${XDG_CACHE_HOME:-~/.cache}/lynxo-keys/venv; skipped when
#    that exact set is already there.
# 2. Builds `control` (release: argon2 sign-ins are too slow unoptimised), makes a fresh database
#    in a temp dir, `control init` for a management token, `control serve` on a free loopback
#    port with no publisher (revocations stay in memory), waits for /readyz.
# 3. Runs every schemathesis phase (examples, coverage, fuzzing, stateful) with every check
#    (`-c all`: 5xx, status code, content type, response headers and body against the schema,
#    positive/negative data, missing headers, ignored auth, use after free...) with a fixed seed
#    and a bounded number of examples; any finding fails the script.
# 4. Stops the service and removes the temp dir whatever happens (trap on EXIT).
#
# Environment: SCHEMATHESIS_EXAMPLES (examples per operation, default 100), SCHEMATHESIS_SEED
# (default 20261128), LYNXO_VENV (the virtualenv). Extra arguments go to `schemathesis run`.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LYNXO_ROOT"

SCHEMATHESIS_VERSION=4.32.5
examples="${SCHEMATHESIS_EXAMPLES:-100}"
seed="${SCHEMATHESIS_SEED:-20261128}"
venv="${LYNXO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lynxo-keys/venv}"

step() { printf '\n==> %s\n' "$*"; }

# --- 1. schemathesis -------------------------------------------------------------------------
# Its dependencies are pinned too (`pip freeze` of a clean install): hypothesis releases often
# and changes what a given seed generates, so an unpinned set would not repeat a run.
requirements="schemathesis==$SCHEMATHESIS_VERSION
anyio==4.16.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
graphql-core==3.3.2
harfile==0.6.0
hypothesis==6.170.17
hypothesis-graphql==0.13.5
idna==3.20
iniconfig==2.3.1
jsonschema_rs==0.60.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
packaging==26.4
pluggy==1.7.0
Pygments==2.21.0
pyrate-limiter==4.5.1
pytest==9.2.0
PyYAML==6.0.4
requests==2.34.2
rich==15.0.0
sortedcontainers==2.4.0
typing_extensions==4.16.0
urllib3==2.8.0
Werkzeug==3.1.9"
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
    printf '%s\n' "$requirements" >"$venv/requirements.txt"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      -r "$venv/requirements.txt"
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
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
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
[[ "$token" == lnxm_* ]] || { echo "init printed no management token" >&2; exit 1; }

# A free loopback port: the kernel picks one, then it is released for the service to take.
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
# No --edge-sync-url / --kv-*: --no-publish, the publisher keeps shards in memory (it logs a warning).
RUST_LOG=warn "$bin" serve --database "$tmp/control.sqlite3" --listen "127.0.0.1:$port" \
  --public-origin "$base" --no-publish >"$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "control serve exited" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || { echo "control serve not ready on $base" >&2; exit 1; }
echo "control serve pid $pid on $base"

# --- 3. schemathesis -------------------------------------------------------------------------
# Rejections of schema-valid requests (ST202, positive-data check) that no JSON Schema can
# prevent, each the documented 422 problem. The hook below drops exactly these and nothing else;
# every other check, every other 422 and every other operation keep the defaults.
# - `expires_at` must lie in the future and within ten years: bounds that move with the clock, so
#   the schema can only say `minimum: 0` (its description says the rest). Dropped only when the
#   problem is `validation_failed` with `field: expires_at` and the value sent really is outside
#   (now, now + 10 years].
# - An `Idempotency-Key` already used with a different body is `idempotency_key_reused`: a rule
#   across requests (the generator reuses short header values like "0"). Dropped only when the
#   request carried that header and the problem has that code.
# - Usage ranges (GET /v1/keys/{id}/usage, GET /v1/usage): `from` after `to`, or more than 1500
#   buckets, a rule across two query parameters. Dropped only for `field: from` when the hook's
#   own computation of the range says it breaks that rule.
# - Rate limits (POST /v1/keys, PATCH /v1/keys/{id}): `rate_limit` per `rate_limit_window` over
#   the plan's per-minute cap, a rule across two fields. Dropped only for `field: rate_limit`
#   when the values the problem reports are the ones sent and really exceed the cap.
cat >"$tmp/hooks.py" <<'EOF'
import time

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

TEN_YEARS = 10 * 365 * 86_400


def problem_of(response):
    try:
        problem = response.json()
    except Exception:
        return {}
    return problem if isinstance(problem, dict) else {}


def expires_at_outside_the_clock_bounds(case):
    expires_at = case.body.get("expires_at") if isinstance(case.body, dict) else None
    # JSON Schema's "integer" includes integral floats such as 124262.0, and so does the service.
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
        return False
    if isinstance(expires_at, float) and not expires_at.is_integer():
        return False
    now = int(time.time())
    # The service judged with its own clock a moment earlier: a minute of slack at the top.
    return expires_at <= now or expires_at > now + TEN_YEARS - 60


GRANULARITY = {"minute": 60, "hour": 3600, "day": 86_400}


def whole(value):
    """An integer query or body value as the service reads it, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def usage_range_outside_the_rules(case):
    """`from` after `to`, or more than 1500 buckets: a rule across two parameters."""
    query = case.query or {}
    g = GRANULARITY.get(query.get("granularity", "hour"))
    if g is None:
        return False
    now = int(time.time())
    to = whole(query["to"]) if "to" in query else (now // g + 1) * g
    start = whole(query["from"]) if "from" in query else None
    if to is None:
        return False
    if start is None:
        if "from" in query:
            return False
        start = max(to - 86_400, 0)
    if start > to:
        return True
    return -(-to // g) - start // g > 1500


def rate_limit_over_the_plan(case, problem):
    """`rate_limit` above the plan's per-minute cap for the window: a rule across two fields."""
    try:
        limit, window = int(problem["rate_limit"]), int(problem["rate_limit_window"])
        cap = int(problem["max_rate_limit"])
    except (KeyError, TypeError, ValueError):
        return False
    body = case.body if isinstance(case.body, dict) else {}
    for field, value in (("rate_limit", limit), ("rate_limit_window", window)):
        if body.get(field) is not None and whole(body[field]) != value:
            return False
    return limit * 60 > cap * window


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """False drops the failure. Only ST202 (422) with a cross-field rule is ever considered."""
    if not isinstance(failure, RejectedPositiveData) or failure.status_code != 422:
        return True
    operation = (case.operation.method.upper(), case.operation.path)
    problem = problem_of(response)
    if problem.get("code") != "validation_failed" and operation != ("POST", "/v1/keys"):
        return True
    if operation in (("GET", "/v1/keys/{id}/usage"), ("GET", "/v1/usage")):
        return not (problem.get("field") == "from" and usage_range_outside_the_rules(case))
    if operation in (("POST", "/v1/keys"), ("PATCH", "/v1/keys/{id}")):
        if problem.get("field") == "rate_limit" and rate_limit_over_the_plan(case, problem):
            return False
    if operation != ("POST", "/v1/keys"):
        return True
    if (
        problem.get("code") == "validation_failed"
        and problem.get("field") == "expires_at"
        and expires_at_outside_the_clock_bounds(case)
    ):
        return False
    headers = {name.lower() for name in (case.headers or {})}
    if problem.get("code") == "idempotency_key_reused" and "idempotency-key" in headers:
        return False
    return True
EOF

step "schemathesis run ($examples examples per operation, seed $seed)"
# Run from the temp dir so nothing (hypothesis' example database, reports) lands in the tree.
st_start=$SECONDS
set +e
(
  cd "$tmp"
  SCHEMATHESIS_HOOKS="$tmp/hooks.py" "$venv/bin/schemathesis" run "$base/openapi.json" \
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
