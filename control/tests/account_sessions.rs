//! Sessions a user can see and end, the idle timeout, the per-user cap, the password change and
//! the operator's reset (issue 12, points 1 and 2), through the real router and database.

mod common;

use std::process::Command;
use std::sync::Arc;

use axum::http::StatusCode;
use common::{PASSWORD, START, TestApp};
use control::auth::ResetPasswordError;
use control::secret::HashedToken;
use control::store::StoreError;
use control::store::sessions::{self, NewSession};
use serde_json::{Value, json};

const ORIGIN: &str = "https://keys.lynxo.test";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// A signed-in browser: its cookie pair and its session's id.
struct Browser {
    cookie: String,
    id: u64,
}

/// Signs `email` in with `password` from a browser that says it is `agent`.
async fn sign_in_as(app: &TestApp, email: &str, password: &str, agent: &str) -> Browser {
    let r = app
        .anonymous()
        .header("origin", ORIGIN)
        .header("user-agent", agent)
        .post(
            "/v1/sessions",
            json!({ "email": email, "password": password }),
        )
        .await
        .expect(StatusCode::OK);
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    Browser {
        cookie,
        id: r.body["session_id"].as_u64().unwrap(),
    }
}

async fn sign_in(app: &TestApp, agent: &str) -> Browser {
    sign_in_as(app, "alice@example.com", PASSWORD, agent).await
}

/// A client carrying `browser`'s cookie, from the dashboard's origin.
fn from<'a>(app: &'a TestApp, browser: &Browser) -> common::Client<'a> {
    app.anonymous()
        .header("cookie", &browser.cookie)
        .header("origin", ORIGIN)
}

/// The status of an ordinary authenticated read by `browser`.
async fn works(app: &TestApp, browser: &Browser) -> StatusCode {
    from(app, browser).get("/v1/keys").await.status
}

async fn list(app: &TestApp, browser: &Browser) -> Vec<Value> {
    from(app, browser)
        .get("/v1/sessions")
        .await
        .expect(StatusCode::OK)
        .body["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Every audit event of alice's account with this action, newest first.
async fn events(app: &TestApp, action: &str) -> Vec<Value> {
    let page = app
        .alice()
        .get("/v1/audit-events?limit=1000")
        .await
        .expect(StatusCode::OK)
        .body;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

fn stored_sessions(app: &TestApp) -> i64 {
    app.state
        .store
        .read_blocking::<_, StoreError, _>(|c| {
            Ok(c.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))?)
        })
        .unwrap()
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_other_session() {
    let app = TestApp::new();
    let laptop = sign_in(&app, "laptop").await;
    let phone = sign_in(&app, "phone").await;
    let desk = sign_in(&app, "desk").await;
    let bobs = sign_in_as(&app, "bob@example.com", PASSWORD, "bob").await;
    let seen = list(&app, &desk).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0]["id"], desk.id, "newest first");
    assert_eq!(seen[0]["current"], true);
    assert_eq!(seen[1]["current"], false);
    assert_eq!(seen[2]["user_agent"], "laptop");
    assert_eq!(seen[0]["created_at"], START);
    assert_eq!(seen[0]["expires_at"], START + 12 * 3600);
    assert_eq!(seen[0]["idle_expires_at"], START + 3600);
    assert!(!seen.iter().any(|s| s["id"] == bobs.id), "only alice's own");
    // A write with the cookie from another site, and a management token, are refused.
    app.anonymous()
        .header("cookie", &desk.cookie)
        .delete("/v1/sessions/others")
        .await
        .problem(StatusCode::FORBIDDEN, "cross_site_request");
    for path in ["/v1/sessions", "/v1/sessions/others"] {
        let method = if path.ends_with("others") {
            "DELETE"
        } else {
            "GET"
        };
        let r = app.alice().send(method.parse().unwrap(), path, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
        assert_eq!(r.body["code"], "session_required");
    }
    assert_eq!(works(&app, &laptop).await, StatusCode::OK);

    let ended = from(&app, &desk)
        .delete("/v1/sessions/others")
        .await
        .expect(StatusCode::OK);
    assert_eq!(ended.body["ended"], json!([laptop.id, phone.id]));
    for other in [&laptop, &phone] {
        from(&app, other)
            .get("/v1/keys")
            .await
            .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    assert_eq!(works(&app, &desk).await, StatusCode::OK);
    assert_eq!(works(&app, &bobs).await, StatusCode::OK, "bob untouched");
    assert_eq!(list(&app, &desk).await.len(), 1);
    // Twice is harmless and records nothing more.
    let again = from(&app, &desk)
        .delete("/v1/sessions/others")
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.body["ended"], json!([]));
    let recorded = events(&app, "user.sessions_ended").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["details"]["reason"], "sign_out_everywhere");
    assert_eq!(
        recorded[0]["details"]["session_ids"],
        json!([laptop.id, phone.id])
    );
    assert!(recorded[0]["actor"].as_str().unwrap().starts_with("user:"));
}

