//! Runs a browser script (`tests/browser/*.mjs`, playwright-core driving Debian's `chromium`)
//! with node, bounded in time, and hands back what it printed.

use std::ffi::OsStr;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser: `LYNXO_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    std::env::var_os("LYNXO_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// The browser, after checking that it and playwright-core are installed (the test fails
/// saying how to install them if not).
pub fn ready_browser() -> PathBuf {
    let browser = chromium();
    assert!(
        browser.exists(),
        "no Chromium at {}: run scripts/bootstrap.sh (it installs Debian's chromium)",
        browser.display()
    );
    assert!(
        crate::stack::workspace_root()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed: run scripts/bootstrap.sh"
    );
    browser
}

/// Runs `node <root>/<script>` in `root` with `env`; returns whether it exited 0 and what it
/// printed (stdout and stderr, in order). Killed after `deadline`, which the output then says.
pub fn run_script(
    root: &Path,
    script: &str,
    env: &[(&str, &OsStr)],
    deadline: Duration,
) -> (bool, String) {
    let log = tempfile::tempfile().unwrap_or_else(|e| panic!("temp file: {e}"));
    let log_err = log.try_clone().unwrap_or_else(|e| panic!("temp file: {e}"));
    let mut reader = log.try_clone().unwrap_or_else(|e| panic!("temp file: {e}"));
    let mut child = Command::new("node")
        .arg(root.join(script))
        .current_dir(root)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|e| panic!("running node {script}: {e}"));
    let until = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut output = String::new();
    // The three handles share one file offset: read from the start.
    let _ = reader.rewind();
    let _ = reader.read_to_string(&mut output);
    if status.is_none() {
        output.push_str(&format!("\n(killed after {deadline:?})"));
    }
    (status.is_some_and(|s| s.success()), output)
}

/// What a dashboard walk left: the script's output and the secrets it reported showing.
pub struct Walked {
    /// What the script printed.
    pub output: String,
    /// Where its screenshots are (`target/dashboard-screenshots`).
    pub screenshots: PathBuf,
    /// The keys the dashboard showed once, as the script wrote them down.
    pub secrets: Vec<String>,
}

/// Runs a dashboard walk (`tests/browser/<script>`) in headless Chromium against `control`,
/// with `edge` as the API base it calls, and the environment every walk reads (addresses, the
/// demo account's credentials, the screenshot directory, a file for the secrets it was shown,
/// the browser) plus `extra`. Fails the test, with the script's output and the end of the
/// control plane's log, if the script fails or runs past `deadline`; then checks that no secret
/// the dashboard showed (nor any 24-character piece of one) reached the control plane's log.
pub fn walk(
    script: &str,
    control: &crate::control::Control,
    edge: &str,
    extra: &[(&str, &OsStr)],
    deadline: Duration,
) -> Walked {
    let root = crate::stack::workspace_root();
    let browser = ready_browser();
    let screenshots = root.join("target/dashboard-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap_or_else(|e| panic!("{screenshots:?}: {e}"));
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let secrets_file = scratch.path().join("secrets.txt");
    let dashboard = format!("http://{}", control.addr);
    let mut env: Vec<(&str, &OsStr)> = vec![
        ("LYNXO_DASHBOARD_URL", dashboard.as_ref()),
        ("LYNXO_EDGE_URL", edge.as_ref()),
        ("LYNXO_EMAIL", crate::control::EMAIL.as_ref()),
        ("LYNXO_PASSWORD", crate::control::PASSWORD.as_ref()),
        ("LYNXO_SCREENSHOTS", screenshots.as_os_str()),
        ("LYNXO_SECRETS_FILE", secrets_file.as_os_str()),
        ("LYNXO_CHROMIUM", browser.as_os_str()),
    ];
    env.extend_from_slice(extra);
    let started = Instant::now();
    let (ok, output) = run_script(&root, &format!("tests/browser/{script}"), &env, deadline);
    eprintln!("{output}");
    eprintln!("browser script {script} ran in {:?}", started.elapsed());
    let log = control.log();
    assert!(
        ok,
        "tests/browser/{script} failed (screenshots in {}):\n{output}\ncontrol plane log:\n{}",
        screenshots.display(),
        tail(&log, 80)
    );
    let secrets: Vec<String> = std::fs::read_to_string(&secrets_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a key the dashboard showed once is in the control plane's log"
        );
        // Any 24-character piece of its body would be a leak too.
        let body = secret.rsplit('_').next().unwrap_or(secret);
        for start in (0..body.len().saturating_sub(24)).step_by(8) {
            assert!(
                !log.contains(&body[start..start + 24]),
                "a piece of a shown-once key is in the control plane's log"
            );
        }
    }
    Walked {
        output,
        screenshots,
        secrets,
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
