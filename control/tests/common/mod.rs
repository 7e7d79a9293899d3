//! Test harness: a fresh SQLite file with the real migrations per test, the real router called
//! with `oneshot` (no socket), a clock the test moves, and clients per role.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use control::publish::{MemorySink, Publisher};
use control::store::Store;
use control::store::StoreError;
use control::{AppState, Clock as _, ManualClock, Settings, app, auth};
use http_body_util::BodyExt as _;
use serde_json::Value;
use shared::audit::AuditKeyring;
use shared::mac::Keyring;
use tower::ServiceExt as _;

/// 2026-01-01T00:00:00Z.
pub const START: u64 = 1_767_225_600;
pub const PASSWORD: &str = "correct horse battery staple";

pub fn keyring() -> Keyring {
    shared::testkit::keyring()
}

/// The audit keyring of the tests (test-only secret, not the signing keyring's).
pub const AUDIT_KEYRING: &str = shared::testkit::AUDIT_KEYRING;

pub fn audit_keyring() -> Arc<AuditKeyring> {
    Arc::new(shared::testkit::audit_keyring())
}

/// A child process (the real binary) killed when dropped, so a failing test leaves nothing
/// running.
pub struct Service(pub std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port.
/// The database of a test app: a SQLite file in `dir`, or a PostgreSQL database of its own when
/// the suite runs on PostgreSQL (`e2e::postgres::test_database`).
pub fn test_database(dir: &std::path::Path) -> std::path::PathBuf {
    e2e::postgres::test_database(dir)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub sink: Arc<MemorySink>,
    /// Account 1's management token.
    pub alice_token: String,
    pub alice_account: u64,
    /// Account 2's management token.
    pub bob_token: String,
    pub bob_account: u64,
}

/// A change to the settings, applied before the service is built.
type Configure = Box<dyn FnOnce(&mut Settings)>;

pub struct Builder {
    /// The database, when not the test's own fresh one ([`test_database`]).
    database: Option<std::path::PathBuf>,
    shard_count: u16,
    max_body_bytes: usize,
    configure: Option<Configure>,
    sqlite: bool,
}

impl Builder {
    /// Changes any other setting before the service is built.
    pub fn settings(mut self, f: impl FnOnce(&mut Settings) + 'static) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// Runs on this (empty) database instead of a fresh one of its own.
    pub fn database(mut self, database: impl Into<std::path::PathBuf>) -> Self {
        self.database = Some(database.into());
        self
    }

    pub fn shard_count(mut self, n: u16) -> Self {
        self.shard_count = n;
        self
    }

    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// A SQLite file (`dir/control.sqlite3`) whatever `LYNXO_TEST_POSTGRES` says: for a test of
    /// something only a SQLite deployment has (its file, a copy of it), which the caller names.
    pub fn sqlite(mut self) -> Self {
        self.sqlite = true;
        self
    }

    pub fn build(self) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let database = match self.database {
            Some(database) => database,
            None if self.sqlite => dir.path().join("control.sqlite3"),
            None => test_database(dir.path()),
        };
        let store = Store::open(&database, audit_keyring()).unwrap();
        let clock = Arc::new(ManualClock::at(START));
        let mut settings = Settings {
            shard_count: self.shard_count,
            public_origin: "https://keys.lynxo.test".into(),
            max_body_bytes: self.max_body_bytes,
            // Cheapest argon2id: tests check the flow, not the cost.
            argon2: argon2::Params::new(8, 1, 1, None).unwrap(),
            ..Settings::default()
        };
        if let Some(configure) = self.configure {
            configure(&mut settings);
        }
        let alice = auth::bootstrap(
            &store,
            &settings,
            "Alice Inc",
            "alice@example.com",
            PASSWORD,
            START,
        )
        .unwrap();
        let bob = auth::bootstrap(
            &store,
            &settings,
            "Bob Ltd",
            "bob@example.com",
            PASSWORD,
            START,
        )
        .unwrap();
        let state = AppState::new(store, keyring(), clock.clone(), settings);
        TestApp {
            dir,
            state,
            clock,
            sink: Arc::new(MemorySink::default()),
            alice_token: alice.token,
            alice_account: alice.account_id,
            bob_token: bob.token,
            bob_account: bob.account_id,
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    /// A 500's logged cause (never sent to the client), so a failing test says why.
    pub cause: Option<String>,
}

impl Resp {
    /// Asserts the status, printing the body (and a 500's cause) when it differs.
    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Self {
        assert_eq!(
            self.status, status,
            "body: {} cause: {:?}",
            self.body, self.cause
        );
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status and code.
    #[track_caller]
    pub fn problem(self, status: StatusCode, code: &str) -> Self {
        assert_eq!(
            self.status, status,
            "body: {} cause: {:?}",
            self.body, self.cause
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status.as_u16());
        self
    }
}

impl TestApp {
    pub fn new() -> Self {
        Self::builder().build()
    }

    pub fn builder() -> Builder {
        Builder {
            database: None,
            shard_count: 4,
            max_body_bytes: 64 * 1024,
            configure: None,
            sqlite: false,
        }
    }

    /// Another control plane on this one's database (a second replica): its own store
    /// connections, publish trigger and sign-in guard; the same keyring, settings and clock.
    pub fn replica(&self) -> AppState {
        let store = Store::open(self.state.store.path(), audit_keyring()).unwrap();
        AppState::new(
            store,
            keyring(),
            self.clock.clone(),
            (*self.state.settings).clone(),
        )
    }

    pub fn router(&self) -> Router {
        app(self.state.clone())
    }

    pub fn alice(&self) -> Client<'_> {
        self.client(Some(format!("Bearer {}", self.alice_token)))
    }

    pub fn bob(&self) -> Client<'_> {
        self.client(Some(format!("Bearer {}", self.bob_token)))
    }

    pub fn anonymous(&self) -> Client<'_> {
        self.client(None)
    }

    pub fn client(&self, authorization: Option<String>) -> Client<'_> {
        let mut headers = Vec::new();
        if let Some(a) = authorization {
            headers.push(("authorization".to_owned(), a));
        }
        Client { app: self, headers }
    }

    pub fn publisher(&self) -> Publisher {
        Publisher::new(
            self.state.store.clone(),
            Arc::clone(&self.state.keyring),
            self.clock.clone(),
            self.sink.clone(),
            self.state.settings.shard_count,
            3600,
        )
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Audit events of every account, oldest first.
    pub fn audit_actions(&self) -> Vec<String> {
        self.state
            .store
            .read_blocking::<_, StoreError, _>(|c| {
                let mut stmt = c.prepare("SELECT action FROM audit_events ORDER BY seq")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .unwrap()
    }

    /// Posts a usage batch to the ingestion endpoint, signed now with the test keyring.
    pub async fn ingest(&self, batch: &shared::usage::Batch) -> Resp {
        self.ingest_body(serde_json::to_vec(batch).unwrap()).await
    }

    /// Sends `body` to the ingestion endpoint as the edge would, signed, whatever it holds.
    pub async fn ingest_body(&self, body: Vec<u8>) -> Resp {
        let signature = shared::usage::sign_batch(&self.state.keyring, &body, self.clock.now());
        self.anonymous()
            .header(shared::envelope::SYNC_HEADER, &signature)
            .send(Method::POST, shared::usage::INGEST_PATH, Some(body))
            .await
    }

    /// Alice creates a key with these fields on top of a valid default body.
    pub async fn create_key(&self, overrides: Value) -> Value {
        let mut body = serde_json::json!({
            "name": "ci deploy",
            "environment": "production",
            "permission": "read_write",
        });
        for (k, v) in overrides.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.alice()
            .post("/v1/keys", body)
            .await
            .expect(StatusCode::CREATED)
            .body
    }
}

pub struct Client<'a> {
    app: &'a TestApp,
    headers: Vec<(String, String)>,
}

impl Client<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        let has_type = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_type {
            req = req.header("content-type", "application/json");
        }
        for (n, v) in &self.headers {
            req = req.header(n, v);
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let response = self.app.router().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let cause = response
            .extensions()
            .get::<control::error::InternalCause>()
            .map(|c| c.0.clone());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Resp {
            status,
            headers,
            body,
            cause,
        }
    }
}

/// Everything the service logs, for tests that hunt a secret in the logs: see [`capture_logs`].
#[derive(Clone, Default)]
pub struct Captured(pub Arc<std::sync::Mutex<Vec<u8>>>);

/// Sends every log line, at every level, to the returned capture. It installs the global
/// subscriber, so a test binary calls it once.
pub fn capture_logs() -> Captured {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    logs
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What was written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What an attacker with a copy of the app's database would read, as named parts of bytes. On
/// SQLite the database file and its WAL, whole (free pages and stale frames included). On
/// PostgreSQL every value of every row of every table (the server's tables excepted), text as
/// its UTF-8, `bytea` as its raw bytes, anything else (numbers, JSON) as its text form, so a
/// secret in any column in any encoding the store writes is found by [`contains`].
pub fn database_files(app: &TestApp) -> Vec<(&'static str, Vec<u8>)> {
    let db = app.state.store.path().to_owned();
    if !app.state.store.is_postgres() {
        return vec![
            ("database", std::fs::read(&db).unwrap()),
            (
                "WAL",
                std::fs::read(db.with_extension("sqlite3-wal")).unwrap_or_default(),
            ),
        ];
    }
    let url = db.to_str().unwrap().to_owned();
    let rows = off_runtime(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let columns = client
            .query(
                "SELECT c.table_schema, c.table_name, c.column_name, c.data_type \
                 FROM information_schema.columns c JOIN information_schema.tables t \
                 ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
                 WHERE t.table_type = 'BASE TABLE' \
                 AND c.table_schema NOT IN ('pg_catalog', 'information_schema') \
                 ORDER BY 1, 2, c.ordinal_position",
                &[],
            )
            .unwrap();
        assert!(
            columns
                .iter()
                .any(|c| c.get::<_, String>(1) == "audit_events"),
            "the store's tables are found"
        );
        let quote = |name: String| format!("\"{}\"", name.replace('"', "\"\""));
        let mut bytes = Vec::new();
        for c in &columns {
            let (schema, table, column) = (quote(c.get(0)), quote(c.get(1)), quote(c.get(2)));
            let data_type: String = c.get(3);
            let values: Vec<Option<Vec<u8>>> = if data_type == "bytea" {
                let sql = format!("SELECT {column} FROM {schema}.{table}");
                client
                    .query(&sql, &[])
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            } else {
                let sql = format!("SELECT {column}::text FROM {schema}.{table}");
                client
                    .query(&sql, &[])
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<_, Option<String>>(0).map(String::into_bytes))
                    .collect()
            };
            for value in values.into_iter().flatten() {
                bytes.extend_from_slice(&value);
                bytes.push(0);
            }
        }
        bytes
    });
    vec![("rows", rows)]
}

