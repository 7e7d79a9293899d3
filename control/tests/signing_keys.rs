//! Signing-key rollover in the control plane: what keys show of the kid that sealed them, the
//! retirement of a kid (its keys revoked, each account told once, idempotent, never the active
//! kid), what rotating a key of a retired kid does, the keyring checks `serve` makes, and the
//! `control keyring` commands of the real binary.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{AUDIT_KEYRING, START, TestApp, init_binary};
use control::Clock as _;
use control::signing::{self, KeyringRefusal, SigningError};
use control::store::signing::{RetireReason, working_by_kid};
use serde_json::{Value, json};
use shared::key::{self, Claims, Environment, KeyId};
use shared::mac::Keyring;
use shared::scope::ScopeSet;

const BIN: &str = env!("CARGO_BIN_EXE_control");
/// The tests' kid 1 (`shared::testkit::KEYRING`) and a kid 2 of their own.
const KID2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn kid1_hex() -> String {
    let (_, rest) = shared::testkit::KEYRING.split_once(";1:").unwrap();
    rest[..64].to_owned()
}

/// `active=ACTIVE;` with the given kids of {1, 2}.
fn ring(active: u8, kids: &[u8]) -> String {
    let entries: Vec<String> = kids
        .iter()
        .map(|k| match k {
            1 => format!("1:{}", kid1_hex()),
            _ => format!("2:{KID2}"),
        })
        .collect();
    format!("active={active};{}", entries.join(","))
}

fn keyring(text: &str) -> Keyring {
    Keyring::from_config(text).unwrap()
}

/// The app now runs with `text` as its keyring (a restart with a new LYNXO_KEYRING).
fn restart_with(app: &mut TestApp, text: &str) {
    app.state.keyring = Arc::new(keyring(text));
}

async fn verify(app: &TestApp, key: &str) -> Value {
    app.alice()
        .post(
            "/v1/keys/verify",
            json!({ "key": key, "method": "GET", "path": "/v1/jobs" }),
        )
        .await
        .expect(StatusCode::OK)
        .body
}

fn retire(app: &TestApp, active: u8, kid: u8) -> Result<signing::Retirement, SigningError> {
    signing::retire(
        &app.state.store,
        active,
        kid,
        RetireReason::Compromised,
        Some("found in a CI log".into()),
        app.clock.now(),
    )
}

#[tokio::test]
async fn keys_show_which_kid_sealed_them_and_new_keys_take_the_active_one() {
    let mut app = TestApp::new();
    let a = app.create_key(json!({ "permission": "full_access" })).await;
    assert_eq!(
        (&a["kid"], &a["signing_key"]),
        (&json!(1), &json!("current"))
    );
    assert_eq!(a["signing_key_retired"], Value::Null);

    // Kid 2 known, then active: A stays valid and is shown on the previous kid.
    restart_with(&mut app, &ring(1, &[1, 2]));
    let list = app
        .alice()
        .get("/v1/keys")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(list["signing"]["keys_on_previous_kid"], 0);
    restart_with(&mut app, &ring(2, &[1, 2]));
    let id = a["id"].as_str().unwrap();
    let a_now = app.alice().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(
        (&a_now["kid"], &a_now["signing_key"]),
        (&json!(1), &json!("previous"))
    );
    assert_eq!(
        verify(&app, a["key"].as_str().unwrap()).await["valid"],
        true
    );

    let b = app.create_key(json!({ "permission": "full_access" })).await;
    assert_eq!(
        (&b["kid"], &b["signing_key"]),
        (&json!(2), &json!("current"))
    );
    let claims = key::verify(b["key"].as_str().unwrap(), &keyring(&ring(2, &[2])), START).unwrap();
    assert_eq!(claims.kid, 2);

    let list = app
        .alice()
        .get("/v1/keys")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(list["signing"]["current_kid"], 2);
    assert_eq!(
        list["signing"]["keys_on_previous_kid"], 1,
        "{}",
        list["signing"]
    );
    assert_eq!(list["signing"]["retired_keys"], json!([]));
    // Bob's list says nothing of Alice's keys.
    let bobs = app.bob().get("/v1/keys").await.expect(StatusCode::OK).body;
    assert_eq!(bobs["signing"]["keys_on_previous_kid"], 0);

    // Rotating A moves it to the current kid.
    let rotated = app
        .alice()
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({ "grace_period_seconds": 60 }),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    assert_eq!(rotated["key"]["kid"], 2);
    assert_eq!(rotated["previous"]["status"], "rotating");
}

