#!/usr/bin/env bash
# Installs what the project's builds and tests need on a fresh machine; idempotent.
#
#   bash scripts/bootstrap.sh
#
# Every step checks first and installs only what is missing or stale, so a second run takes
# seconds. Installs:
#   - rustup target wasm32-unknown-unknown;
#   - wasm-bindgen-cli (wasm-bindgen, wasm-bindgen-test-runner) at exactly the version of the
#     wasm-bindgen crate in Cargo.lock, and worker-build at the version of the worker crate in
#     Cargo.lock, both under $LYNXO_TOOLS/bin (scripts/env.sh says where and why);
#   - wasm-pack, pinned, in the same place: it builds the JavaScript package (js/build.sh) with
#     the wasm-bindgen CLI above, which it finds first on PATH at the locked version;
#   - the npm packages of package-lock.json (wrangler and its workerd, esbuild; playwright-core and
#     axe-core for the dashboard's browser tests) in node_modules;
#   - Debian's `chromium` (apt), the browser those tests drive. playwright-core never downloads a
#     browser of its own (`npx playwright install` cannot work offline): the tests point it at
#     /usr/bin/chromium;
#   - Debian's `systemd` (for `systemd-analyze`), `nginx-light` and `sqlite3`, only if missing:
#     the deploy runbook's check (scripts/check-deploy.sh) verifies the unit, runs the TLS proxy
#     and takes the pre-upgrade backup;
#   - Debian's `faketime` (apt): libfaketime, which the clock-skew test (tests/tests/metrics.rs)
#     preloads into a control plane so its clock runs behind the edge's;
#   - Debian's `postgresql` (apt), only if its server binaries (`initdb`, `pg_ctl`, on PATH or in
#     /usr/lib/postgresql/<version>/bin) or the `postgres` system user are missing: the PostgreSQL
#     tests start a private server of their own (tests/src/postgres.rs). No cluster is created.
# Fuzzing tools are installed by the scripts that use them, not here.
# Afterwards `source scripts/env.sh` puts all of it on PATH and sets WASM_BINDGEN_BIN.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in rustup cargo node npm sha256sum; do need "$tool"; done

# --- Rust target -----------------------------------------------------------------------------
target=wasm32-unknown-unknown
if rustup target list --installed | grep -qx "$target"; then
  log "rust target $target: present"
else
  log "rust target $target: installing"
  rustup target add "$target"
fi

# --- Versions pinned by Cargo.lock -------------------------------------------------------------
if [[ ! -f Cargo.lock ]]; then
  # Resolve without building: writes Cargo.lock, changes no existing one.
  log "Cargo.lock missing: resolving the workspace"
  cargo metadata --format-version 1 >/dev/null
fi

wasm_bindgen_version="$(locked_version wasm-bindgen)"
worker_version="$(locked_version worker)"

# Installs crate $1 at exactly version $2 under $LYNXO_TOOLS unless binary $3 already reports it.
# Not --locked: the crates' own lockfiles name a dependency version this registry lacks.
cargo_tool() {
  local crate="$1" version="$2" bin="$LYNXO_TOOLS/bin/$3" have=""
  if [[ -x "$bin" ]]; then
    have="$("$bin" --version 2>/dev/null | awk '{ print $NF }')" || have=""
  fi
  if [[ "$have" == "$version" ]]; then
    log "$crate $version: present"
  else
    log "$crate $version: installing (found: ${have:-none})"
    cargo install --quiet --force --root "$LYNXO_TOOLS" "$crate" --version "=$version"
  fi
}

cargo_tool wasm-bindgen-cli "$wasm_bindgen_version" wasm-bindgen
# worker-build is released in lockstep with the worker crate (worker 0.8.x <-> worker-build 0.8.x).
cargo_tool worker-build "$worker_version" worker-build
# Not in Cargo.lock (a tool, not a dependency): pinned here.
cargo_tool wasm-pack 0.15.1 wasm-pack

# --- npm packages ------------------------------------------------------------------------------
# npm ci wipes and reinstalls node_modules, so run it only when the lockfile (or Node) changed
# since the last successful install, as recorded by a stamp inside node_modules.
stamp=node_modules/.lynxo-bootstrap.stamp
want_stamp="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1) node-$(node --version)"
if [[ -d node_modules && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
  log "npm packages: up to date"
else
  log "npm packages: npm ci"
  npm ci --no-audit --no-fund
  printf '%s\n' "$want_stamp" >"$stamp"
fi

# --- Chromium for the dashboard's browser tests (tests/tests/dashboard.rs) ----------------------
if [[ -x /usr/bin/chromium ]]; then
  log "chromium: present ($(/usr/bin/chromium --version 2>/dev/null | head -n1))"
else
  command -v apt-get >/dev/null || die "chromium is missing and apt-get is not available: install Debian's chromium"
  sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  log "chromium: installing Debian's package"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  [[ -x /usr/bin/chromium ]] || die "apt-get installed chromium but /usr/bin/chromium is missing"
fi

# --- systemd-analyze and nginx for the deploy runbook's check (scripts/check-deploy.sh) --------
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || die "${missing[*]} missing and apt-get is not available"
  sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  log "deploy check: installing Debian's ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
else
  log "deploy check: systemd-analyze, nginx and sqlite3 present"
fi

# --- libfaketime for the clock-skew test (tests/tests/metrics.rs) -------------------------------
libfaketime=/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1
if [[ -f "$libfaketime" ]]; then
  log "faketime: present"
else
  command -v apt-get >/dev/null || die "libfaketime is missing and apt-get is not available: install Debian's faketime"
  sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  log "faketime: installing Debian's package"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq faketime >/dev/null
  [[ -f "$libfaketime" ]] || die "apt-get installed faketime but $libfaketime is missing"
fi

# --- PostgreSQL for the PostgreSQL tests (tests/src/postgres.rs, control/tests/postgres_schema.rs)
# Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<version>/bin; the harness
# looks there too (newest first) and runs them as the `postgres` user when it is root.
pg_bin=""
if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
  pg_bin="$(dirname "$(command -v initdb)")"
else
  for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then pg_bin="$dir"; break; fi
  done
fi
if [[ -n "$pg_bin" ]] && id -u postgres >/dev/null 2>&1; then
  log "postgresql: present ($("$pg_bin/initdb" --version))"
else
  command -v apt-get >/dev/null || die "PostgreSQL's server is missing and apt-get is not available: install Debian's postgresql"
  sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  log "postgresql: installing Debian's package"
  # The tests run private servers only: no default cluster (and no server on port 5432).
  $sudo mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/lynxo.conf >/dev/null
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb"
  id -u postgres >/dev/null 2>&1 || die "apt-get installed postgresql but there is no postgres user"
fi

log "ready: wasm-bindgen $("$WASM_BINDGEN_BIN" --version | awk '{ print $NF }')," \
  "worker-build $("$LYNXO_TOOLS/bin/worker-build" --version | awk '{ print $NF }')," \
  "wasm-pack $("$LYNXO_TOOLS/bin/wasm-pack" --version | awk '{ print $NF }')," \
  "wrangler $(node -p 'require("./node_modules/wrangler/package.json").version')"
log "tools in $LYNXO_TOOLS/bin; for other shells: source scripts/env.sh"
log "WASM_BINDGEN_BIN=$WASM_BINDGEN_BIN"
