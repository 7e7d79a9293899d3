//! Backup and restore with the real binary: `control backup` while 32 clients create (and
//! revoke) keys against a running control plane, then `control restore` into a new database
//! served by a new control plane. Every create acknowledged before the backup began is there,
//! every revoke acknowledged before it is in force, and the audit chain verifies. A restore
//! refuses a database a service holds, and a backup that fails its checks.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, agent, free_port, keys, send, serve_binary};
use serde_json::json;

const CLIENTS: usize = 32;

fn run(args: &[&str], db: &Path, extra: &[&std::ffi::OsStr]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--database")
        .arg(db)
        .args(extra)
        .env("LYNXO_INIT_PASSWORD", "a long enough password")
        .env("LYNXO_AUDIT_KEYRING", shared::testkit::AUDIT_KEYRING)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An acknowledged change, with when its answer arrived.
type Acked = Arc<Mutex<Vec<(String, Instant)>>>;

#[test]
fn a_backup_under_32_writers_restores_everything_acknowledged_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("control.sqlite3");
    let init = run(&["init", "--email", "ops@example.com"], &db, &[]);
    assert!(init.status.success(), "{}", text(&init));
    let token = String::from_utf8_lossy(&init.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("management_token="))
        .unwrap()
        .to_owned();
    let port = free_port();
    let service = serve_binary(&db, port);
    let base = format!("http://127.0.0.1:{port}");

    let created: Acked = Arc::default();
    let revoked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (created, revoked) = (created.clone(), revoked.clone());
            let (stop, acked) = (stop.clone(), acked.clone());
            let (base, token) = (base.clone(), token.clone());
            std::thread::spawn(move || {
                let agent = agent();
                while !stop.load(Ordering::SeqCst) {
                    let body = json!({ "name": format!("c{c}"), "environment": "production", "permission": "read_only" });
                    let r = send(&agent, &format!("{base}/v1/keys"), &token, Some(body));
                    assert_eq!(r.status, 201, "{}", r.body);
                    let key = r.body;
                    let id = key["id"].as_str().unwrap().to_owned();
                    created.lock().unwrap().push((id.clone(), Instant::now()));
                    acked.fetch_add(1, Ordering::SeqCst);
                    let url = format!("{base}/v1/keys/{id}/revoke");
                    let r = send(&agent, &url, &token, Some(json!({ "reason": "backup test" })));
                    assert_eq!(r.status, 200, "{}", r.body);
                    revoked.lock().unwrap().push((id, Instant::now()));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Back up in the middle of the run, writers going on before, during and after.
    while acked.load(Ordering::SeqCst) < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let backup = dir.path().join("backup.sqlite3");
    let began = Instant::now();
    let out = run(&["backup"], &db, &["--to".as_ref(), backup.as_os_str()]);
    let ended = Instant::now();
    assert!(out.status.success(), "{}", text(&out));
    let at_end = acked.load(Ordering::SeqCst);
    while acked.load(Ordering::SeqCst) < at_end + 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A backup never overwrites a file.
    let again = run(&["backup"], &db, &["--to".as_ref(), backup.as_os_str()]);
    assert!(!again.status.success());
    // A restore refuses the database the running service holds, and leaves it alone.
    let refused = run(&["restore"], &db, &["--from".as_ref(), backup.as_os_str()]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("in use"), "{}", text(&refused));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let writes_during = {
        let c = created.lock().unwrap();
        c.iter()
            .filter(|(_, at)| *at > began && *at < ended)
            .count()
    };
    drop(service);

    // Restore into a new database, served by a new control plane.
    let restored = dir.path().join("restored.sqlite3");
    let out = run(
        &["restore"],
        &restored,
        &["--from".as_ref(), backup.as_os_str()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit chain intact"), "{}", text(&out));
    let port = free_port();
    let service = serve_binary(&restored, port);
    let listed: std::collections::HashMap<String, String> =
        keys(&agent(), &format!("http://127.0.0.1:{port}"), &token)
            .into_iter()
            .collect();
    let before = |acked: &Acked| -> HashSet<String> {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at < began)
            .map(|(id, _)| id.clone())
            .collect()
    };
    let (created_before, revoked_before) = (before(&created), before(&revoked));
    assert!(created_before.len() >= 100);
    for id in &created_before {
        assert!(
            listed.contains_key(id),
            "key {id} acknowledged before the backup is missing"
        );
    }
    for id in &revoked_before {
        assert_eq!(listed[id], "revoked", "{id} was revoked before the backup");
    }
    // Nothing in the copy that was never acknowledged: every key listed was created by a client.
    let all_created: HashSet<String> = created
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert!(listed.keys().all(|id| all_created.contains(id)));
    println!(
        "backup: {} keys restored, {} created before the backup began, {writes_during} \
         acknowledged while it ran",
        listed.len(),
        created_before.len()
    );
    drop(service);
    let verify = run(&["verify-audit"], &restored, &[]);
    assert!(verify.status.success(), "{}", text(&verify));
}

/// A restore checks the file first and changes nothing when it fails: not a database, a schema
/// newer than the binary, an audit chain that does not verify (a row rewritten).
#[test]
fn a_restore_refuses_a_backup_that_fails_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("control.sqlite3");
    let init = run(&["init", "--email", "ops@example.com"], &db, &[]);
    assert!(init.status.success(), "{}", text(&init));
    let good = dir.path().join("good.sqlite3");
    let out = run(&["backup"], &db, &["--to".as_ref(), good.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    let target = dir.path().join("target.sqlite3");

    let garbage = dir.path().join("garbage.sqlite3");
    std::fs::write(&garbage, b"not a database at all, not even close to one").unwrap();
    let newer = dir.path().join("newer.sqlite3");
    std::fs::copy(&good, &newer).unwrap();
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "user_version", v + 1).unwrap();
    }
    let tampered = dir.path().join("tampered.sqlite3");
    std::fs::copy(&good, &tampered).unwrap();
    {
        let conn = rusqlite::Connection::open(&tampered).unwrap();
        conn.execute_batch("DROP TRIGGER audit_events_no_update")
            .unwrap();
        let n = conn
            .execute(
                "UPDATE audit_events SET actor = 'someone else' \
                 WHERE seq = (SELECT max(seq) FROM audit_events)",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    for (file, why) in [
        (&garbage, "integrity"),
        (&newer, "newer than this build"),
        (&tampered, "audit chain"),
    ] {
        let out = run(
            &["restore"],
            &target,
            &["--from".as_ref(), file.as_os_str()],
        );
        assert!(!out.status.success(), "{why}");
        assert!(text(&out).contains(why), "{why}: {}", text(&out));
        assert!(!target.exists(), "{why}: nothing restored");
    }
    let out = run(
        &["restore"],
        &target,
        &["--from".as_ref(), good.as_os_str()],
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// `backup` and `restore` copy a SQLite file: on a PostgreSQL database they refuse at once,
/// before connecting (nothing listens at the URL's port) or writing anything, naming the tools
/// to use instead and never the URL's password. The restore refuses before it asks for the
/// audit keyring (none is given), so the operator hears the reason that matters.
#[test]
fn backup_and_restore_refuse_a_postgres_database_naming_its_tools() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://lynxo:s3cret-pw@127.0.0.1:{}/control",
        free_port()
    );
    for (command, file_flag) in [("backup", "--to"), ("restore", "--from")] {
        let out = Command::new(BIN)
            .args([command, "--database", &url, file_flag, "copy.sqlite3"])
            .current_dir(dir.path())
            .env_remove("LYNXO_AUDIT_KEYRING")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let said = text(&out);
        assert!(!out.status.success(), "{command}: {said}");
        for tool in ["pg_dump", "pg_basebackup", "PITR", "PostgreSQL"] {
            assert!(said.contains(tool), "{command} names {tool}: {said}");
        }
        assert!(said.contains(&format!("control {command}")), "{said}");
        assert!(
            !said.contains("s3cret-pw"),
            "{command} shows the password: {said}"
        );
        assert!(
            !said.contains("connect") && !said.contains("keyring"),
            "{command} refused for the wrong reason: {said}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{command} wrote {left:?}");
    }
}