/// Runs `f` on a thread of its own and hands back its answer (or its panic): PostgreSQL's
/// blocking client runs a runtime, which cannot start on an async test's thread.
pub fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs `f` on a connection of its own to the app's database, not the service's: what someone
/// with the database's file or credentials can do, triggers and all. SQL as the store writes
/// it (`?1` parameters; `Db::is_postgres` where the dialects differ).
pub fn as_attacker<T: Send + 'static>(
    app: &TestApp,
    f: impl FnOnce(&control::store::db::Db<'_>) -> T + Send + 'static,
) -> T {
    use control::store::db::{Db, PgConn};
    let path = app.state.store.path().to_owned();
    let postgres = app.state.store.is_postgres();
    off_runtime(move || {
        if postgres {
            let url = path.to_str().unwrap();
            let conn = PgConn::new(postgres::Client::connect(url, postgres::NoTls).unwrap());
            f(&Db::Postgres(&conn))
        } else {
            let conn = rusqlite::Connection::open(&path).unwrap();
            f(&Db::Sqlite(&conn))
        }
    })
}

/// The real binary of this package.
pub const BIN: &str = env!("CARGO_BIN_EXE_control");

/// An HTTP client that hands back error statuses as answers.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `control init` on `db` with the tests' audit keyring; returns the management token.
pub fn init_binary(db: &std::path::Path) -> String {
    init_binary_as(db, "ops@example.com")
}

