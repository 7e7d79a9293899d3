#!/usr/bin/env bash
# Runs the commands of docs/deploy.md that this machine can run (Cloudflare is not reachable
# from CI: the edge's part is the `wrangler deploy --dry-run` step of scripts/test.sh):
#   1. `systemd-analyze verify` of deploy/lynxo-control.service (any warning fails), with its
#      ExecStart pointed at the binary just built, and `systemd-analyze security` of its sandbox;
#   2. the control plane's first start as the runbook does it: two `generate-keyring`, `init`,
#      then `serve` with deploy/control.env.example's settings (publishing off: no edge here)
#      and the unit's Environment= lines;
#   3. TLS in front: deploy/nginx.conf, its ports and certificate paths substituted, with a
#      self-signed certificate; `nginx -t`, then /readyz and /healthz through it over HTTPS,
#      with the HSTS header;
#   4. the upgrade's steps: an online backup (`VACUUM INTO`) checked with `verify-audit`, stop
#      (SIGTERM: exit 0), then `compact` and `verify-audit` on the database.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Debian puts nginx in /usr/sbin, off a normal user's PATH.
PATH="$PATH:/usr/sbin:/sbin"
need systemd-analyze "scripts/bootstrap.sh installs it"
need nginx "scripts/bootstrap.sh installs it"
need openssl
need sqlite3 "scripts/bootstrap.sh installs it"

cargo build -q -p control
bin="$LYNXO_ROOT/target/debug/control"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do stop_process "$pid"; done
  rm -rf "$work"
}
trap cleanup EXIT

# --- 1. the unit -------------------------------------------------------------------------------
unit="$work/lynxo-control.service"
sed "s|^ExecStart=/usr/local/bin/lynxo-control |ExecStart=$bin |" deploy/lynxo-control.service >"$unit"
grep -q "^ExecStart=$bin serve$" "$unit" || die "the unit's ExecStart line changed: update this check"
# verify exits 0 on an unknown key or section (it only warns): any output is a failure.
report="$(systemd-analyze verify --man=no "$unit" 2>&1)" || die "systemd-analyze verify: $report"
[[ -z "$report" ]] || die "systemd-analyze verify warns: $report"
log "systemd-analyze verify: clean"
# Exposure on systemd's 0-100 scale (shown divided by 10): 1.4 today; fail above 2.0.
systemd-analyze security --offline=yes --threshold=20 "$LYNXO_ROOT/deploy/lynxo-control.service" \
  >"$work/security.txt" 2>&1 || { cat "$work/security.txt"; die "the unit's sandbox got weaker"; }
log "systemd-analyze security: $(grep -o 'Overall exposure level.*' "$work/security.txt")"

# --- 2. first start ----------------------------------------------------------------------------
signing="$("$bin" generate-keyring)"
audit="$("$bin" generate-keyring)"
port="$(free_port)"
tls_port="$(free_port)"
# The example settings, with real keyrings; the unit's own Environment= lines after them.
sed -e "s|^LYNXO_KEYRING=.*|LYNXO_KEYRING=$signing|" \
  -e "s|^LYNXO_AUDIT_KEYRING=.*|LYNXO_AUDIT_KEYRING=$audit|" \
  -e "s|^LYNXO_EDGE_SYNC_URL=.*|LYNXO_NO_PUBLISH=true|" \
  -e "s|^LYNXO_PUBLIC_ORIGIN=.*|LYNXO_PUBLIC_ORIGIN=https://localhost:$tls_port|" \
  deploy/control.env.example >"$work/control.env"
sed -n 's/^Environment=//p' deploy/lynxo-control.service |
  sed -e "s|/var/lib/lynxo-control|$work|" -e "s|127.0.0.1:8080|127.0.0.1:$port|" >>"$work/control.env"
