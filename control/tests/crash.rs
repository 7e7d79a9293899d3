//! Crash test: the real binary is killed with SIGKILL while 32 clients create and revoke keys.
//! After a restart on the same database (a SQLite file, or PostgreSQL when the suite runs on
//! it), every acknowledged create and revoke is there, the audit chain verifies, and the outbox
//! pushes every acknowledged revocation to a (fake) edge sync endpoint, whose pushes are checked
//! with the real signature and shard verification.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use common::{Service, agent, free_port, try_send};
use serde_json::json;
use shared::envelope;
use shared::key::KeyId;
use shared::mac::{Keyring, Purpose};
use shared::revocation::RevocationShard;

const BIN: &str = env!("CARGO_BIN_EXE_control");
const CLIENTS: usize = 32;
const OPERATIONS: usize = 1000;

fn keyring_text() -> String {
    shared::testkit::KEYRING.to_owned()
}

/// The audit keyring: the chain's own secret.
fn audit_keyring_text() -> String {
    shared::testkit::AUDIT_KEYRING.to_owned()
}

fn start(db: &Path, port: u16, edge: &str) -> Service {
    let child = Command::new(BIN)
        .args(["serve", "--shard-count", "4", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(db)
        .args(["--edge-sync-url", edge])
        .env("LYNXO_KEYRING", keyring_text())
        .env("LYNXO_AUDIT_KEYRING", audit_keyring_text())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let service = Service(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("http://127.0.0.1:{port}/readyz"))
        .call()
        .is_err()
    {
        assert!(Instant::now() < deadline, "service did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    service
}

type Pushed = Arc<Mutex<HashMap<u16, Vec<u8>>>>;

/// A stand-in for the edge's sync endpoint: checks the signature and the shard, keeps the newest.
async fn fake_edge() -> (String, Pushed) {
    let pushed: Pushed = Arc::default();
    async fn receive(
        State(pushed): State<Pushed>,
        UrlPath(shard): UrlPath<u16>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let ring = Keyring::from_config(&keyring_text()).unwrap();
        let signature = headers["lynxo-signature"].to_str().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let index = shard.to_string();
        if envelope::verify(
            &ring,
            Purpose::Sync,
            signature,
            &[b"revocations", index.as_bytes(), &body],
            now,
            300,
        )
        .is_err()
        {
            return StatusCode::UNAUTHORIZED;
        }
        let Ok(opened) = RevocationShard::open(&body, &ring) else {
            return StatusCode::UNPROCESSABLE_ENTITY;
        };
        let mut map = pushed.lock().unwrap();
        if let Some(old) = map.get(&shard) {
            let old = RevocationShard::open(old, &ring).unwrap();
            if opened.header().version < old.header().version {
                return StatusCode::CONFLICT;
            }
        }
        map.insert(shard, body.to_vec());
        StatusCode::NO_CONTENT
    }
    // The publisher reads each shard back before its first write (so a restored database never
    // un-revokes what the edge holds): answer with what was stored, as the worker does.
    async fn read_back(
        State(pushed): State<Pushed>,
        UrlPath(shard): UrlPath<u16>,
        headers: HeaderMap,
    ) -> Result<String, StatusCode> {
        let ring = Keyring::from_config(&keyring_text()).unwrap();
        let signature = headers["lynxo-signature"].to_str().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        shared::revocation::verify_read(&ring, signature, shard, now, 300)
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        let map = pushed.lock().unwrap();
        let stored = map.get(&shard).ok_or(StatusCode::NOT_FOUND)?;
        Ok(serde_json::json!({ "shard": hex::encode(stored) }).to_string())
    }
    let app = Router::new()
        .route(
            "/_lynxo/sync/revocations/{shard}",
            put(receive).get(read_back),
        )
        .with_state(pushed.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, pushed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_revocations_are_republished() {
    let dir = tempfile::tempdir().unwrap();
    // SQLite, or a PostgreSQL database of its own when the suite runs on PostgreSQL.
    let db = common::test_database(dir.path());
    let init = Command::new(BIN)
        .args(["init", "--email", "ops@example.com", "--database"])
        .arg(&db)
        .env("LYNXO_INIT_PASSWORD", "a long enough password")
        .env("LYNXO_AUDIT_KEYRING", audit_keyring_text())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(init.status.success());
    let stdout = String::from_utf8(init.stdout).unwrap();
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("management_token="))
        .unwrap()
        .to_owned();
    let (edge, pushed) = fake_edge().await;
    let port = free_port();
    let mut service = start(&db, port, &edge);
    let base = format!("http://127.0.0.1:{port}");

    // 32 clients, each creating a key and then revoking it, until 1000 operations are issued.
    let issued = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let created: Arc<Mutex<HashSet<String>>> = Arc::default();
    let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (issued, acked, stop) = (issued.clone(), acked.clone(), stop.clone());
            let (created, revoked) = (created.clone(), revoked.clone());
            let (base, token) = (base.clone(), token.clone());
            std::thread::spawn(move || {
                let agent = agent();
                while !stop.load(Ordering::SeqCst) && issued.fetch_add(2, Ordering::SeqCst) < OPERATIONS {
                    let body = json!({ "name": format!("c{c}"), "environment": "production", "permission": "read_only" });
                    let Some((201, key)) = try_send(&agent, &format!("{base}/v1/keys"), &token, Some(body)) else {
                        return;
                    };
                    let id = key["id"].as_str().unwrap().to_owned();
                    created.lock().unwrap().insert(id.clone());
                    acked.fetch_add(1, Ordering::SeqCst);
                    let url = format!("{base}/v1/keys/{id}/revoke");
                    let Some((200, _)) = try_send(&agent, &url, &token, Some(json!({ "reason": "crash test" }))) else {
                        return;
                    };
                    revoked.lock().unwrap().insert(id);
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Kill -9 in the middle of the run.
    while acked.load(Ordering::SeqCst) < OPERATIONS / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    service.0.kill().unwrap();
    service.0.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let created = created.lock().unwrap().clone();
    let revoked = revoked.lock().unwrap().clone();
    eprintln!(
        "killed after {} acknowledged creates and {} acknowledged revokes",
        created.len(),
        revoked.len()
    );
    assert!(created.len() >= OPERATIONS / 6, "{}", created.len());

    let _service = start(&db, port, &edge);
    let agent = agent();
    let (status, list) =
        try_send(&agent, &format!("{base}/v1/keys?limit=1000"), &token, None).unwrap();
    assert_eq!(status, 200);
    let stored: HashMap<String, String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_owned(),
                k["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for id in &created {
        assert!(stored.contains_key(id), "acknowledged create {id} lost");
    }
    for id in &revoked {
        assert_eq!(stored[id], "revoked", "acknowledged revoke {id} lost");
    }
    let verify = Command::new(BIN)
        .args(["verify-audit", "--database"])
        .arg(&db)
        .env("LYNXO_AUDIT_KEYRING", audit_keyring_text())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Every acknowledged revocation reaches the edge.
    let wanted: Vec<KeyId> = revoked
        .iter()
        .map(|id| KeyId::parse_hex(id).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = common::unpublished(&pushed.lock().unwrap(), &wanted, 4);
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} revocations never published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
