//! `control copy-to-postgres` (the real binary) from a SQLite database filled through the real
//! API into a private PostgreSQL server (`e2e::postgres`): the copy checks out and commits; a
//! second run refuses and changes nothing; a failure mid-copy leaves the target without tables;
//! emails that collide under PostgreSQL's collation are refused, named.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use axum::http::StatusCode;
use common::{AUDIT_KEYRING, BIN, TestApp};
use e2e::postgres::Server;
use rusqlite::Connection;
use serde_json::json;

const ORIGIN: &str = "https://keys.lynxo.test";

/// Fills a database through the API: keys of two accounts created, rotated, revoked; a minted
/// and a revoked management token; a session. Returns a consistent copy of it (`VACUUM INTO`).
async fn populated(dir: &Path) -> PathBuf {
    // The source is a SQLite deployment whatever `LYNXO_TEST_POSTGRES` says: that is what
    // `copy-to-postgres` reads.
    let app = TestApp::builder().sqlite().build();
    let mut ids = Vec::new();
    for (client, who) in [(app.alice(), "alice"), (app.bob(), "bob")] {
        for i in 0..3 {
            let key = client
                .post(
                    "/v1/keys",
                    json!({ "name": format!("{who} {i}"), "environment": "production",
                            "permission": "read_write" }),
                )
                .await
                .expect(StatusCode::CREATED)
                .body;
            ids.push(key["id"].as_str().unwrap().to_owned());
        }
        let rotate = format!("/v1/keys/{}/rotate", ids[ids.len() - 3]);
        client
            .post(&rotate, json!({ "grace_period_seconds": 0 }))
            .await
            .expect(StatusCode::CREATED);
        let revoke = format!("/v1/keys/{}/revoke", ids[ids.len() - 2]);
        client
            .post(&revoke, json!({ "reason": "leaked in a log" }))
            .await
            .expect(StatusCode::OK);
    }
    // Usage and activity from the edge for one of Alice's keys (usage and activity tables).
    let key = shared::key::KeyId::parse_hex(&ids[2]).unwrap();
    let batch = shared::usage::Batch {
        source: "meter-copy".into(),
        seq: 1,
        counts: vec![shared::usage::Count {
            key_id: key,
            account_id: app.alice_account,
            minute: common::START / 60,
            scope: Some("jobs:read".into()),
            outcome: shared::usage::Outcome::Success,
            n: 7,
        }],
        activity: vec![shared::usage::Activity {
            key_id: key,
            account_id: app.alice_account,
            at_ms: common::START * 1000,
            method: "GET".into(),
            path: "/v1/jobs".into(),
            status: 200,
            outcome: shared::usage::Outcome::Success,
            client_ip: Some("203.0.113.7".into()),
            country: Some("DE".into()),
            colo: Some("FRA".into()),
            user_agent: Some("curl/8".into()),
            reason: None,
        }],
        ..shared::usage::Batch::default()
    };
    assert_eq!(
        app.ingest(&batch).await.expect(StatusCode::OK).body["applied"],
        true
    );
    let cookie = app.alice_session(ORIGIN).await;
    let dashboard = || {
        app.anonymous()
            .header("cookie", &cookie)
            .header("origin", ORIGIN)
    };
    let minted = dashboard()
        .post(
            "/v1/management-tokens",
            json!({ "name": "script", "password": common::PASSWORD, "scopes": ["keys:read"] }),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    let id = minted["id"].as_u64().unwrap();
    dashboard()
        .post(&format!("/v1/management-tokens/{id}/revoke"), json!({}))
        .await
        .expect(StatusCode::OK);
    let out = dir.join("source.sqlite3");
    let conn = Connection::open(app.state.store.path()).unwrap();
    conn.execute("VACUUM INTO ?1", [out.to_str().unwrap()])
        .unwrap();
    out
}

/// A copy of `source` at `name` in `dir`, changed by `sql` (run with the triggers of the real
/// schema in place).
fn variant(source: &Path, dir: &Path, name: &str, sql: &str) -> PathBuf {
    let out = dir.join(name);
    let conn = Connection::open(source).unwrap();
    conn.execute("VACUUM INTO ?1", [out.to_str().unwrap()])
        .unwrap();
    drop(conn);
    Connection::open(&out).unwrap().execute_batch(sql).unwrap();
    out
}

fn copy(db: &Path, url: &str) -> Output {
    Command::new(BIN)
        .arg("copy-to-postgres")
        .arg("--database")
        .arg(db)
        .arg("--to")
        .arg(url)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        // Every log line, the drivers' included: no row's content may be among them.
        .env("RUST_LOG", "debug")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Our tables of the SQLite database, with their row counts.
fn sqlite_counts(db: &Path) -> Vec<(String, i64)> {
    let conn = Connection::open(db).unwrap();
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|n| {
            let c = conn
                .query_row(&format!("SELECT count(*) FROM {n}"), [], |r| r.get(0))
                .unwrap();
            (n, c)
        })
        .collect()
}

/// The tables of the target's public schema.
fn pg_tables(server: &Server, db: &str) -> Vec<String> {
    server
        .psql(
            db,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' \
             ORDER BY 1",
        )
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every table's rows of the target, as text, hashed per table (what a second run must not
/// change).
fn pg_state(server: &Server, db: &str, tables: &[(String, i64)]) -> String {
    let sql: String = tables
        .iter()
        .map(|(t, _)| {
            format!(
                "SELECT '{t}', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) \
                 FROM {t} x;\n"
            )
        })
        .collect();
    server.psql(db, &sql)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_deployment_copies_into_postgres_with_its_audit_chain_verifying() {
    // The PostgreSQL files describe this build's SQLite schema (a new migration moves both).
    assert_eq!(
        usize::try_from(control::pg_copy::PG_SCHEMA_VERSION),
        Ok(control::store::SCHEMA_VERSION)
    );
    let dir = tempfile::tempdir().unwrap();
    let source = populated(dir.path()).await;
    let counts = sqlite_counts(&source);
    let server = Server::start();

    // The copy: exit 0, every table's count, the chain verified on PostgreSQL.
    let url = server.create_database("target");
    let out = copy(&source, &url);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("DEBUG"), "the debug log is on: {said}");
    assert!(
        !said.contains("alice@example.com"),
        "a row's content is in the copy's log: {said}"
    );
    println!("{said}");
    let mut audited = 0;
    for (table, n) in &counts {
        assert!(
            said.contains(&format!("table {table}: {n} rows,")),
            "{table}: {n} rows expected\n{said}"
        );
        let pg: i64 = server
            .psql("target", &format!("SELECT count(*) FROM {table}"))
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pg, *n, "{table} on PostgreSQL");
        if table == "audit_events" {
            audited = *n;
        }
    }
    assert!(audited > 10, "the audit trail has events of both accounts");
    for table in [
        "usage_minutes",
        "activity",
        "usage_batches",
        "sessions",
        "management_tokens",
    ] {
        assert!(
            counts.iter().any(|(t, n)| t == table && *n > 0),
            "{table} has rows to copy"
        );
    }
    assert_eq!(
        server
            .psql(
                "target",
                "SELECT count(DISTINCT account_id) FROM audit_events"
            )
            .trim(),
        "2"
    );
    assert!(
        said.contains(&format!(
            "audit chain intact on PostgreSQL ({audited} events)"
        )),
        "{said}"
    );
    // The source's own head is the one PostgreSQL holds.
    let src = Connection::open(&source).unwrap();
    let (seq, hash): (i64, Vec<u8>) = src
        .query_row(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        said.contains(&format!("head: seq={seq} hash={}", hex::encode(&hash))),
        "{said}"
    );
    assert_eq!(
        server
            .psql(
                "target",
                &format!("SELECT encode(hash, 'hex') FROM audit_events WHERE seq = {seq}")
            )
            .trim(),
        hex::encode(&hash)
    );
    // Identity sequences are past the copied ids: the next generated id never collides.
    let next = server.psql(
        "target",
        "INSERT INTO accounts (name, plan_id, created_at) SELECT 'next', plan_id, created_at \
         FROM accounts LIMIT 1 RETURNING id",
    );
    let max_account: i64 = src
        .query_row("SELECT max(id) FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(next.trim(), (max_account + 1).to_string());
    server.psql("target", "DELETE FROM accounts WHERE name = 'next'");

    // A second run into the same database refuses and changes nothing.
    let before = pg_state(&server, "target", &counts);
    let again = copy(&source, &url);
    let said = text(&again);
    assert!(!again.status.success(), "{said}");
    assert!(said.contains("never overwrites"), "{said}");
    assert_eq!(pg_state(&server, "target", &counts), before);

    // A source row PostgreSQL refuses (a NUL in a key's name, which SQLite keeps): the failure
    // comes after earlier tables were copied, and leaves the target with no tables at all.
    let nul = variant(
        &source,
        dir.path(),
        "nul.sqlite3",
        "UPDATE api_keys SET name = 'bad' || char(0) || 'name' WHERE id = (SELECT max(id) FROM api_keys)",
    );
    let url = server.create_database("failing");
    let out = copy(&nul, &url);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("PostgreSQL refused rows"), "{said}");
    assert!(said.contains("api_keys"), "{said}");
    assert!(said.contains("rolled back"), "{said}");
    assert_eq!(pg_tables(&server, "failing"), Vec::<String>::new());
    // The same database takes the good source afterwards.
    let out = copy(&source, &url);
    assert!(out.status.success(), "{}", text(&out));

    // Emails SQLite's NOCASE tells apart but PostgreSQL's ICU collation takes as one.
    let emails = variant(
        &source,
        dir.path(),
        "emails.sqlite3",
        "UPDATE users SET email = 'ÉMILE@example.com' WHERE email = 'alice@example.com';
         UPDATE users SET email = 'émile@example.com' WHERE email = 'bob@example.com';",
    );
    let url = server.create_database("emails");
    let out = copy(&emails, &url);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("ÉMILE@example.com = émile@example.com"),
        "{said}"
    );
    assert_eq!(pg_tables(&server, "emails"), Vec::<String>::new());

    // A source at another schema version is refused before the target is touched.
    let old = variant(
        &source,
        dir.path(),
        "old.sqlite3",
        "PRAGMA user_version = 13",
    );
    let url = server.create_database("old");
    let out = copy(&old, &url);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("schema version 13"), "{said}");
    assert_eq!(pg_tables(&server, "old"), Vec::<String>::new());
}

