//! The audit trail against someone who can write the database but holds no secret of the
//! process: rows edited (with every chain value recomputed) or cut off the end are caught, by the
//! checkpoint publisher while the service runs and by `control verify-audit` afterwards.
//!
//! The first tests drive `publish::CheckpointPublisher` with simulated time; the last runs the
//! real binary (`init`, `serve` anchoring at a stand-in for the edge's checkpoint endpoint,
//! `verify-audit` reading it back) and tampers with the SQLite file in between. The first tests
//! run on either backend (`LYNXO_TEST_POSTGRES`): the attacker's SQL runs on a connection of its
//! own to the app's database, whichever it is.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::put;
use common::{AUDIT_KEYRING, Service, TestApp, audit_keyring, free_port};
use control::publish::{CheckpointPass, CheckpointPublisher, Sink};
use control::store::StoreError;
use control::store::audit::{self, ChainError};
use control::store::db::{Db, params};
use rusqlite::Connection;
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::audit::Checkpoint;
use shared::mac::Keyring;

fn checkpoints(app: &TestApp) -> CheckpointPublisher {
    CheckpointPublisher::new(
        app.state.store.clone(),
        audit_keyring(),
        app.clock.clone(),
        app.sink.clone(),
        Duration::from_secs(60),
    )
}

fn anchored(app: &TestApp) -> Checkpoint {
    let bytes = app.sink.get_checkpoint(0).unwrap().unwrap();
    Checkpoint::open(&bytes, &audit_keyring()).unwrap()
}

/// Raw SQL on the database, as an attacker with the file (SQLite) or the credentials
/// (PostgreSQL) runs it, on a connection of their own (`common::as_attacker`, or [`on_file`]):
/// around the append-only triggers.
fn tamper(db: &Db<'_>, sql: &str) {
    let around = if db.is_postgres() {
        "ALTER TABLE audit_events DISABLE TRIGGER USER;"
    } else {
        "DROP TRIGGER IF EXISTS audit_events_no_update; \
         DROP TRIGGER IF EXISTS audit_events_no_delete;"
    };
    db.execute_batch(&format!("{around} {sql}")).unwrap();
}