/// Two sessions signing each other out at the same moment (the owner and a thief): the first to
/// commit wins, the session it ended ends nothing, so one of them always stays signed in.
#[tokio::test]
async fn two_sessions_signing_each_other_out_at_once_leave_one() {
    let app = TestApp::new();
    for round in 0..10 {
        let owner = sign_in(&app, "owner").await;
        let thief = sign_in(&app, "thief").await;
        let (a, b) = tokio::join!(
            async { from(&app, &owner).delete("/v1/sessions/others").await },
            async { from(&app, &thief).delete("/v1/sessions/others").await },
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert!(
            statuses == [StatusCode::OK, StatusCode::UNAUTHORIZED]
                || statuses == [StatusCode::OK, StatusCode::OK],
            "round {round}: {statuses:?}"
        );
        let alive = [works(&app, &owner).await, works(&app, &thief).await];
        assert_eq!(
            alive.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "round {round}: {alive:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_session_ends_and_use_writes_its_last_seen_at_most_once_a_minute() {
    let app = TestApp::builder()
        .settings(|s| s.session_idle = 600)
        .build();
    let browser = sign_in(&app, "idle").await;
    let last_seen = |list: &[Value]| list[0]["last_seen_at"].as_u64().unwrap();
    // Used 30 s later: within the write interval, nothing is written.
    app.advance(30);
    assert_eq!(works(&app, &browser).await, StatusCode::OK);
    assert_eq!(last_seen(&list(&app, &browser).await), START);
    // Used every 500 s, it lives past the idle timeout.
    for step in 1..=3 {
        app.advance(500);
        assert_eq!(works(&app, &browser).await, StatusCode::OK, "step {step}");
    }
    let seen = list(&app, &browser).await;
    assert_eq!(last_seen(&seen), START + 30 + 1500);
    assert_eq!(seen[0]["idle_expires_at"], START + 30 + 1500 + 600);
    // Unused for the idle timeout, it ends.
    app.advance(600);
    from(&app, &browser)
        .get("/v1/keys")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    // The absolute timeout still ends a session in use.
    let busy = sign_in(&app, "busy").await;
    for _ in 0..(12 * 3600 / 500) {
        app.advance(500);
        assert_eq!(works(&app, &busy).await, StatusCode::OK);
    }
    app.advance(500);
    assert_eq!(works(&app, &busy).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_cap_ends_the_oldest_session() {
    let app = TestApp::builder()
        .settings(|s| s.sessions_per_user = 3)
        .build();
    let mut browsers = Vec::new();
    for i in 0..3 {
        browsers.push(sign_in(&app, &format!("browser {i}")).await);
        app.advance(1);
    }
    let fourth = sign_in(&app, "browser 3").await;
    assert_eq!(works(&app, &browsers[0]).await, StatusCode::UNAUTHORIZED);
    for b in browsers[1..].iter().chain([&fourth]) {
        assert_eq!(works(&app, b).await, StatusCode::OK);
    }
    let ids: Vec<u64> = list(&app, &fourth)
        .await
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [fourth.id, browsers[2].id, browsers[1].id]);
    let recorded = events(&app, "user.sessions_ended").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["details"]["reason"], "session_cap");
    assert_eq!(
        recorded[0]["details"]["session_ids"],
        json!([browsers[0].id])
    );
    // Sessions that ended by time do not count against the cap: they are deleted instead.
    app.advance(12 * 3600);
    let fresh = sign_in(&app, "fresh").await;
    assert_eq!(list(&app, &fresh).await.len(), 1);
    assert_eq!(events(&app, "user.sessions_ended").await.len(), 1);
}

#[tokio::test]
async fn parallel_sign_ins_never_exceed_the_cap() {
    const CAP: u32 = 3;
    let app = Arc::new(
        TestApp::builder()
            .settings(|s| {
                s.sessions_per_user = CAP;
                s.sign_in_hashes = 8;
            })
            .build(),
    );
    // Twelve browsers sign in at once; one sign-in per email runs at a time, so those told
    // `sign_in_busy` try again until every one got in.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            loop {
                let r = app
                    .anonymous()
                    .header("origin", ORIGIN)
                    .post(
                        "/v1/sessions",
                        json!({ "email": "alice@example.com", "password": PASSWORD }),
                    )
                    .await;
                if r.status == StatusCode::OK {
                    let cookie = r.header("set-cookie").unwrap();
                    return (i, cookie.split(';').next().unwrap().to_owned());
                }
                assert_eq!(r.body["code"], "sign_in_busy", "{}", r.body);
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut cookies = Vec::new();
    for task in tasks {
        cookies.push(task.await.unwrap().1);
    }
    let mut working = 0;
    for cookie in &cookies {
        let r = app
            .anonymous()
            .header("cookie", cookie)
            .get("/v1/keys")
            .await;
        if r.status == StatusCode::OK {
            working += 1;
        }
    }
    assert_eq!(working, CAP);
    assert_eq!(stored_sessions(&app), i64::from(CAP));

    // The same at the store, where the writes of a burst share one transaction: fifty sessions
    // of one user opened at once leave exactly the cap.
    let store = app.state.store.clone();
    let mut writes = Vec::new();
    for i in 0..50_u32 {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            store
                .write(move |tx| {
                    let hash = HashedToken::of(&format!("parallel {i}"));
                    let new = NewSession {
                        token_hash: &hash,
                        user_id: 1,
                        account_id: 1,
                        now: START,
                        expires_at: START + 3600,
                        ip: None,
                        user_agent: "",
                    };
                    sessions::create(tx, &new, 3600, CAP, None)
                })
                .await
                .unwrap()
        }));
    }
    let mut ended = 0;
    for w in writes {
        ended += w.await.unwrap().ended_by_cap.len();
    }
    assert_eq!(stored_sessions(&app), i64::from(CAP));
    // The three from before and the fifty new, less the three kept: each ended exactly once.
    assert_eq!(ended, 50);
}