#[tokio::test]
async fn retiring_a_kid_revokes_its_working_keys_and_tells_each_account_once() {
    let mut app = TestApp::new();
    let a1 = app.create_key(json!({})).await;
    let a2 = app.create_key(json!({})).await;
    let a2_id = a2["id"].as_str().unwrap();
    app.alice()
        .post(
            &format!("/v1/keys/{a2_id}/revoke"),
            json!({ "reason": "old" }),
        )
        .await
        .expect(StatusCode::OK);
    let b1 = app
        .bob()
        .post(
            "/v1/keys",
            json!({ "name": "bob's", "environment": "production", "permission": "read_only" }),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    restart_with(&mut app, &ring(2, &[1, 2]));
    let a3 = app.create_key(json!({})).await;
    assert_eq!(a3["kid"], 2);
    let events_before = app.audit_actions().len();

    let done = retire(&app, 2, 1).unwrap();
    assert!(done.changed);
    assert_eq!(
        done.record.keys_revoked, 2,
        "a1 and b1; a2 was revoked already"
    );
    assert_eq!(done.accounts, 2);
    restart_with(&mut app, &ring(2, &[2]));

    let id = a1["id"].as_str().unwrap();
    let a1_now = app.alice().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(a1_now["status"], "revoked", "{a1_now}");
    assert_eq!(a1_now["revoke_reason"], "signing_key_retired");
    assert_eq!(a1_now["signing_key"], "retired");
    assert_eq!(a1_now["signing_key_retired"]["reason"], "compromised");
    assert_eq!(a1_now["signing_key_retired"]["retired_at"], START);
    assert!(a1_now["revocation_version"].as_u64().is_some());
    let a2_now = app.alice().get(&format!("/v1/keys/{a2_id}")).await.body;
    assert_eq!(a2_now["revoke_reason"], "old", "not revoked twice");

    // Each account's list names its own keys only.
    let list = app
        .alice()
        .get("/v1/keys")
        .await
        .expect(StatusCode::OK)
        .body;
    let retired = list["signing"]["retired_keys"].as_array().unwrap().clone();
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(retired[0]["id"], a1["id"]);
    assert_eq!(retired[0]["kid"], 1);
    assert_eq!(retired[0]["retired"]["reason"], "compromised");
    let bobs = app.bob().get("/v1/keys").await.expect(StatusCode::OK).body;
    assert_eq!(bobs["signing"]["retired_keys"][0]["id"], b1["id"]);
    assert_eq!(bobs["signing"]["retired_keys"].as_array().unwrap().len(), 1);

    // One event per account, with its keys and not the operator's note.
    for (client, key) in [(app.alice(), &a1), (app.bob(), &b1)] {
        let events = client
            .get("/v1/audit-events")
            .await
            .expect(StatusCode::OK)
            .body;
        let told: Vec<&Value> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "signing_key.retired")
            .collect();
        assert_eq!(told.len(), 1, "{events}");
        assert_eq!(told[0]["details"]["key_ids"], json!([key["id"]]));
        assert_eq!(told[0]["details"]["reason"], "compromised");
        assert!(!told[0].to_string().contains("CI log"), "{}", told[0]);
    }
    let actions = app.audit_actions();
    assert_eq!(
        actions.len(),
        events_before + 4,
        "two revocations, two notices"
    );

    // The revocations are published like any other.
    let pass = app.publisher().run_once().await.unwrap();
    assert!(!pass.written.is_empty());

    // A second retirement changes nothing and answers the first one.
    let again = retire(&app, 2, 1).unwrap();
    assert!(!again.changed);
    assert_eq!(again.record, done.record);
    assert_eq!(app.audit_actions().len(), actions.len());

    // Keys of the retired kid work nowhere the control plane decides either: its verify says
    // invalid, whether the key is genuine or forged with the leaked secret.
    assert_eq!(
        verify(&app, a1["key"].as_str().unwrap()).await["code"],
        "invalid_token"
    );
    let forged = key::issue(
        &Claims {
            kid: 1,
            account_id: app.alice_account,
            key_id: KeyId([7; 16]),
            environment: Environment::Production,
            scopes: ScopeSet::FULL_ACCESS,
            issued_at: START,
            expires_at: None,
        },
        &common::keyring(),
    )
    .unwrap();
    let verdict = verify(&app, forged.expose()).await;
    assert_eq!(
        (&verdict["valid"], &verdict["code"]),
        (&json!(false), &json!("invalid_token"))
    );
}

