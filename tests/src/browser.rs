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