/// `f` on a SQLite file of the real binary's, opened as an attacker with the file would.
fn on_file<T>(path: &Path, f: impl FnOnce(&Db<'_>) -> T) -> T {
    let conn = Connection::open(path).unwrap();
    f(&Db::Sqlite(&conn))
}

/// The row's canonical form, as the chain covers it (a JSON array of every column).
fn canonical(db: &Db<'_>, seq: i64) -> String {
    db.query_row(
        "SELECT seq, at, account_id, actor, action, target, source, details FROM audit_events \
         WHERE seq = ?1",
        [seq],
        |r| {
            let head = serde_json::to_string(&(
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
            .unwrap();
            let details: String = r.get(7)?;
            Ok(format!("{}, {details}]", &head[..head.len() - 1]))
        },
    )
    .unwrap()
}

/// Edits event `seq`'s details, then recomputes `prev_hash` and `hash` of it and every later
/// event as the unkeyed chain did (SHA-256): the best an attacker without the audit key can do.
fn rewrite_with_recomputed_hashes(db: &Db<'_>, seq: i64) {
    tamper(
        db,
        &format!("UPDATE audit_events SET details = '{{\"rewritten\":true}}' WHERE seq = {seq}"),
    );
    let last: i64 = db
        .query_row("SELECT max(seq) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    let mut prev: Vec<u8> = db
        .query_row(
            "SELECT prev_hash FROM audit_events WHERE seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .unwrap();
    for s in seq..=last {
        let mut h = Sha256::new();
        h.update(&prev);
        h.update(canonical(db, s).as_bytes());
        let hash = h.finalize().to_vec();
        db.execute(
            "UPDATE audit_events SET prev_hash = ?2, hash = ?3 WHERE seq = ?1",
            params![s, prev, hash],
        )
        .unwrap();
        prev = hash;
    }
}

#[tokio::test]
async fn the_checkpoint_publisher_anchors_new_events_and_refuses_a_cut_tail() {
    let app = TestApp::new();
    let mut publisher = checkpoints(&app);
    let head = |app: &TestApp| {
        app.state
            .store
            .read_blocking::<_, StoreError, _>(audit::head_point)
            .unwrap()
            .unwrap()
    };
    let first = head(&app);
    assert_eq!(
        publisher.run_once().await,
        CheckpointPass::Anchored(first.seq)
    );
    assert_eq!(anchored(&app).head, first.value);
    assert_eq!(publisher.run_once().await, CheckpointPass::Unchanged);
    app.create_key(json!({})).await;
    let second = head(&app);
    assert!(second.seq > first.seq);
    assert_eq!(
        publisher.run_once().await,
        CheckpointPass::Anchored(second.seq)
    );

    // The last two events cut off the end, then new ones appended over them.
    let cut = format!("DELETE FROM audit_events WHERE seq > {}", second.seq - 2);
    common::as_attacker(&app, move |db| tamper(db, &cut));
    assert!(matches!(
        publisher.run_once().await,
        CheckpointPass::Refused(e) if e.contains("truncated")
    ));
    app.create_key(json!({ "name": "after" })).await;
    app.create_key(json!({ "name": "after 2" })).await;
    assert!(matches!(
        publisher.run_once().await,
        CheckpointPass::Refused(_)
    ));
    // The anchor keeps the evidence: a fresh publisher (a restart) reads it back and refuses too.
    assert_eq!(anchored(&app).seq, second.seq);
    let mut restarted = checkpoints(&app);
    assert!(matches!(
        restarted.run_once().await,
        CheckpointPass::Refused(_)
    ));
    let anchor = anchored(&app);
    let verdict = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(move |c| {
            Ok(audit::verify_chain(c, &audit_keyring(), Some(&anchor)))
        })
        .unwrap();
    assert_eq!(verdict, Err(ChainError::Diverged { seq: second.seq }));
}

#[tokio::test]
async fn rows_rewritten_after_a_checkpoint_are_refused_before_the_next() {
    let app = TestApp::new();
    let mut publisher = checkpoints(&app);
    assert!(matches!(
        publisher.run_once().await,
        CheckpointPass::Anchored(_)
    ));
    let anchored_seq = anchored(&app).seq;
    app.create_key(json!({})).await;
    app.create_key(json!({ "name": "second" })).await;
    let seq = i64::try_from(anchored_seq).unwrap() + 1;
    common::as_attacker(&app, move |db| rewrite_with_recomputed_hashes(db, seq));
    assert!(matches!(
        publisher.run_once().await,
        CheckpointPass::Refused(e) if e.contains("edited")
    ));
    assert_eq!(anchored(&app).seq, anchored_seq);
}

// ---- The real binary ----

const BIN: &str = env!("CARGO_BIN_EXE_control");

fn keyring_text() -> String {
    shared::testkit::KEYRING.to_owned()
}

type Stored = Arc<Mutex<Option<Vec<u8>>>>;

/// A stand-in for the edge: takes revocation and limits pushes, and keeps the audit checkpoint
/// as the worker does (a signed push replaces it only with a later event; a signed read gets it
/// back as `{"checkpoint": "<hex>"}`).
async fn fake_edge() -> (String, Stored) {
    let stored: Stored = Arc::default();
    async fn accept() -> StatusCode {
        StatusCode::NO_CONTENT
    }
    async fn put_checkpoint(
        State(stored): State<Stored>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let ring = Keyring::from_config(&keyring_text()).unwrap();
        let now = common_now();
        let Some(sig) = headers.get("lynxo-signature").and_then(|v| v.to_str().ok()) else {
            return StatusCode::UNAUTHORIZED;
        };
        if shared::audit::verify_push(&ring, sig, &body, now, 300).is_err() {
            return StatusCode::UNAUTHORIZED;
        }
        let Ok(pushed) = Checkpoint::parse_unverified(&body) else {
            return StatusCode::UNPROCESSABLE_ENTITY;
        };
        let mut held = stored.lock().unwrap();
        if let Some(old) = held
            .as_deref()
            .and_then(|b| Checkpoint::parse_unverified(b).ok())
        {
            if pushed.seq <= old.seq && held.as_deref() != Some(&body[..]) {
                return StatusCode::CONFLICT;
            }
        }
        *held = Some(body.to_vec());
        StatusCode::NO_CONTENT
    }
    async fn get_checkpoint(State(stored): State<Stored>, headers: HeaderMap) -> impl IntoResponse {
        let ring = Keyring::from_config(&keyring_text()).unwrap();
        let sig = headers
            .get("lynxo-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if shared::audit::verify_read(&ring, sig, common_now(), 300).is_err() {
            return (StatusCode::UNAUTHORIZED, String::new());
        }
        match stored.lock().unwrap().as_deref() {
            Some(b) => (
                StatusCode::OK,
                json!({ "checkpoint": hex::encode(b) }).to_string(),
            ),
            None => (StatusCode::NOT_FOUND, String::new()),
        }
    }
    let app = Router::new()
        .route("/_lynxo/sync/revocations/{shard}", put(accept))
        .route("/_lynxo/sync/limits", put(accept))
        .route(
            "/_lynxo/sync/audit-checkpoint",
            put(put_checkpoint).get(get_checkpoint),
        )
        .with_state(stored.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, stored)
}

fn common_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn control(args: &[&str], db: &Path, edge: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--database")
        .arg(db)
        .env("LYNXO_KEYRING", keyring_text())
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("LYNXO_HEARTBEAT_SECS", "1")
        .env("LYNXO_LIST_LIFETIME_SECS", "10")
        .env("LYNXO_INIT_PASSWORD", "a long enough password")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    if let Some(edge) = edge {
        cmd.env("LYNXO_EDGE_SYNC_URL", edge);
    }
    cmd
}

/// `verify-audit` on `db` against the edge: (success, what it printed).
fn verify_audit(db: &Path, edge: &str) -> (bool, String) {
    let out = control(&["verify-audit"], db, Some(edge)).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A copy of the database (WAL folded in first), for one tampering each.
fn copy_of(db: &Path, name: &str) -> std::path::PathBuf {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(conn);
    let copy = db.with_file_name(name);
    std::fs::copy(db, &copy).unwrap();
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_audit_catches_rewritten_and_truncated_rows_against_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("control.sqlite3");
    let init = control(&["init", "--email", "ops@example.com"], &db, None)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let stdout = String::from_utf8(init.stdout).unwrap();
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("management_token="))
        .unwrap()
        .to_owned();
    let (edge, stored) = fake_edge().await;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = dir.path().join("serve.log");
    let service = Service(
        control(&["serve", "--listen", &addr.to_string()], &db, Some(&edge))
            .env("RUST_LOG", "debug")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("serve.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.get(&format!("http://{addr}/readyz")).call().is_err() {
        assert!(Instant::now() < deadline, "service did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..3 {
        let body = json!({ "name": format!("k{i}"), "environment": "production", "permission": "read_only" });
        let r = agent
            .post(&format!("http://{addr}/v1/keys"))
            .header("authorization", &format!("Bearer {token}"))
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // Every event anchored: the checkpoint reaches the head (one heartbeat a second here).
    let head = |db: &Path| -> i64 {
        Connection::open(db)
            .unwrap()
            .query_row("SELECT max(seq) FROM audit_events", [], |r| r.get(0))
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let anchored_seq = loop {
        let held = stored.lock().unwrap().clone();
        let seq = held
            .and_then(|b| Checkpoint::parse_unverified(&b).ok())
            .map_or(0, |c| i64::try_from(c.seq).unwrap());
        if seq > 0 && seq == head(&db) {
            break seq;
        }
        if Instant::now() > deadline {
            eprintln!("no checkpoint of the head after 10 s (held seq {seq})");
            break seq;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(service);

    let (ok, text) = verify_audit(&db, &edge);
    assert!(ok, "the untouched trail verifies: {text}");

    let rewritten = copy_of(&db, "rewritten.sqlite3");
    on_file(&rewritten, |db| rewrite_with_recomputed_hashes(db, 2));
    let (ok, text) = verify_audit(&rewritten, &edge);
    assert!(
        !ok,
        "a row rewritten with every hash recomputed passed: {text}"
    );
    assert!(text.contains("audit event 2"), "{text}");

    let truncated = copy_of(&db, "truncated.sqlite3");
    let cut = format!(
        "DELETE FROM audit_events WHERE seq > {}",
        head(&truncated) - 2
    );
    on_file(&truncated, |db| tamper(db, &cut));
    let (ok, text) = verify_audit(&truncated, &edge);
    assert!(!ok, "two rows cut off the end passed: {text}");
    assert!(text.contains("truncated"), "{text}");

    assert!(anchored_seq > 0, "serve anchored no checkpoint at the edge");

    // The audit secret is nowhere the database's reader, the edge or the log's reader would
    // find it: not in the file, its WAL, the log, or what the edge holds.
    let secret_hex = AUDIT_KEYRING.rsplit(':').next().unwrap().to_owned();
    let secret = hex::decode(&secret_hex).unwrap();
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    for name in [
        "control.sqlite3",
        "control.sqlite3-wal",
        "serve.log",
        "serve.err",
    ] {
        if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
            places.push((name.to_owned(), bytes));
        }
    }
    places.push(("edge".into(), stored.lock().unwrap().clone().unwrap()));
    for (name, bytes) in &places {
        for needle in [secret.as_slice(), secret_hex.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the audit secret is in {name}"
            );
        }
    }
    assert!(
        places.len() >= 4,
        "{:?}",
        places.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
}