#[tokio::test]
async fn ending_another_users_session_is_404_and_ending_ones_own_works() {
    let app = TestApp::new();
    let alice = sign_in(&app, "alice").await;
    let other_tab = sign_in(&app, "alice 2").await;
    let bob = sign_in_as(&app, "bob@example.com", PASSWORD, "bob").await;
    for id in [
        bob.id.to_string(),
        "999999".into(),
        "x".into(),
        "-1".into(),
        "99999999999999999999999".into(),
        // Bob's id, percent-encoded: decoded, it is still not alice's.
        bob.id
            .to_string()
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect(),
    ] {
        from(&app, &alice)
            .delete(&format!("/v1/sessions/{id}"))
            .await
            .problem(StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(works(&app, &bob).await, StatusCode::OK);
    assert!(events(&app, "user.sessions_ended").await.is_empty());
    // Bob's account sees no trace either.
    let bobs = app.bob().get("/v1/audit-events").await.body;
    assert!(!bobs.to_string().contains("sessions_ended"));

    let r = from(&app, &alice)
        .delete(&format!("/v1/sessions/{}", other_tab.id))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(r.header("set-cookie").is_none(), "not the caller's own");
    assert_eq!(works(&app, &other_tab).await, StatusCode::UNAUTHORIZED);
    from(&app, &alice)
        .delete(&format!("/v1/sessions/{}", other_tab.id))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    // Its own session, by id: signed out, cookie cleared.
    let r = from(&app, &alice)
        .delete(&format!("/v1/sessions/{}", alice.id))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(works(&app, &alice).await, StatusCode::UNAUTHORIZED);
    let recorded = events(&app, "user.sessions_ended").await;
    assert_eq!(recorded.len(), 2);
    assert!(
        recorded
            .iter()
            .all(|e| e["details"]["reason"] == "ended_by_user")
    );
}

#[tokio::test]
async fn sessions_record_the_address_and_a_cleaned_bounded_user_agent() {
    let app = TestApp::new();
    // The address: the TCP peer as the server saw it.
    let mut agent = b"Mozilla/5.0 \xe2\x80\xae evil \xe2\x80\x8b".to_vec();
    agent.extend(std::iter::repeat_n(b'A', 1000));
    let mut request = axum::http::Request::post("/v1/sessions")
        .header("content-type", "application/json")
        .header("origin", ORIGIN)
        .header(
            "user-agent",
            axum::http::HeaderValue::from_bytes(&agent).unwrap(),
        )
        .body(axum::body::Body::from(
            json!({ "email": "alice@example.com", "password": PASSWORD }).to_string(),
        ))
        .unwrap();
    let addr: std::net::SocketAddr = "203.0.113.9:4242".parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    let response = tower::ServiceExt::oneshot(app.router(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let browser = Browser { cookie, id: 0 };
    let seen = &list(&app, &browser).await[0];
    assert_eq!(seen["created_ip"], "203.0.113.9");
    assert_eq!(seen["last_seen_ip"], "203.0.113.9");
    let stored = seen["user_agent"].as_str().unwrap();
    assert_eq!(stored.len(), 256);
    assert!(
        stored.starts_with("Mozilla/5.0 ??? evil ???AAA"),
        "{stored}"
    );
    assert!(stored.bytes().all(|b| (0x20..0x7f).contains(&b)));
}

#[tokio::test]
async fn signing_in_again_replaces_the_browsers_session() {
    let app = TestApp::new();
    let first = sign_in(&app, "same browser").await;
    let r = app
        .anonymous()
        .header("origin", ORIGIN)
        .header("cookie", &first.cookie)
        .post(
            "/v1/sessions",
            json!({ "email": "alice@example.com", "password": PASSWORD }),
        )
        .await
        .expect(StatusCode::OK);
    let second = r.body["session_id"].as_u64().unwrap();
    assert_ne!(second, first.id);
    assert_eq!(works(&app, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(stored_sessions(&app), 1);
}

#[tokio::test]
async fn expired_sessions_are_purged() {
    let app = TestApp::new();
    for i in 0..5 {
        sign_in(&app, &format!("old {i}")).await;
    }
    sign_in_as(&app, "bob@example.com", PASSWORD, "bob").await;
    assert_eq!(stored_sessions(&app), 6);
    app.advance(3600);
    // Anyone's sign-in purges ended rows, a bounded batch at a time.
    sign_in_as(&app, "bob@example.com", PASSWORD, "bob").await;
    assert_eq!(stored_sessions(&app), 1);
}

#[tokio::test]
async fn a_password_change_ends_the_others_and_the_old_password_stops_working() {
    let app = TestApp::new();
    let other = sign_in(&app, "other").await;
    let me = sign_in(&app, "me").await;
    let change =
        |current: &str, new: &str| json!({ "current_password": current, "new_password": new });
    // Shape and rule first: nothing is hashed or counted.
    for (body, field) in [
        (change("", NEW_PASSWORD), "current_password"),
        (change(&"x".repeat(1025), NEW_PASSWORD), "current_password"),
        (change(PASSWORD, "short"), "new_password"),
        (change(PASSWORD, &"x".repeat(1025)), "new_password"),
        (change(PASSWORD, PASSWORD), "new_password"),
    ] {
        let r = from(&app, &me)
            .post("/v1/user/password", body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["field"], field);
    }
    from(&app, &me)
        .post("/v1/user/password", json!({ "new_password": NEW_PASSWORD }))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    app.alice()
        .post("/v1/user/password", change(PASSWORD, NEW_PASSWORD))
        .await
        .problem(StatusCode::FORBIDDEN, "session_required");
    app.anonymous()
        .header("cookie", &me.cookie)
        .post("/v1/user/password", change(PASSWORD, NEW_PASSWORD))
        .await
        .problem(StatusCode::FORBIDDEN, "cross_site_request");
    from(&app, &me)
        .post("/v1/user/password", change("not my password", NEW_PASSWORD))
        .await
        .problem(StatusCode::FORBIDDEN, "wrong_password");
    assert_eq!(works(&app, &other).await, StatusCode::OK, "nothing changed");
    assert_eq!(events(&app, "user.password_change_failed").await.len(), 1);

    let r = from(&app, &me)
        .post("/v1/user/password", change(PASSWORD, NEW_PASSWORD))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["sessions_ended"], json!([other.id]));
    assert_eq!(works(&app, &other).await, StatusCode::UNAUTHORIZED);
    assert_eq!(works(&app, &me).await, StatusCode::OK);
    app.anonymous()
        .post(
            "/v1/sessions",
            json!({ "email": "alice@example.com", "password": PASSWORD }),
        )
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    sign_in_as(&app, "alice@example.com", NEW_PASSWORD, "new").await;
    let changed = events(&app, "user.password_changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["details"]["sessions_ended"], json!([other.id]));
    assert!(!changed[0].to_string().contains(NEW_PASSWORD));
    // The old password is no longer the current one.
    from(&app, &me)
        .post(
            "/v1/user/password",
            change(PASSWORD, "yet another passphrase"),
        )
        .await
        .problem(StatusCode::FORBIDDEN, "wrong_password");
}

#[tokio::test]
async fn a_stolen_session_cannot_guess_the_password_faster_than_sign_in() {
    let app = TestApp::new();
    let stolen = sign_in(&app, "thief").await;
    let guess = |n: usize| json!({ "current_password": format!("guess number {n}"), "new_password": NEW_PASSWORD });
    for n in 0..5 {
        from(&app, &stolen)
            .post("/v1/user/password", guess(n))
            .await
            .problem(StatusCode::FORBIDDEN, "wrong_password");
    }
    // The budget of this client for this email is spent: even the right password is refused,
    // and so is a sign-in from the same client.
    let r = from(&app, &stolen)
        .post(
            "/v1/user/password",
            json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }),
        )
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS, "too_many_sign_in_attempts");
    assert!(r.header("retry-after").is_some());
    app.anonymous()
        .post(
            "/v1/sessions",
            json!({ "email": "alice@example.com", "password": PASSWORD }),
        )
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS, "too_many_sign_in_attempts");
    assert_eq!(events(&app, "user.password_change_failed").await.len(), 5);
}

#[tokio::test]
async fn reset_password_sets_a_new_one_and_ends_every_session() {
    let app = TestApp::new();
    let a = sign_in(&app, "a").await;
    let b = sign_in(&app, "b").await;
    let (store, settings) = (app.state.store.clone(), Arc::clone(&app.state.settings));
    let reset = move |email: &'static str, password: &'static str| {
        let (store, settings) = (store.clone(), Arc::clone(&settings));
        tokio::task::spawn_blocking(move || {
            control::auth::reset_password(&store, &settings, email, password, START)
        })
    };
    assert!(matches!(
        reset("nobody@example.com", NEW_PASSWORD).await.unwrap(),
        Err(ResetPasswordError::UnknownUser)
    ));
    assert!(matches!(
        reset("alice@example.com", "too short").await.unwrap(),
        Err(ResetPasswordError::InvalidPassword)
    ));
    assert!(matches!(
        reset("not an email", NEW_PASSWORD).await.unwrap(),
        Err(ResetPasswordError::InvalidEmail)
    ));
    assert_eq!(
        works(&app, &a).await,
        StatusCode::OK,
        "refusals change nothing"
    );
    let done = reset(" Alice@Example.com", NEW_PASSWORD)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.sessions_ended, [a.id, b.id]);
    for browser in [&a, &b] {
        assert_eq!(works(&app, browser).await, StatusCode::UNAUTHORIZED);
    }
    app.anonymous()
        .post(
            "/v1/sessions",
            json!({ "email": "alice@example.com", "password": PASSWORD }),
        )
        .await
        .expect(StatusCode::UNAUTHORIZED);
    sign_in_as(&app, "alice@example.com", NEW_PASSWORD, "back").await;
    let recorded = events(&app, "user.password_reset").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["actor"], "cli");
    assert_eq!(
        recorded[0]["details"]["sessions_ended"],
        json!([a.id, b.id])
    );
}

