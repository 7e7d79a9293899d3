//! Disk full: the real binary with its database on a tmpfs of a few MiB (mounted by the test, as
//! root; unmounted when it ends). The test fills the filesystem, then shows that writes answer
//! 503 `storage_full` with `Retry-After`, `/readyz` answers 503, reads still work and nothing
//! acknowledged before was lost (every key, every revocation, nothing of a refused write, and the
//! audit chain verifies with `control verify-audit`); then it frees the space and shows the same
//! process recovers: ready again, writes acknowledged, without a restart.

mod common;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Reply, agent, free_port, init_binary, keys, send, serve_binary};
use serde_json::{Value, json};

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let uid = Command::new("id").arg("-u").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "the disk-full test mounts a tmpfs: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros into `path` until the filesystem refuses more (ENOSPC), then returns the file.
fn fill(path: PathBuf) -> PathBuf {
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 16, 1 << 12, 1] {
        let buf = vec![0_u8; chunk];
        loop {
            match file.write(&buf) {
                Ok(n) if n == chunk => {}
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC: {e}");
                    break;
                }
            }
        }
    }
    let _ = file.sync_all();
    path
}

/// Polls `/readyz` until it answers `status` (bounded: the test fails after 30 s).
fn await_ready(agent: &ureq::Agent, base: &str, status: u16) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut r) = agent.get(&format!("{base}/readyz")).call() {
            if r.status().as_u16() == status {
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let text = r.body_mut().read_to_string().unwrap();
                return Reply {
                    status,
                    retry_after,
                    body: serde_json::from_str(&text).unwrap_or(Value::Null),
                };
            }
        }
        assert!(Instant::now() < deadline, "/readyz did not answer {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_storage_full(r: &Reply, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", r.body);
    assert_eq!(r.body["code"], "storage_full", "{what}");
    assert_eq!(r.retry_after.as_deref(), Some("5"), "{what}");
}

#[test]
fn a_full_disk_refuses_writes_with_503_loses_nothing_and_recovers_without_restart() {
    let fs = Tmpfs::mount("6m");
    let db = fs.path().join("control.sqlite3");
    let token = init_binary(&db);
    let port = free_port();
    let _service = serve_binary(&db, port);
    let base = format!("http://127.0.0.1:{port}");
    let agent = agent();
    await_ready(&agent, &base, 200);

    let create = |n: usize| {
        send(
            &agent,
            &format!("{base}/v1/keys"),
            &token,
            Some(
                json!({ "name": format!("k{n}"), "environment": "production", "permission": "read_only" }),
            ),
        )
    };
    let revoke = |id: &str| {
        send(
            &agent,
            &format!("{base}/v1/keys/{id}/revoke"),
            &token,
            Some(json!({ "reason": "disk-full test" })),
        )
    };
    let mut created: HashSet<String> = HashSet::new();
    let mut revoked: HashSet<String> = HashSet::new();
    for n in 0..10 {
        let r = create(n);
        assert_eq!(r.status, 201, "{}", r.body);
        created.insert(r.body["id"].as_str().unwrap().to_owned());
    }

    // Fill the filesystem. Writes may still fit for a while in WAL space already allocated:
    // create and revoke until the disk refuses one, recording every acknowledgement.
    let filler = fill(fs.path().join("filler"));
    let mut refused = None;
    for n in 10..400 {
        let r = create(n);
        if r.status != 201 {
            refused = Some(("create", r));
            break;
        }
        let id = r.body["id"].as_str().unwrap().to_owned();
        created.insert(id.clone());
        let r = revoke(&id);
        if r.status != 200 {
            refused = Some(("revoke", r));
            break;
        }
        revoked.insert(id);
    }
    let (what, first) = refused.expect("the full disk refused no write");
    assert_storage_full(&first, what);

    // While full: every write is refused the same way, and readiness says so.
    let survivor = created
        .iter()
        .find(|id| !revoked.contains(*id))
        .unwrap()
        .clone();
    assert_storage_full(&create(1000), "create while full");
    assert_storage_full(&revoke(&survivor), "revoke while full");
    let ready = await_ready(&agent, &base, 503);
    assert_eq!(ready.body["code"], "not_ready");
    assert_eq!(ready.retry_after.as_deref(), Some("5"));
    // A flood of readiness checks stays not ready (one probe a second, no write storm).
    for _ in 0..200 {
        let r = agent.get(&format!("{base}/readyz")).call().unwrap();
        assert_eq!(r.status().as_u16(), 503);
    }

    // Reads work, and hold exactly what was acknowledged: nothing lost, nothing of a refused
    // write (a refused create left no key, a refused revoke left the key active).
    let listed = keys(&agent, &base, &token);
    let ids: HashSet<String> = listed.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, created, "exactly the acknowledged creates");
    for (id, status) in &listed {
        let expected = if revoked.contains(id) {
            "revoked"
        } else {
            "active"
        };
        assert_eq!(status, expected, "{id}");
    }

    // Space returns: the same process is ready again and takes writes, no restart.
    std::fs::remove_file(filler).unwrap();
    await_ready(&agent, &base, 200);
    let r = create(2000);
    assert_eq!(r.status, 201, "{}", r.body);
    created.insert(r.body["id"].as_str().unwrap().to_owned());
    let r = revoke(&survivor);
    assert_eq!(r.status, 200, "{}", r.body);
    revoked.insert(survivor);
    let listed = keys(&agent, &base, &token);
    let ids: HashSet<String> = listed.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, created);
    drop(_service);

    // The audit trail is whole: every acknowledged change, chained.
    let verify = Command::new(BIN)
        .args(["verify-audit", "--database"])
        .arg(&db)
        .env("LYNXO_AUDIT_KEYRING", shared::testkit::AUDIT_KEYRING)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify-audit: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let events = String::from_utf8_lossy(&verify.stdout);
    assert!(events.contains("audit chain intact"), "{events}");
}
