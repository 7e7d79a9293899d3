//! Starts the local stack for a test and stops it afterwards: the demo origin and the real
//! worker under `wrangler dev` (workerd), each in its own process group on a free loopback
//! port, with local KV persisted to a temporary directory.
//!
//! Tests talk to the worker's own `workerd` ([`Stack::edge`]) with wrangler's dev-only
//! body-draining middleware off: production has neither that middleware nor wrangler's dev proxy
//! ([`Stack::proxy`]), and both change what a client sees when the worker answers before it has
//! read a request's body.
//!
//! [`Stack`]'s `Drop` kills both process groups (wrangler's workerd children with it), so a
//! failing test leaves nothing running.
//!
//! The worker runs from a copy of `edge/build` with a copy of `wrangler.toml` minus its
//! `[build]` section (environments, vars and bindings untouched): `wrangler dev` would otherwise
//! rebuild and reload the worker whenever someone edits `edge/` or `shared/` during a run, and a
//! reload empties the isolate's memory that some scenarios test. The harness builds the worker
//! first (scripts/build-edge.sh) when `edge/build` is older than its sources.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shared::mac::Keyring;
use tempfile::TempDir;

use crate::http;

/// The key-signing keyring of the tests (the worker's `LYNXO_KEYRING`): test-only secrets.
pub const KEYRING: &str = shared::testkit::KEYRING;
/// The identity keyring shared by the worker and the demo origin (`ORIGIN_KEYRING`).
pub const ORIGIN_KEYRING: &str = shared::testkit::ORIGIN_KEYRING;

/// What a test may change about the worker.
#[derive(Debug, Clone)]
pub struct Options {
    /// `REVOCATION_CACHE_MS`.
    pub cache_ms: u64,
    /// `SYNC_MAX_BYTES`.
    pub sync_max_bytes: usize,
    /// Other worker vars, overriding the defaults (`ORIGIN_URL`, the keyrings, ...).
    pub vars: Vec<(&'static str, String)>,
    /// Run the worker-build output in this directory instead of `edge/build` (a baseline built
    /// from another commit, for a side-by-side measurement); `None` builds `edge/build` first
    /// when it is older than the sources.
    pub worker_build: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_ms: 1_000,
            sync_max_bytes: 64 * 1024,
            vars: Vec::new(),
            worker_build: None,
        }
    }
}

/// The running stack.
pub struct Stack {
    /// The worker's address: its own `workerd`, as production serves it. `wrangler dev`'s proxy
    /// in front ([`Stack::proxy`]) turns an answer sent before the request body was read into a
    /// 503 "Your worker restarted mid-request"; the worker answers bodies early on purpose.
    pub edge: SocketAddr,
    /// `wrangler dev`'s own address, its dev proxy in front of the worker.
    pub proxy: SocketAddr,
    /// The `workerd` process that runs the worker (for its memory: `/proc/<pid>/status`).
    pub worker_pid: u32,
    /// The demo origin's address.
    pub origin: SocketAddr,
    /// Where the worker sends usage batches (`CONTROL_URL`): a free port reserved for a control
    /// plane ([`crate::control::Control::start`] listens there). Until one does, batches wait
    /// in the worker's meter and are retried.
    pub control: SocketAddr,
    /// The key-signing keyring the worker was given.
    pub keyring: Keyring,
    /// The options the worker was started with.
    pub options: Options,
    root: PathBuf,
    state: TempDir,
    children: Vec<Child>,
}

/// The workspace root (where `wrangler.toml` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Builds binary `bin` of workspace package `package` with the cargo running the tests (in
/// release when the tests are); returns its path.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running cargo build -p {package}: {e}"));
    assert!(output.status.success(), "cargo build -p {package} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no executable for {bin}"))
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Sleeps until 50 ms after the next multiple of `window` seconds since the epoch: the start
/// of a fresh fixed window, with the whole window ahead.
pub fn wait_for_window_start(window: u64) {
    let window_ms = window * 1000;
    let now = unix_ms();
    let next = now - now % window_ms + window_ms;
    std::thread::sleep(Duration::from_millis(next + 50 - now));
}