#[tokio::test]
async fn a_key_forged_under_an_unknown_kid_is_refused() {
    let app = TestApp::new();
    let hex = "99".repeat(32);
    let attacker = keyring(&format!("active=9;9:{hex}"));
    let forged = key::issue(
        &Claims {
            kid: 9,
            account_id: app.alice_account,
            key_id: KeyId([9; 16]),
            environment: Environment::Production,
            scopes: ScopeSet::FULL_ACCESS,
            issued_at: START,
            expires_at: None,
        },
        &attacker,
    )
    .unwrap();
    let verdict = verify(&app, forged.expose()).await;
    assert_eq!(
        (&verdict["valid"], &verdict["code"]),
        (&json!(false), &json!("invalid_token"))
    );
}

#[tokio::test]
async fn the_active_kid_cannot_be_retired_and_nothing_changes() {
    let app = TestApp::new();
    app.create_key(json!({})).await;
    let before = app.audit_actions();
    assert!(matches!(
        retire(&app, 1, 1),
        Err(SigningError::RetireActive(1))
    ));
    assert_eq!(app.audit_actions(), before);
    let retired = app
        .state
        .store
        .read_blocking(control::store::signing::retired)
        .unwrap();
    assert!(retired.is_empty());
    // A note people cannot read is refused too, before anything is written.
    let bad = signing::retire(
        &app.state.store,
        2,
        1,
        RetireReason::Scheduled,
        Some("x\u{202e}y".into()),
        START,
    );
    assert!(matches!(bad, Err(SigningError::BadNote)));
}

#[tokio::test]
async fn a_control_plane_still_signing_with_a_retired_kid_creates_nothing() {
    let app = TestApp::new();
    let a = app.create_key(json!({})).await;
    // The operator retired kid 1 with the next keyring; this one has not restarted yet.
    retire(&app, 2, 1).unwrap();
    let r = app
        .alice()
        .post(
            "/v1/keys",
            json!({ "name": "n", "environment": "production", "permission": "read_only" }),
        )
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE, "signing_key_retired");
    assert_eq!(r.header("retry-after"), Some("5"));
    let id = a["id"].as_str().unwrap();
    app.alice()
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({ "grace_period_seconds": 0 }),
        )
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE, "signing_key_retired");
    let list = app
        .alice()
        .get("/v1/keys")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
}

#[tokio::test]
async fn rotating_a_key_of_a_retired_kid_makes_one_replacement_and_it_stays_dead() {
    let mut app = TestApp::new();
    let a = app
        .create_key(json!({ "name": "billing", "permission": "custom", "scopes": ["jobs:read"] }))
        .await;
    let id = a["id"].as_str().unwrap();
    restart_with(&mut app, &ring(2, &[1, 2]));
    retire(&app, 2, 1).unwrap();
    restart_with(&mut app, &ring(2, &[2]));

    // Another account cannot replace it.
    app.bob()
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({ "grace_period_seconds": 0 }),
        )
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    let rotated = app
        .alice()
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({ "grace_period_seconds": 86400 }),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    let previous = &rotated["previous"];
    assert_eq!(previous["status"], "revoked", "{previous}");
    assert_eq!(
        previous["grace_until"],
        Value::Null,
        "no grace brings it back"
    );
    assert_eq!(previous["rotated_to"], rotated["key"]["id"]);
    let new = &rotated["key"];
    assert_eq!(
        (&new["kid"], &new["signing_key"]),
        (&json!(2), &json!("current"))
    );
    assert_eq!(
        (&new["name"], &new["scopes"]),
        (&json!("billing"), &json!(["jobs:read"]))
    );
    assert_eq!(new["rotated_from"], a["id"]);
    assert_eq!(
        verify(&app, new["key"].as_str().unwrap()).await["valid"],
        true
    );
    assert_eq!(
        verify(&app, a["key"].as_str().unwrap()).await["valid"],
        false
    );
    assert!(app.audit_actions().contains(&"key.replaced".to_owned()));

    // Once: a second rotate is refused, and the key stays revoked.
    app.alice()
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({ "grace_period_seconds": 0 }),
        )
        .await
        .problem(StatusCode::CONFLICT, "key_not_active");
    let list = app
        .alice()
        .get("/v1/keys")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(list["signing"]["retired_keys"][0]["replaced_by"], new["id"]);
    let status = app.alice().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(status["status"], "revoked");
}