grep -q "^LYNXO_DATABASE=$work/control.sqlite3$" "$work/control.env" || die "the unit's database path changed"
# As systemd reads an EnvironmentFile: KEY=VALUE lines, `;` and spaces are part of the value.
mapfile -t settings < <(grep -E '^[A-Z_]+=' "$work/control.env")
run() { env -i PATH="$PATH" "${settings[@]}" "$@"; }
run "$bin" init --email ops@example.com --password 'correct horse battery staple' >"$work/init.txt"
grep -q '^management_token=lnxm_' "$work/init.txt" || die "init printed no management token"
# A simple command, not the function: $! is the service itself, as systemd's main PID is.
env -i PATH="$PATH" "${settings[@]}" "$bin" serve >"$work/serve.log" 2>&1 &
serve=$!
pids+=("$serve")
wait_for_url "http://127.0.0.1:$port/readyz" 100 0.1 "$serve" || { cat "$work/serve.log"; die "serve never became ready"; }
log "serve: ready on 127.0.0.1:$port, database $work/control.sqlite3"

# --- 3. TLS in front ---------------------------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
sed -e "s|listen 443 ssl http2;|listen 127.0.0.1:$tls_port ssl http2;|" -e '/listen \[::\]:443/d' \
  -e "s|server_name control.lynxo.ai;|server_name localhost;|" \
  -e "s|/etc/letsencrypt/live/control.lynxo.ai/fullchain.pem|$work/cert.pem|" \
  -e "s|/etc/letsencrypt/live/control.lynxo.ai/privkey.pem|$work/key.pem|" \
  -e "s|proxy_pass http://127.0.0.1:8080;|proxy_pass http://127.0.0.1:$port;|" \
  deploy/nginx.conf >"$work/site.conf"
cat >"$work/nginx.conf" <<EOF
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http {
  access_log off;
  client_body_temp_path $work/nginx-body;
  proxy_temp_path $work/nginx-proxy;
  include $work/site.conf;
}
EOF
nginx -t -q -e "$work/nginx-error.log" -c "$work/nginx.conf" -p "$work" 2>"$work/nginx-t.log" || { cat "$work/nginx-t.log"; die "nginx -t"; }
nginx -e "$work/nginx-error.log" -c "$work/nginx.conf" -p "$work" 2>"$work/nginx-start.log" &
pids+=("$!")
https="https://localhost:$tls_port"
for _ in $(seq 100); do
  curl -fsS -o /dev/null --cacert "$work/cert.pem" "$https/readyz" 2>/dev/null && break
  sleep 0.1
done
curl -fsS --cacert "$work/cert.pem" "$https/readyz" >/dev/null || { cat "$work/nginx-start.log" "$work/nginx-error.log"; die "/readyz through TLS"; }
hsts="$(curl -fsS -D - -o /dev/null --cacert "$work/cert.pem" "$https/healthz" | tr -d '\r' | grep -i '^strict-transport-security:')"
[[ -n "$hsts" ]] || die "no HSTS header through the proxy"
log "TLS in front: /readyz and /healthz answer through nginx over HTTPS ($hsts)"

# --- 4. an upgrade's backup while it runs; stop, compact, verify -------------------------------
backup="$work/pre-upgrade.sqlite3"
sqlite3 "$work/control.sqlite3" "VACUUM INTO '$backup'"
env -i PATH="$PATH" "${settings[@]}" LYNXO_DATABASE="$backup" "$bin" verify-audit |
  grep '^audit chain intact' >/dev/null || die "verify-audit of the online backup"
log "online backup (VACUUM INTO) taken while serving; verify-audit passes on it"
kill -TERM "$serve"
status=0
wait "$serve" || status=$?
[[ "$status" -eq 0 ]] || { cat "$work/serve.log"; die "serve exited $status on SIGTERM"; }
pids=("${pids[@]:1}")
run "$bin" compact | grep '^compacted in ' >/dev/null || die "compact"
run "$bin" verify-audit | grep '^audit chain intact' >/dev/null || die "verify-audit"
log "stopped on SIGTERM (exit 0); compact and verify-audit pass on its database"