/// The signing keyring the worker runs with: its `LYNXO_KEYRING` var, or the tests' own.
fn keyring_of(options: &Options) -> Keyring {
    let text = options
        .vars
        .iter()
        .rev()
        .find(|(name, _)| *name == "LYNXO_KEYRING")
        .map_or(KEYRING, |(_, value)| value.as_str());
    Keyring::from_config(text).unwrap_or_else(|e| panic!("keyring: {e}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// Whether `edge/build` holds a worker built after the last change to its sources.
fn prebuilt_is_fresh(root: &Path) -> bool {
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let Some(built) = modified(&root.join("edge/build/index_bg.wasm")) else {
        return false;
    };
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut dirs = vec![root.join("edge/src"), root.join("shared/src")];
    let files = [
        "edge/Cargo.toml",
        "shared/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ];
    for f in files {
        newest = newest.max(modified(&root.join(f)).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Some(m) = modified(&path) {
                newest = newest.max(m);
            }
        }
    }
    built >= newest
}

impl Stack {
    /// Starts the demo origin (binary at `origin_bin`) and the worker; returns once both answer.
    pub fn start(origin_bin: &str, options: Options) -> Self {
        let root = workspace_root();
        let state = tempfile::Builder::new()
            .prefix("lynxo-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let keyring = keyring_of(&options);
        let mut stack = Self {
            edge: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy: SocketAddr::from(([127, 0, 0, 1], 0)),
            worker_pid: 0,
            origin: SocketAddr::from(([127, 0, 0, 1], 0)),
            control: SocketAddr::from(([127, 0, 0, 1], free_port())),
            keyring,
            options,
            root,
            state,
            children: Vec::new(),
        };
        stack.origin = stack.start_origin(origin_bin);
        stack.proxy = stack.start_worker();
        (stack.worker_pid, stack.edge) = stack.worker_process();
        stack
    }

    /// Restarts the worker with `vars` replacing those of the same name (a new `LYNXO_KEYRING`,
    /// say), as deploying a new secret does: new isolates with empty caches, the same KV. The
    /// worker gets a new address ([`Self::edge`]); returns once it answers.
    pub fn restart_worker(&mut self, vars: &[(&'static str, String)]) {
        if self.children.len() > 1 {
            let mut child = self.children.remove(1);
            stop_group(&mut child);
        }
        for (name, value) in vars {
            self.options.vars.retain(|(n, _)| n != name);
            self.options.vars.push((*name, value.clone()));
        }
        self.keyring = keyring_of(&self.options);
        self.proxy = self.start_worker();
        (self.worker_pid, self.edge) = self.worker_process();
    }

    fn start_origin(&mut self, origin_bin: &str) -> SocketAddr {
        let mut child = Command::new(origin_bin)
            .args(["--port", "0"])
            .env("ORIGIN_KEYRING", ORIGIN_KEYRING)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {origin_bin}: {e}"));
        let stdout = child.stdout.take();
        self.children.push(child);
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("demo origin did not report its address: {line:?}"));
        wait_healthy(addr, Duration::from_secs(10), String::new);
        addr
    }

    fn log_path(&self) -> PathBuf {
        self.state.path().join("wrangler.log")
    }

    fn start_worker(&mut self) -> SocketAddr {
        let port = free_port();
        let inspector = free_port();
        let log = File::create(self.log_path()).unwrap_or_else(|e| panic!("log file: {e}"));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let mut defaults = vec![
            ("LYNXO_KEYRING", KEYRING.to_owned()),
            ("ORIGIN_KEYRING", ORIGIN_KEYRING.to_owned()),
            ("ORIGIN_URL", format!("http://{}", self.origin)),
            ("REVOCATION_CACHE_MS", self.options.cache_ms.to_string()),
            ("SYNC_MAX_BYTES", self.options.sync_max_bytes.to_string()),
            ("CONTROL_URL", format!("http://{}", self.control)),
            // Keys without a pushed policy (the tests' own keys) are not limited in practice;
            // the control plane pushes the real limit of every key it creates.
            ("RATE_LIMIT_DEFAULT", "1000000/60".to_owned()),
            // The demo origin answers with the status this header names (tests/src/origin.rs).
            ("FORWARD_HEADERS", "demo-status".to_owned()),
        ];
        for (name, value) in &self.options.vars {
            defaults.retain(|(n, _)| n != name);
            defaults.push((name, value.clone()));
        }
        let vars: Vec<String> = defaults
            .iter()
            .map(|(name, value)| format!("{name}:{value}"))
            .collect();
        let config = self.prepare_worker();
        let mut cmd = Command::new(self.root.join("node_modules/.bin/wrangler"));
        cmd.current_dir(&self.root)
            .arg("dev")
            .arg("--config")
            .arg(&config)
            .args(["--env", "development", "--ip", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--inspector-port", &inspector.to_string()])
            .args(["--show-interactive-dev-session=false"])
            .arg("--persist-to")
            .arg(self.state.path().join("kv"))
            .args(vars.iter().flat_map(|v| ["--var".to_owned(), v.clone()]))
            .env("WRANGLER_SEND_METRICS", "false")
            // `wrangler dev` otherwise wraps the worker in a middleware that reads every unread
            // request body to its end before the response leaves; production does not, and the
            // worker's early refusals of bodies are what the tests check.
            .env("WRANGLER_DISABLE_REQUEST_BODY_DRAINING", "true")
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting wrangler (run scripts/bootstrap.sh): {e}"));
        self.children.push(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path = self.log_path();
        wait_healthy(addr, Duration::from_secs(180), || {
            std::fs::read_to_string(&log_path).unwrap_or_default()
        });
        addr
    }

    fn config_path(&self) -> PathBuf {
        self.state.path().join("wrangler.toml")
    }

    /// Builds the worker if needed, copies it, and writes the config `wrangler dev` runs.
    fn prepare_worker(&self) -> PathBuf {
        let build = match &self.options.worker_build {
            Some(dir) => dir.clone(),
            None => self.root.join("edge/build"),
        };
        if self.options.worker_build.is_none() && !prebuilt_is_fresh(&self.root) {
            let status = Command::new("bash")
                .arg(self.root.join("scripts/build-edge.sh"))
                .current_dir(&self.root)
                .status()
                .unwrap_or_else(|e| panic!("running scripts/build-edge.sh: {e}"));
            assert!(status.success(), "scripts/build-edge.sh failed");
        }
        let copy = self.state.path().join("worker");
        for file in ["index.js", "index_bg.wasm", "worker/shim.mjs"] {
            let to = copy.join(file);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
            }
            std::fs::copy(build.join(file), &to)
                .unwrap_or_else(|e| panic!("copying {build:?}/{file}: {e}"));
        }
        let original = std::fs::read_to_string(self.root.join("wrangler.toml"))
            .unwrap_or_else(|e| panic!("reading wrangler.toml: {e}"));
        let config = test_config(&original, &copy.join("worker/shim.mjs"));
        let path = self.config_path();
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
        path
    }

    /// Writes `value` to the worker's local KV under `key` with `wrangler kv key put --local`,
    /// as an operator (or an attacker with KV access) could, bypassing the sync endpoint.
    pub fn kv_put(&self, key: &str, value: &[u8]) {
        let file = self.state.path().join("kv-value.bin");
        std::fs::write(&file, value).unwrap_or_else(|e| panic!("writing {file:?}: {e}"));
        let output = Command::new(self.root.join("node_modules/.bin/wrangler"))
            .current_dir(&self.root)
            .args(["kv", "key", "put", "--config"])
            .arg(self.config_path())
            .args(["--env", "development", "--binding", "REVOCATIONS"])
            .args(["--local", "--persist-to"])
            .arg(self.state.path().join("kv"))
            .arg(key)
            .arg("--path")
            .arg(&file)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "true")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running wrangler kv key put: {e}"));
        assert!(
            output.status.success(),
            "wrangler kv key put failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Sends a request to the worker.
    pub fn edge(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> http::Response {
        http::send(self.edge, method, target, headers, body).unwrap_or_else(|e| {
            panic!(
                "{method} {target} to the edge: {e}\n{}",
                self.wrangler_log()
            )
        })
    }

    /// `GET /v1/jobs` at the worker with `Authorization: Bearer <key>`.
    pub fn call_with_key(&self, key: &str) -> http::Response {
        let auth = format!("Bearer {key}");
        self.edge("GET", "/v1/jobs", &[("Authorization", &auth)], b"")
    }

    /// Polls the worker (every 5 ms) until it refuses `key` with a 401, which it returns with
    /// the time since `from`; the key must be admitted (200) until then, and refused before
    /// `from + limit`, or the test fails with `context()` (say, the control plane's log).
    #[track_caller]
    pub fn until_refused(
        &self,
        key: &str,
        from: Instant,
        limit: Duration,
        context: impl Fn() -> String,
    ) -> (Duration, http::Response) {
        loop {
            let r = self.call_with_key(key);
            if r.status == 401 {
                return (from.elapsed(), r);
            }
            assert_eq!(
                r.status,
                200,
                "while waiting for a revocation: {}",
                r.text()
            );
            assert!(
                from.elapsed() < limit,
                "the worker still admits the key after {limit:?}\n{}",
                context()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Pushes every revocation shard, empty and valid for an hour, through the sync endpoint:
    /// until it has them all the worker fails closed.
    pub fn push_empty_revocations(&self) {
        for shard in 0..crate::keys::SHARDS {
            let body = crate::keys::shard_bytes(&self.keyring, shard, 1, &[], 3_600);
            let signature = crate::keys::sign_push(&self.keyring, shard, &body);
            let target = format!("/_lynxo/sync/revocations/{shard}");
            let r = self.edge("PUT", &target, &[("Lynxo-Signature", &signature)], &body);
            assert_eq!(r.status, 204, "shard {shard}: {}", r.text());
        }
    }

    /// Sends a request straight to the origin, bypassing the edge.
    pub fn origin(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> http::Response {
        http::send(self.origin, method, target, headers, b"")
            .unwrap_or_else(|e| panic!("{method} {target} to the origin: {e}"))
    }

    /// The demo origin's process (the first child [`Self::start`] spawns).
    pub fn origin_process(&self) -> Option<u32> {
        self.children.first().map(Child::id)
    }

    /// The worker's process group: `wrangler dev` (the second child [`Self::start`] spawns)
    /// and the `workerd` it runs.
    pub fn worker_process_group(&self) -> Option<u32> {
        self.children.get(1).map(Child::id)
    }

    /// What wrangler and the worker logged so far.
    pub fn wrangler_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The `workerd` process that runs the worker, and the address where it serves the worker
    /// directly: `wrangler dev` starts two `workerd` processes, this one and its dev proxy.
    fn worker_process(&self) -> (u32, SocketAddr) {
        let group = self.worker_process_group().unwrap_or_default();
        let pid = crate::attack::group_members(group)
            .into_iter()
            .map(|(proc, _)| proc.0)
            .find(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("workerd") && cmdline.contains("entry=127.0.0.1:0")
            })
            .unwrap_or_else(|| panic!("no workerd running the worker in group {group}"));
        let entry = listening_ports(pid)
            .into_iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .find(|addr| {
                http::send(*addr, "GET", "/healthz", &[], b"")
                    .is_ok_and(|r| r.status == 200 && r.body == b"ok")
            })
            .unwrap_or_else(|| panic!("workerd {pid} serves the worker on no port"));
        (pid, entry)
    }
}

/// The loopback TCP ports process `pid` listens on.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (*state == "0A" && inodes.iter().any(|i| i == inode)).then_some(port)
        })
        .collect()
}

/// `wrangler.toml` with `main` pointing at `main` and without its `[build]` section.
fn test_config(original: &str, main: &Path) -> String {
    let mut out = String::new();
    let mut in_build = false;
    for line in original.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_build = trimmed.starts_with("[build]");
        }
        if in_build {
            continue;
        }
        if trimmed.starts_with("main ") || trimmed.starts_with("main=") {
            out.push_str(&format!("main = {:?}\n", main.display().to_string()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn wait_healthy(addr: SocketAddr, limit: Duration, log: impl Fn() -> String) {
    let start = Instant::now();
    loop {
        if let Ok(r) = http::send(addr, "GET", "/healthz", &[], b"") {
            if r.status == 200 {
                return;
            }
        }
        assert!(
            start.elapsed() < limit,
            "{addr} not healthy after {limit:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

/// Waits up to 5 s for a child signalled to stop, then kills its whole group: the group may
/// outlive its leader (workerd under wrangler).
fn reap_group(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                signal_group(child.id(), "-KILL");
                let _ = child.wait();
                break;
            }
        }
    }
    signal_group(child.id(), "-KILL");
}

/// Stops one child's process group: SIGTERM, then SIGKILL after 5 s.
fn stop_group(child: &mut Child) {
    signal_group(child.id(), "-TERM");
    reap_group(child);
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &self.children {
            signal_group(child.id(), "-TERM");
        }
        for child in &mut self.children {
            reap_group(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_drops_the_build_and_repoints_main() {
        let original = "name = \"w\"\nmain = \"edge/build/worker/shim.mjs\"\n\n[build]\ncommand = \"x\"\nwatch_dir = [\"a\"]\n\n[env.development]\nvars = { A = \"1\" }\n";
        let config = test_config(original, Path::new("/tmp/w/shim.mjs"));
        assert_eq!(
            config,
            "name = \"w\"\nmain = \"/tmp/w/shim.mjs\"\n\n[env.development]\nvars = { A = \"1\" }\n"
        );
    }
}