#[tokio::test]
async fn serve_refuses_a_keyring_with_a_retired_kid_or_without_a_kid_in_use() {
    let app = TestApp::new();
    app.create_key(json!({})).await;
    let check = |text: &str| {
        let ring = keyring(text);
        app.state
            .store
            .read_blocking(move |c| signing::check_keyring(c, &ring, START))
            .unwrap()
    };
    assert_eq!(check(&ring(1, &[1, 2])), Ok(()));
    assert_eq!(
        check(&ring(2, &[2])),
        Err(KeyringRefusal::MissingKid { kid: 1, keys: 1 })
    );
    retire(&app, 2, 1).unwrap();
    assert!(matches!(
        check(&ring(2, &[1, 2])),
        Err(KeyringRefusal::HoldsRetired { kid: 1, .. })
    ));
    assert_eq!(check(&ring(2, &[2])), Ok(()));
    let by_kid = app
        .state
        .store
        .read_blocking(move |c| working_by_kid(c, START))
        .unwrap();
    assert!(by_kid.is_empty(), "{by_kid:?}");
}

fn run(args: &[&str], keyring: &str, db: Option<&std::path::Path>) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env("LYNXO_KEYRING", keyring)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env_remove("LYNXO_DATABASE")
        .env("RUST_LOG", "warn");
    if let Some(db) = db {
        cmd.env("LYNXO_DATABASE", db);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_keyring_commands_print_each_keyring_in_turn() {
    let one = &ring(1, &[1]);
    // add: a new kid with a fresh secret, not active; kid 1 and its secret unchanged.
    let (ok, added, err) = run(&["keyring", "add"], one, None);
    assert!(ok, "{err}");
    let added = added.trim();
    let parsed = keyring(added);
    assert_eq!(
        (parsed.active_kid(), parsed.kids().collect::<Vec<_>>()),
        (1, vec![1, 2])
    );
    assert!(added.contains(&format!("1:{}", kid1_hex())));
    assert!(err.contains("edge"), "{err}");
    let (_, again, _) = run(&["keyring", "add"], one, None);
    assert_ne!(again.trim(), added, "every secret is fresh");
    // add --activate, and activate.
    let (ok, active, _) = run(&["keyring", "add", "--activate"], one, None);
    assert!(ok);
    assert_eq!(keyring(active.trim()).active_kid(), 2);
    let (ok, active, _) = run(&["keyring", "activate", "2"], added, None);
    assert!(ok);
    assert_eq!(keyring(active.trim()).active_kid(), 2);
    let (ok, _, err) = run(&["keyring", "activate", "7"], added, None);
    assert!(!ok && err.contains("not in the keyring"), "{err}");
    let (ok, _, err) = run(&["keyring", "add"], "active=1;1:00", None);
    assert!(!ok && err.contains("keyring"), "{err}");

    // retire on a database made by init: the active kid is refused, then kid 2 (not active) is
    // retired, twice, and the next add never takes kid 2 again.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("control.sqlite3");
    init_binary(&db);
    let (ok, _, err) = run(
        &["keyring", "retire", "1", "--reason", "compromised"],
        added,
        Some(&db),
    );
    assert!(!ok && err.contains("active kid"), "{err}");
    let args = [
        "keyring",
        "retire",
        "2",
        "--reason",
        "scheduled",
        "--note",
        "planned",
    ];
    let (ok, without, err) = run(&args, added, Some(&db));
    assert!(ok, "{err}");
    assert_eq!(without.trim(), one, "the keyring without kid 2");
    assert!(err.contains("0 working keys revoked"), "{err}");
    let (ok, same, err) = run(&args, added, Some(&db));
    assert!(
        ok && same == without && err.contains("already retired"),
        "{err}"
    );
    let (ok, next, _) = run(&["keyring", "add"], one, Some(&db));
    assert!(ok);
    assert_eq!(keyring(next.trim()).kids().collect::<Vec<_>>(), [1, 3]);
    let (ok, _, err) = run(&["keyring", "activate", "2"], added, Some(&db));
    assert!(!ok && err.contains("retired"), "{err}");

    // status names the kids without their secrets.
    let (ok, status, err) = run(&["keyring", "status"], added, Some(&db));
    assert!(ok, "{err}");
    assert!(status.contains("kid=1 state=active"), "{status}");
    assert!(
        status.contains("kid=2 state=retired reason=scheduled"),
        "{status}"
    );
    let secret2 = added.rsplit_once("2:").unwrap().1;
    assert!(
        !status.contains(secret2) && !status.contains(&kid1_hex()),
        "{status}"
    );

    // serve refuses a keyring that holds the retired kid.
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--no-publish",
            "--listen",
            "127.0.0.1:0",
            "--database",
        ])
        .arg(&db)
        .env("LYNXO_KEYRING", added)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("kid 2, which was retired"),
        "{err}"
    );
}