/// The real binary: `control reset-password` on a database `init` made.
#[test]
fn the_reset_password_command() {
    const BIN: &str = env!("CARGO_BIN_EXE_control");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.sqlite3");
    let run = |args: &[&str], password: &str| {
        Command::new(BIN)
            .args(args)
            .arg("--database")
            .arg(&db)
            .env("LYNXO_AUDIT_KEYRING", common::AUDIT_KEYRING)
            .env("LYNXO_INIT_PASSWORD", password)
            .env("LYNXO_RESET_PASSWORD", password)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let init = run(&["init", "--email", "ops@example.com"], PASSWORD);
    assert!(init.status.success(), "{init:?}");
    let out = run(
        &["reset-password", "--email", "ops@example.com"],
        NEW_PASSWORD,
    );
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("user_id=1") && printed.contains("sessions_ended=0"));
    assert!(!printed.contains(NEW_PASSWORD));
    for (email, password) in [
        ("nobody@example.com", NEW_PASSWORD),
        ("ops@example.com", "short"),
    ] {
        let out = run(&["reset-password", "--email", email], password);
        assert!(!out.status.success(), "{email}: {out:?}");
    }
}

/// The new secrets of this change, hunted where they must not be: a session id (the cookie's
/// value) and a changed password are in neither the database (`common::database_files`) nor the
/// logs; the
/// session list shows neither the id nor its hash.
#[tokio::test]
async fn session_ids_and_new_passwords_are_nowhere_in_the_database_or_logs() {
    let logs = common::capture_logs();
    let app = TestApp::new();
    let me = sign_in(&app, "leak hunt").await;
    let other = sign_in(&app, "other").await;
    from(&app, &me)
        .post(
            "/v1/user/password",
            json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }),
        )
        .await
        .expect(StatusCode::OK);
    from(&app, &me)
        .post(
            "/v1/user/password",
            json!({ "current_password": "wrong guess here", "new_password": "never stored!!" }),
        )
        .await
        .problem(StatusCode::FORBIDDEN, "wrong_password");
    let listed = from(&app, &me).get("/v1/sessions").await.body.to_string();
    let mut secrets = vec![
        NEW_PASSWORD.to_owned(),
        "never stored!!".to_owned(),
        "wrong guess here".to_owned(),
    ];
    for browser in [&me, &other] {
        let value = browser.cookie.split_once('=').unwrap().1.to_owned();
        let hash = HashedToken::of(&value);
        assert!(!listed.contains(&value));
        assert!(!listed.contains(&hex::encode(hash.as_bytes())));
        secrets.push(value);
    }
    let files = common::database_files(&app);
    let logged = logs.bytes();
    assert!(!logged.is_empty());
    for secret in &secrets {
        let files = files.iter().map(|(name, bytes)| (*name, bytes));
        for (name, bytes) in files.chain([("logs", &logged)]) {
            assert!(
                !common::contains(bytes, secret.as_bytes()),
                "a secret is in the {name}"
            );
        }
    }
}