/// A copy taken while the real `serve` keeps writing (keys created and revoked, each an audit
/// event) is one snapshot: the chain and counts it checks are of one moment, and the copy has
/// fewer events than the source ends with.
#[test]
fn a_copy_beside_a_running_service_is_one_consistent_snapshot() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.sqlite3");
    let token = common::init_binary(&db);
    let port = common::free_port();
    let service = common::serve_binary(&db, port);
    let base = format!("http://127.0.0.1:{port}");
    let stop = Arc::new(AtomicBool::new(false));
    let (started, writing) = std::sync::mpsc::channel();
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let agent = common::agent();
            let mut writes = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let key = common::send(
                    &agent,
                    &format!("{base}/v1/keys"),
                    &token,
                    Some(json!({ "name": "live", "environment": "production",
                                 "permission": "read_write" })),
                );
                assert_eq!(key.status, 201, "{}", key.body);
                let id = key.body["id"].as_str().unwrap();
                let revoked = common::send(
                    &agent,
                    &format!("{base}/v1/keys/{id}/revoke"),
                    &token,
                    Some(json!({ "reason": "live" })),
                );
                assert_eq!(revoked.status, 200, "{}", revoked.body);
                writes += 1;
                let _ = started.send(writes);
            }
            writes
        })
    };
    // Copy only once writes are under way, and while they go on.
    for _ in 0..3 {
        writing.recv().unwrap();
    }
    let server = Server::start();
    let url = server.create_database("live");
    let out = copy(&db, &url);
    stop.store(true, Ordering::SeqCst);
    let writes = writer.join().unwrap();
    drop(service);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("audit chain intact on PostgreSQL"), "{said}");
    let copied: i64 = server
        .psql("live", "SELECT count(*) FROM audit_events")
        .trim()
        .parse()
        .unwrap();
    let total: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    assert!(writes >= 3);
    assert!(copied <= total, "{copied} copied, {total} in the source");
}