/// [`init_binary`] for the user `email` (another account on the same database).
pub fn init_binary_as(db: &std::path::Path, email: &str) -> String {
    let init = std::process::Command::new(BIN)
        .args(["init", "--email", email, "--database"])
        .arg(db)
        .env("LYNXO_INIT_PASSWORD", "a long enough password")
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(init.status.success());
    String::from_utf8(init.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("management_token="))
        .unwrap()
        .to_owned()
}

/// `control serve --no-publish` on `db` at `port`, returned once it answers HTTP.
pub fn serve_binary(db: &std::path::Path, port: u16) -> Service {
    let child = std::process::Command::new(BIN)
        .args(["serve", "--no-publish", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(db)
        .env("LYNXO_KEYRING", shared::testkit::KEYRING)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let service = Service(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("http://127.0.0.1:{port}/readyz"))
        .call()
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "service did not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    service
}

/// An answer of the binary.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: serde_json::Value,
}

/// A GET (no body) or a JSON POST with the management token.
fn request(
    agent: &ureq::Agent,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let auth = format!("Bearer {token}");
    match body {
        Some(body) => agent
            .post(url)
            .header("authorization", &auth)
            .content_type("application/json")
            .send(body.to_string()),
        None => agent.get(url).header("authorization", &auth).call(),
    }
}

/// [`send`]'s request: its status and JSON body, or `None` when no answer came (the service was
/// killed, the connection cut).
pub fn try_send(
    agent: &ureq::Agent,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut response = request(agent, url, token, body).ok()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A GET (no body) or a JSON POST with the management token.
pub fn send(agent: &ureq::Agent, url: &str, token: &str, body: Option<Value>) -> Reply {
    let mut response = request(agent, url, token, body).unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.body_mut().read_to_string().unwrap();
    Reply {
        status: response.status().as_u16(),
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// Every key of the account, by id, with its status.
pub fn keys(agent: &ureq::Agent, base: &str, token: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut url = format!("{base}/v1/keys?limit=100");
    loop {
        let r = send(agent, &url, token, None);
        assert_eq!(r.status, 200, "{}", r.body);
        all.extend(r.body["data"].as_array().unwrap().iter().map(|k| {
            (
                k["id"].as_str().unwrap().to_owned(),
                k["status"].as_str().unwrap().to_owned(),
            )
        }));
        match r.body["next_cursor"].as_str() {
            Some(cursor) => url = format!("{base}/v1/keys?limit=100&cursor={cursor}"),
            None => return all,
        }
    }
}

impl TestApp {
    /// Signs Alice in from the dashboard's `origin`; returns the session cookie pair.
    pub async fn alice_session(&self, origin: &str) -> String {
        let r = self
            .anonymous()
            .header("origin", origin)
            .post(
                "/v1/sessions",
                serde_json::json!({ "email": "alice@example.com", "password": PASSWORD }),
            )
            .await
            .expect(StatusCode::OK);
        let set_cookie = r.header("set-cookie").unwrap().to_owned();
        set_cookie.split(';').next().unwrap().to_owned()
    }
}

/// How many of `wanted` are not in the shard of their index in `shards` (the encoded shards an
/// edge holds, by index, of `shard_count`).
pub fn unpublished(
    shards: &std::collections::HashMap<u16, Vec<u8>>,
    wanted: &[shared::key::KeyId],
    shard_count: u16,
) -> usize {
    let ring = keyring();
    wanted
        .iter()
        .filter(|id| {
            let shard = shared::revocation::shard_of(**id, shard_count);
            !shards.get(&shard).is_some_and(|b| {
                shared::revocation::RevocationShard::open(b, &ring)
                    .unwrap()
                    .contains(**id)
            })
        })
        .count()
}
