//! `lynxo-keys scan --check-live` against the real control plane (`control serve`, no worker:
//! the verify endpoint answers from the database): a key found in a file is `active` while it
//! is, `inactive` once revoked, and another account's key is `inactive` too; the key is never
//! printed.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::control::{AUDIT_KEYRING, control_binary};
use e2e::http;
use e2e::stack::{KEYRING, workspace_binary};
use serde_json::{Value, json};

/// `control serve` on a fresh database, stopped (its process group) when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
    tokens: Vec<String>,
    _state: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// A `name=value` line that `control init` printed.
fn field(printed: &str, name: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {printed}"))
        .to_owned()
}

fn serve() -> Served {
    let bin = control_binary();
    let state = tempfile::tempdir().unwrap();
    let db = e2e::postgres::test_database(state.path());
    let mut tokens = Vec::new();
    for (sub, name, email) in [
        ("init", "Scanner account", "scan@example.com"),
        ("init", "Other account", "other@example.com"),
    ] {
        let out = Command::new(&bin)
            .arg(sub)
            .arg("--database")
            .arg(&db)
            .args(["--account-name", name, "--email", email])
            .env("LYNXO_INIT_PASSWORD", "scanner-password-long-enough")
            .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "control {sub}: {printed}{out:?}");
        tokens.push(field(&printed, "management_token"));
    }
    let addr = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let log = std::fs::File::create(state.path().join("control.log")).unwrap();
    let child = Command::new(&bin)
        .arg("serve")
        .arg("--database")
        .arg(&db)
        .args(["--listen", &addr.to_string()])
        .args(["--public-origin", &format!("http://{addr}")])
        .env("LYNXO_KEYRING", KEYRING)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("LYNXO_NO_PUBLISH", "true")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let served = Served {
        child,
        addr,
        tokens,
        _state: state,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http::send(addr, "GET", "/readyz", &[], b"").map_or(true, |r| r.status != 200) {
        assert!(Instant::now() < deadline, "control never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    served
}

fn api(s: &Served, token: &str, method: &str, target: &str, body: &Value) -> Value {
    let auth = format!("Bearer {token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let r = http::send(
        s.addr,
        method,
        target,
        &headers,
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert!(r.status / 100 == 2, "{method} {target}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn scan(bin: &Path, dir: &Path, url: &str, token: &str) -> Output {
    Command::new(bin)
        .current_dir(dir)
        .args(["scan", "--json", "--check-live", url])
        .env("LYNXO_MANAGEMENT_TOKEN", token)
        .output()
        .unwrap()
}

/// (line, live) of each finding.
fn lives(out: &Output) -> Vec<(u64, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["live"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn check_live_reads_the_real_verify_endpoint() {
    let bin = workspace_binary("lynxo-cli", "lynxo-keys");
    let served = serve();
    let (mine, theirs) = (&served.tokens[0], &served.tokens[1]);
    let create = |token: &str, name: &str| {
        let body = json!({ "name": name, "environment": "production", "permission": "read_only" });
        api(&served, token, "POST", "/v1/keys", &body)
    };
    let own = create(mine, "leaked");
    let other = create(theirs, "someone else's");
    let own_key = own["key"].as_str().unwrap().to_owned();
    let other_key = other["key"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.env"),
        format!("A={own_key}\nB={other_key}\n"),
    )
    .unwrap();
    let url = format!("http://{}", served.addr);

    let out = scan(&bin, dir.path(), &url, mine);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(lives(&out), [(1, "active".into()), (2, "inactive".into())]);
    let printed = format!("{out:?}");
    for key in [&own_key, &other_key] {
        assert!(!printed.contains(&key[10..60]), "a key was printed");
    }

    let id = own["id"].as_str().unwrap();
    let reason = json!({ "reason": "found by lynxo-keys scan" });
    api(
        &served,
        mine,
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        &reason,
    );
    let out = scan(&bin, dir.path(), &url, mine);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        lives(&out),
        [(1, "inactive".into()), (2, "inactive".into())]
    );

    // A token the control plane refuses: an error, the keys still reported, `unknown`.
    let out = scan(&bin, dir.path(), &url, "lnxm_not_a_token");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(lives(&out), [(1, "unknown".into()), (2, "unknown".into())]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
}
