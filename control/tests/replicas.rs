//! The control plane on PostgreSQL, as an operator runs it: the real binary's `serve` on a
//! `postgres://` database of a private server (`e2e::postgres::Server`), publishing to a
//! stand-in edge that checks every push's signature and shard as the worker does; then the
//! publishers' lease between two stores on one database; then two replicas under load, one of
//! them killed (docs/postgres.md, "Running on PostgreSQL").

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use common::{AUDIT_KEYRING, Service, agent, free_port, try_send};
use control::store::Store;
use e2e::postgres::Server;
use serde_json::{Value, json};
use shared::audit::{AuditKeyring, Checkpoint};
use shared::key::KeyId;
use shared::mac::Keyring;
use shared::revocation::RevocationShard;

const BIN: &str = env!("CARGO_BIN_EXE_control");
const SHARDS: u16 = 4;

fn ring() -> Keyring {
    Keyring::from_config(shared::testkit::KEYRING).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What the stand-in edge received and holds.
#[derive(Default)]
struct Edge {
    /// The shard it holds, per index.
    shards: HashMap<u16, Vec<u8>>,
    /// Every signed shard push's version, per index, in the order received.
    versions: BTreeMap<u16, Vec<u64>>,
    /// Pushes answered 409 (older than the shard held).
    refused: usize,
    /// Limits pushes taken.
    limits_pushes: usize,
    /// The audit checkpoint it holds, and how many were stored.
    checkpoint: Option<Vec<u8>>,
    checkpoints: usize,
    /// Through which door (one URL per replica) each signed push came, in order: shards,
    /// limits and checkpoints alike.
    pushers: Vec<usize>,
}

type Shared = Arc<Mutex<Edge>>;
/// The edge's state, and the door a request came through.
type Door = State<(Shared, usize)>;

/// A sync request's `Lynxo-Signature`.
fn signature(headers: &HeaderMap) -> Result<&str, StatusCode> {
    headers
        .get("lynxo-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or(StatusCode::UNAUTHORIZED)
}

/// A stand-in for the worker's sync endpoints, on its own runtime: revocation shards (signed
/// push and read back; an older version than the one held is refused with 409, as the worker
/// does), limits pushes (signed) and the audit checkpoint (signed push and read; an older event
/// is refused). It has `doors` URLs, one per replica, to tell which replica pushed what.
fn stand_in_edge(doors: usize) -> (Vec<String>, Shared) {
    async fn receive(
        State((edge, door)): Door,
        UrlPath(shard): UrlPath<u16>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let ring = ring();
        let Ok(signature) = signature(&headers) else {
            return StatusCode::UNAUTHORIZED;
        };
        if shared::revocation::verify_push(&ring, signature, shard, &body, now(), 300).is_err() {
            return StatusCode::UNAUTHORIZED;
        }
        let Ok(opened) = RevocationShard::open(&body, &ring) else {
            return StatusCode::UNPROCESSABLE_ENTITY;
        };
        let version = opened.header().version;
        let mut edge = edge.lock().unwrap();
        edge.pushers.push(door);
        edge.versions.entry(shard).or_default().push(version);
        if let Some(held) = edge.shards.get(&shard) {
            if version < RevocationShard::open(held, &ring).unwrap().header().version {
                edge.refused += 1;
                return StatusCode::CONFLICT;
            }
        }
        edge.shards.insert(shard, body.to_vec());
        StatusCode::NO_CONTENT
    }
    async fn read_back(
        State((edge, _)): Door,
        UrlPath(shard): UrlPath<u16>,
        headers: HeaderMap,
    ) -> Result<String, StatusCode> {
        let signature = signature(&headers)?;
        shared::revocation::verify_read(&ring(), signature, shard, now(), 300)
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        let edge = edge.lock().unwrap();
        let held = edge.shards.get(&shard).ok_or(StatusCode::NOT_FOUND)?;
        Ok(json!({ "shard": hex::encode(held) }).to_string())
    }
    async fn limits(State((edge, door)): Door, headers: HeaderMap, body: Bytes) -> StatusCode {
        let Ok(signature) = signature(&headers) else {
            return StatusCode::UNAUTHORIZED;
        };
        if shared::limits::verify_push(&ring(), signature, &body, now(), 300).is_err() {
            return StatusCode::UNAUTHORIZED;
        }
        if serde_json::from_slice::<shared::limits::LimitPush>(&body).is_err() {
            return StatusCode::UNPROCESSABLE_ENTITY;
        }
        let mut edge = edge.lock().unwrap();
        edge.pushers.push(door);
        edge.limits_pushes += 1;
        StatusCode::NO_CONTENT
    }
    async fn store_checkpoint(
        State((edge, door)): Door,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let Ok(signature) = signature(&headers) else {
            return StatusCode::UNAUTHORIZED;
        };
        if shared::audit::verify_push(&ring(), signature, &body, now(), 300).is_err() {
            return StatusCode::UNAUTHORIZED;
        }
        let audit = AuditKeyring::from_config(AUDIT_KEYRING).unwrap();
        let Ok(pushed) = Checkpoint::open(&body, &audit) else {
            return StatusCode::UNPROCESSABLE_ENTITY;
        };
        let mut edge = edge.lock().unwrap();
        edge.pushers.push(door);
        if let Some(held) = &edge.checkpoint {
            if pushed.seq < Checkpoint::open(held, &audit).unwrap().seq {
                return StatusCode::CONFLICT;
            }
        }
        edge.checkpoint = Some(body.to_vec());
        edge.checkpoints += 1;
        StatusCode::NO_CONTENT
    }
    async fn read_checkpoint(
        State((edge, _)): Door,
        headers: HeaderMap,
    ) -> Result<String, StatusCode> {
        let signature = signature(&headers)?;
        shared::audit::verify_read(&ring(), signature, now(), 300)
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        let edge = edge.lock().unwrap();
        let held = edge.checkpoint.as_ref().ok_or(StatusCode::NOT_FOUND)?;
        let audit = AuditKeyring::from_config(AUDIT_KEYRING).unwrap();
        let opened = Checkpoint::open(held, &audit).unwrap();
        Ok(
            json!({ "checkpoint": hex::encode(held), "seq": opened.seq, "at": opened.at })
                .to_string(),
        )
    }
    let edge: Shared = Arc::default();
    let mut urls = Vec::new();
    let mut apps = Vec::new();
    for door in 0..doors {
        let app = Router::new()
            .route(
                "/_lynxo/sync/revocations/{shard}",
                put(receive).get(read_back),
            )
            .route(shared::limits::SYNC_PATH, put(limits))
            .route(
                shared::audit::SYNC_PATH,
                put(store_checkpoint).get(read_checkpoint),
            )
            .with_state((edge.clone(), door));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        apps.push((listener, app));
    }
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut served = tokio::task::JoinSet::new();
            for (listener, app) in apps {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                served.spawn(async move { axum::serve(listener, app).await.unwrap() });
            }
            served.join_all().await;
        });
    });
    (urls, edge)
}

/// A private server with one empty database, `lynxo`, and its URL.
fn postgres() -> (Server, String) {
    let server = Server::start();
    let url = server.create_database("lynxo");
    (server, url)
}

/// `control serve` on `database`, publishing to `edge`, returned once ready; its log goes to
/// `log`.
fn serve(database: &str, port: u16, edge: &str, log: &std::path::Path) -> Service {
    let child = Command::new(BIN)
        .args(["serve", "--shard-count", &SHARDS.to_string(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--database", database, "--edge-sync-url", edge])
        .env("LYNXO_KEYRING", shared::testkit::KEYRING)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("RUST_LOG", "warn,control=info")
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut service = Service(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ureq::get(&format!("http://127.0.0.1:{port}/readyz"))
        .call()
        .is_err()
    {
        if let Some(status) = service.0.try_wait().unwrap() {
            panic!(
                "serve exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "serve did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    service
}

fn new_key(n: usize) -> Value {
    json!({ "name": format!("k{n}"), "environment": "production", "permission": "read_only" })
}

/// `control verify-audit` on `database`, anchored at `edge`: its output, asserting success.
fn verify_audit(database: &str, edge: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "verify-audit",
            "--database",
            database,
            "--edge-sync-url",
            edge,
        ])
        .env("LYNXO_KEYRING", shared::testkit::KEYRING)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "verify-audit failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits until every key of `revoked` is in the shard of its index the edge holds.
fn wait_published(edge: &Shared, revoked: &HashSet<String>) {
    let wanted: Vec<KeyId> = revoked
        .iter()
        .map(|id| KeyId::parse_hex(id).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = common::unpublished(&edge.lock().unwrap().shards, &wanted, SHARDS);
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} revocations never reached the edge"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No shard's versions went backwards at the edge, in the order it received them.
fn assert_versions_never_went_backwards(edge: &Shared) {
    let edge = edge.lock().unwrap();
    for (shard, versions) in &edge.versions {
        for pair in versions.windows(2) {
            assert!(
                pair[0] <= pair[1],
                "shard {shard} went from version {} back to {}",
                pair[0],
                pair[1]
            );
        }
    }
    assert_eq!(edge.refused, 0, "the edge refused older shards");
}

/// `control serve --database postgres://...`: keys created, listed and revoked over HTTP, the
/// revocation published to the edge, the audit chain verified and anchored there.
#[test]
fn serve_runs_on_a_postgres_database() {
    let (server, url) = postgres();
    let token = common::init_binary_as(std::path::Path::new(&url), "ops@example.com");
    let (edge, held) = stand_in_edge(1);
    let edge = &edge[0];
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _service = serve(&url, port, edge, &dir.path().join("serve.log"));
    let base = format!("http://127.0.0.1:{port}");
    let agent = agent();

    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, key) = try_send(&agent, &format!("{base}/v1/keys"), &token, Some(new_key(n)))
            .expect("an answer");
        assert_eq!(status, 201, "{key}");
        assert!(key["key"].as_str().unwrap().starts_with("lnx_live_"));
        ids.push(key["id"].as_str().unwrap().to_owned());
    }
    let (status, list) = try_send(&agent, &format!("{base}/v1/keys"), &token, None).unwrap();
    assert_eq!(status, 200);
    let listed: HashSet<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids.iter().cloned().collect());
    let revoke = format!("{base}/v1/keys/{}/revoke", ids[0]);
    let (status, revoked) =
        try_send(&agent, &revoke, &token, Some(json!({ "reason": "test" }))).unwrap();
    assert_eq!(
        (status, &revoked["changed"]),
        (200, &json!(true)),
        "{revoked}"
    );
    let (status, again) =
        try_send(&agent, &revoke, &token, Some(json!({ "reason": "test" }))).unwrap();
    assert_eq!((status, &again["changed"]), (200, &json!(false)), "{again}");
    let (status, key) =
        try_send(&agent, &format!("{base}/v1/keys/{}", ids[0]), &token, None).unwrap();
    assert_eq!((status, key["status"].as_str()), (200, Some("revoked")));

    wait_published(&held, &HashSet::from([ids[0].clone()]));
    assert_versions_never_went_backwards(&held);
    // The checkpoint is anchored at start (every heartbeat after): verify-audit reads it back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while held.lock().unwrap().checkpoint.is_none() {
        assert!(Instant::now() < deadline, "no audit checkpoint anchored");
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = verify_audit(&url, edge);
    assert!(report.contains("audit chain intact"), "{report}");
    assert!(report.contains("anchored:"), "{report}");
    // No lock file was made for a URL (it would be `postgres:/...lock` under the working dir).
    assert!(!std::path::Path::new("postgres:").exists());

    // A database that cannot be opened: a clear error, and the URL's password is not in it.
    let missing = format!(
        "postgres://lynxo:s3cret@127.0.0.1:{}/missing",
        server.port()
    );
    let out = Command::new(BIN)
        .args(["serve", "--no-publish", "--database", &missing, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("LYNXO_KEYRING", shared::testkit::KEYRING)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("opening postgres://lynxo:***@127.0.0.1:"),
        "{said}"
    );
    assert!(!said.contains("s3cret"), "{said}");
}

/// The publishers' lease: of two stores on one database, one holds it; it stays held while its
/// connection lives; when that store is gone (its session ends, as when a replica dies) the
/// other takes it at its next try. On SQLite it is always held.
#[test]
fn one_store_at_a_time_holds_the_publisher_lease() {
    let (_server, url) = postgres();
    let audit = common::audit_keyring();
    let a = Store::open(std::path::Path::new(&url), audit.clone()).unwrap();
    let b = Store::open(std::path::Path::new(&url), audit.clone()).unwrap();
    let (lease_a, lease_b) = (a.publisher_lease(), b.publisher_lease());
    assert!(lease_a.hold_blocking().unwrap(), "a free lease is taken");
    assert!(!lease_b.hold_blocking().unwrap(), "held by the other");
    assert!(lease_a.hold_blocking().unwrap(), "still held");
    assert!(!lease_b.hold_blocking().unwrap(), "still the other's");
    // A clone shares the lease; a second lease of the same store competes like a replica.
    assert!(lease_a.clone().hold_blocking().unwrap());
    assert!(!a.publisher_lease().hold_blocking().unwrap());
    assert_eq!(lease_a.poll(), Some(control::store::SHARED_POLL));

    // The holder goes away without releasing anything: its session ends and the lock with it.
    drop(lease_a);
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lease_b.hold_blocking().unwrap() {
        assert!(Instant::now() < deadline, "the lease was never handed over");
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = Store::open(std::path::Path::new(&url), audit.clone()).unwrap();
    assert!(
        !c.publisher_lease().hold_blocking().unwrap(),
        "b holds it now"
    );
    assert!(lease_b.hold_blocking().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("c.sqlite3"), audit).unwrap();
    let (one, two) = (sqlite.publisher_lease(), sqlite.publisher_lease());
    assert!(one.hold_blocking().unwrap() && two.hold_blocking().unwrap());
    assert_eq!(one.poll(), None);
}

/// Concurrent clients of the two-replica test, and the operations each issues per phase.
const CLIENTS: usize = 64;
const OPS_PER_CLIENT: usize = 24;
/// Keys a client keeps working at once: 32 clients per account want 96, over the cap of 50.
const KEYS_PER_CLIENT: usize = 3;
/// The plan's cap on an account's working keys (`plans.max_active_keys` of `standard`).
const CAP: i64 = 50;
/// The publishers' lock key ("Lynx" and 3), as `pg_locks` shows a bigint advisory key.
const PUBLISH_LOCK_HIGH: u32 = 0x4c79_6e78;
const PUBLISH_LOCK_LOW: u32 = 3;

/// What the clients were told, and what went wrong.
#[derive(Default)]
struct Acked {
    /// Keys whose create (or rotation, for the new key) was answered 201.
    created: HashSet<String>,
    /// Keys whose revocation (or rotation with no grace, for the old key) was answered 2xx.
    revoked: HashSet<String>,
    /// Requests answered, by replica, and those answered after the kill.
    answered: [usize; 2],
    answered_after_kill: usize,
    /// Requests without an answer (or a 5xx) from the killed replica.
    lost_with_the_killed: usize,
    /// Anything else: a failure of a live replica, an unexpected status.
    unexpected: Vec<String>,
    /// Clients that have issued all their operations.
    finished: usize,
    creates: usize,
    rotations: usize,
    revokes: usize,
    at_cap: usize,
}

/// No replica has been killed.
const NONE_KILLED: usize = usize::MAX;

/// One client: keeps up to [`KEYS_PER_CLIENT`] keys of its account, creating, rotating (no
/// grace) and revoking them through replica `c % 2`, or the other once its own is killed.
fn client(
    c: usize,
    bases: &[String; 2],
    token: &str,
    killed: &std::sync::atomic::AtomicUsize,
    acked: &Mutex<Acked>,
) {
    use std::sync::atomic::Ordering;
    let agent = agent();
    let mut owned: Vec<String> = Vec::new();
    let mut replica = c % 2;
    let mut make_room = false;
    for n in 0..OPS_PER_CLIENT {
        if killed.load(Ordering::SeqCst) == replica {
            replica = 1 - replica;
        }
        let base = &bases[replica];
        // Half creates (up to the client's share), a quarter rotations, a quarter revocations;
        // a revocation next after a create refused at the cap.
        let create = owned.is_empty() || (n % 2 == 0 && owned.len() < KEYS_PER_CLIENT);
        let (kind, url, body) = if create && !make_room {
            ("create", format!("{base}/v1/keys"), new_key(c * 1000 + n))
        } else if n % 4 == 1 && !make_room {
            let url = format!("{base}/v1/keys/{}/rotate", owned[0]);
            ("rotate", url, json!({ "grace_period_seconds": 0 }))
        } else {
            let url = format!("{base}/v1/keys/{}/revoke", owned[0]);
            ("revoke", url, json!({ "reason": "replica test" }))
        };
        make_room = false;
        let answer = try_send(&agent, &url, token, Some(body));
        let killed_now = killed.load(Ordering::SeqCst);
        let mut acked = acked.lock().unwrap();
        let (status, value) = match answer {
            Some((status, value)) if status < 500 => (status, value),
            other => {
                if killed_now == replica {
                    acked.lost_with_the_killed += 1;
                } else {
                    acked
                        .unexpected
                        .push(format!("{kind} on live replica {replica}: {other:?}"));
                }
                // Its outcome is unknown: the key is neither counted as created nor revoked.
                if kind != "create" {
                    owned.remove(0);
                }
                continue;
            }
        };
        acked.answered[replica] += 1;
        if killed_now != NONE_KILLED {
            acked.answered_after_kill += 1;
        }
        match (kind, status) {
            ("create", 201) => {
                let id = value["id"].as_str().unwrap().to_owned();
                acked.created.insert(id.clone());
                acked.creates += 1;
                owned.push(id);
            }
            ("rotate", 201) => {
                let old = owned.remove(0);
                let new = value["key"]["id"].as_str().unwrap().to_owned();
                assert_eq!(value["previous"]["id"].as_str(), Some(old.as_str()));
                acked.revoked.insert(old);
                acked.created.insert(new.clone());
                acked.rotations += 1;
                owned.push(new);
            }
            ("revoke", 200) => {
                acked.revoked.insert(owned.remove(0));
                acked.revokes += 1;
            }
            (_, 409) if value["code"] == "active_key_limit_reached" => {
                acked.at_cap += 1;
                // Make room: the next operation gives back the oldest key this client holds.
                make_room = !owned.is_empty();
            }
            _ => acked
                .unexpected
                .push(format!("{kind} on replica {replica}: {status} {value}")),
        }
    }
    acked.lock().unwrap().finished += 1;
}

/// Runs [`CLIENTS`] clients to the end; `during` runs on this thread meanwhile.
fn load(
    bases: &[String; 2],
    tokens: &[String; 2],
    killed: &Arc<std::sync::atomic::AtomicUsize>,
    acked: &Arc<Mutex<Acked>>,
    during: impl FnOnce(),
) {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (bases, token) = (bases.clone(), tokens[(c / 2) % 2].clone());
            let (killed, acked) = (Arc::clone(killed), Arc::clone(acked));
            std::thread::spawn(move || client(c, &bases, &token, &killed, &acked))
        })
        .collect();
    during();
    for c in clients {
        c.join().unwrap();
    }
}

/// The working keys of each account after every commit, replayed from the audit trail in its
/// order (one chain, in commit order across replicas): `key.created` adds one, `key.revoked`
/// takes one away, a rotation with no grace neither. Returns each account's highest count and
/// its count at the end.
fn working_keys_replayed(server: &Server) -> BTreeMap<i64, (i64, i64)> {
    let rows = server.psql(
        "lynxo",
        "SELECT account_id, action FROM audit_events \
         WHERE action IN ('key.created', 'key.revoked', 'key.rotated') ORDER BY seq",
    );
    let mut counts: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for row in rows.lines().filter(|l| !l.is_empty()) {
        let (account, action) = row.split_once('|').unwrap();
        let entry = counts.entry(account.parse().unwrap()).or_default();
        match action {
            "key.created" => entry.1 += 1,
            "key.revoked" => entry.1 -= 1,
            _ => {}
        }
        entry.0 = entry.0.max(entry.1);
    }
    counts
}

/// Checks the cap from the database: never more than [`CAP`] working keys per account after any
/// commit, the cap reached, and the replay's end equal to the keys table.
fn assert_cap_held(server: &Server) -> i64 {
    let replayed = working_keys_replayed(server);
    let table: BTreeMap<i64, i64> = server
        .psql(
            "lynxo",
            "SELECT account_id, count(*) FROM api_keys WHERE revoked_at IS NULL \
             GROUP BY account_id",
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (a, n) = l.split_once('|').unwrap();
            (a.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    let mut highest = 0;
    for (account, (max, end)) in &replayed {
        assert!(*max <= CAP, "account {account} had {max} working keys");
        assert_eq!(
            table.get(account).copied().unwrap_or(0),
            *end,
            "account {account}"
        );
        highest = highest.max(*max);
    }
    assert_eq!(
        highest, CAP,
        "the load never reached the cap: it tested nothing"
    );
    highest
}

/// The replica whose session holds the publishers' lock (`application_name` of its URL).
fn lease_holder(server: &Server) -> usize {
    let holder = server.psql(
        "lynxo",
        &format!(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {PUBLISH_LOCK_HIGH} \
             AND l.objid = {PUBLISH_LOCK_LOW} AND l.objsubid = 1"
        ),
    );
    match holder.trim() {
        "replica0" => 0,
        "replica1" => 1,
        other => panic!("the publisher lease is held by {other:?}"),
    }
}

/// The acceptance: two `serve` replicas on one PostgreSQL database, 64 clients spread
/// over both creating, rotating and revoking keys of the same two accounts. The cap holds
/// exactly, the audit chain verifies (anchored at the edge), every revocation reaches the edge
/// and no shard version goes backwards there. Then the replica holding the publisher lease is
/// killed with SIGKILL mid-load: the other keeps answering, takes over publishing, and every
/// acknowledged create and revoke is in the database.
#[test]
fn two_replicas_on_one_database_keep_every_guarantee_and_survive_a_sigkill() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let started = Instant::now();
    let (server, url) = postgres();
    let tokens = [
        common::init_binary_as(std::path::Path::new(&url), "ops@example.com"),
        common::init_binary_as(std::path::Path::new(&url), "ops2@example.com"),
    ];
    let (doors, held) = stand_in_edge(2);
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let mut replicas: Vec<Option<Service>> = (0..2)
        .map(|i| {
            let database = format!("{url}?application_name=replica{i}");
            let log = dir.path().join(format!("replica{i}.log"));
            Some(serve(&database, ports[i], &doors[i], &log))
        })
        .collect();
    let bases = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let killed = Arc::new(AtomicUsize::new(NONE_KILLED));
    let acked = Arc::new(Mutex::new(Acked::default()));

    // Both replicas under load.
    load(&bases, &tokens, &killed, &acked, || {});
    let first = started.elapsed();
    {
        let acked = acked.lock().unwrap();
        assert!(acked.unexpected.is_empty(), "{:#?}", acked.unexpected);
        assert!(
            acked.answered.iter().all(|&n| n > 0),
            "{:?}",
            acked.answered
        );
    }
    assert_cap_held(&server);
    verify_audit(&url, &doors[0]);
    wait_published(&held, &acked.lock().unwrap().revoked.clone());
    assert_versions_never_went_backwards(&held);
    // One replica published everything: the one holding the lease.
    let holder = lease_holder(&server);
    {
        let edge = held.lock().unwrap();
        assert!(!edge.pushers.is_empty());
        assert!(
            edge.pushers.iter().all(|&p| p == holder),
            "both replicas published: {:?}",
            edge.pushers
        );
    }

    // Again, and the replica that publishes is killed a third of the way in.
    let (before, finished) = {
        let a = acked.lock().unwrap();
        (a.answered[0] + a.answered[1], a.finished)
    };
    load(&bases, &tokens, &killed, &acked, || {
        let target = before + CLIENTS * OPS_PER_CLIENT / 3;
        while {
            let a = acked.lock().unwrap();
            a.answered[0] + a.answered[1] < target && a.finished < finished + CLIENTS
        } {
            std::thread::sleep(Duration::from_millis(5));
        }
        killed.store(holder, Ordering::SeqCst);
        let mut service = replicas[holder].take().unwrap();
        service.0.kill().unwrap();
        service.0.wait().unwrap();
    });
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.unexpected.is_empty(), "{:#?}", acked.unexpected);
    assert!(
        acked.answered_after_kill > 0,
        "nothing answered after the kill"
    );
    assert_eq!(
        lease_holder(&server),
        1 - holder,
        "the survivor took the lease over"
    );

    // Everything acknowledged is in the database, before or after the kill.
    let stored: HashMap<String, (bool, bool)> = server
        .psql(
            "lynxo",
            "SELECT id, revoked_at IS NOT NULL, revocation_in_force FROM api_keys",
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split('|');
            let id = f.next().unwrap().to_owned();
            (id, (f.next() == Some("t"), f.next() == Some("1")))
        })
        .collect();
    for id in &acked.created {
        assert!(stored.contains_key(id), "acknowledged create {id} lost");
    }
    for id in &acked.revoked {
        assert_eq!(
            stored[id],
            (true, true),
            "acknowledged revocation {id} lost"
        );
    }
    let highest = assert_cap_held(&server);
    let report = verify_audit(&url, &doors[1 - holder]);
    wait_published(&held, &acked.revoked);
    assert_versions_never_went_backwards(&held);
    let edge_state = held.lock().unwrap();
    // The killed replica published up to its death, the survivor from then on: never both.
    let took_over = edge_state
        .pushers
        .iter()
        .position(|&p| p != holder)
        .expect("the survivor never published");
    assert!(
        edge_state.pushers[took_over..]
            .iter()
            .all(|&p| p == 1 - holder),
        "both replicas published after the takeover: {:?}",
        &edge_state.pushers[took_over..]
    );
    eprintln!(
        "two replicas: {} requests answered ({} by replica 0, {} by replica 1; {} after replica \
         {holder} was killed, {} lost with it), {} creates, {} rotations, {} revokes, {} refused \
         at the cap (highest working keys per account {highest}), {} keys revoked, all at the \
         edge ({} shard pushes, {} limits pushes, {} checkpoints, none refused); first phase \
         {:.1} s, all {:.1} s; {}",
        acked.answered[0] + acked.answered[1],
        acked.answered[0],
        acked.answered[1],
        acked.answered_after_kill,
        acked.lost_with_the_killed,
        acked.creates,
        acked.rotations,
        acked.revokes,
        acked.at_cap,
        acked.revoked.len(),
        edge_state.versions.values().map(Vec::len).sum::<usize>(),
        edge_state.limits_pushes,
        edge_state.checkpoints,
        first.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        report.lines().next().unwrap_or_default(),
    );
}
