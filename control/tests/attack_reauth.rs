//! Attacks on what re-authentication and the key grant promise (docs/security.md, "Sessions and
//! passwords" and "Management tokens"), each found against main and fixed with its test:
//!
//! - a sign-in whose password check began before a password reset (or change) committed must
//!   not open a session after it: the reset ended every session, and the old password is the
//!   one the owner wanted dead;
//! - a token mint whose password check began before its session was ended (sign out
//!   everywhere) must not mint a token that outlives that session;
//! - a `keys:write` token whose key grant cannot touch a Full Access key must not switch the
//!   whole account to "notify only" (which keeps every leaked Full Access key working);
//! - a token without `account:read` must not read the account through the dashboard's pages;
//! - a backup holds every account's data: it must be readable by its owner only.
//!
//! The races are made exact rather than likely: the competing write is held open, uncommitted,
//! on the store's single writer while the request reads the old state and checks the password
//! (the hasher's `started` count says when it did), then let go.

mod common;

use std::sync::mpsc;

use axum::http::{Method, StatusCode};
use common::{PASSWORD, TestApp};
use control::store::StoreError;
use control::store::{accounts, sessions};
use serde_json::json;

const ORIGIN: &str = "https://keys.lynxo.test";
const EMAIL: &str = "alice@example.com";

/// Signs Alice in; returns the session cookie pair and her user id.
async fn sign_in(app: &TestApp) -> (String, u64) {
    let r = app
        .anonymous()
        .header("origin", ORIGIN)
        .post(
            "/v1/sessions",
            json!({ "email": EMAIL, "password": PASSWORD }),
        )
        .await
        .expect(StatusCode::OK);
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap();
    (cookie.to_owned(), r.body["user_id"].as_u64().unwrap())
}

fn dashboard<'a>(app: &'a TestApp, cookie: &str) -> common::Client<'a> {
    app.anonymous()
        .header("cookie", cookie)
        .header("origin", ORIGIN)
}

/// A write held open on the store's writer: `change` has run inside its transaction, which
/// commits only once [`Held::commit`] is called.
struct Held {
    go: mpsc::Sender<()>,
    done: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl Held {
    async fn start(
        app: &TestApp,
        change: impl FnOnce(&control::store::db::Db<'_>) -> Result<(), StoreError> + Send + 'static,
    ) -> Self {
        let (entered, inside) = mpsc::channel();
        let (go, wait) = mpsc::channel::<()>();
        let store = app.state.store.clone();
        let done = tokio::spawn(async move {
            store
                .write(move |tx| {
                    change(tx)?;
                    entered.send(()).unwrap();
                    wait.recv().unwrap();
                    Ok(())
                })
                .await
        });
        tokio::task::spawn_blocking(move || inside.recv().unwrap())
            .await
            .unwrap();
        Self { go, done }
    }

    async fn commit(self) {
        self.go.send(()).unwrap();
        self.done.await.unwrap().unwrap();
    }
}

/// Waits until the hasher has started a check beyond `before`: the request under test has read
/// the password hash it checks (the read comes first). A request refused before its check would
/// leave this waiting: after two minutes it fails instead of hanging.
async fn check_started(app: &TestApp, before: u64) {
    let started = async {
        while app.state.sign_in.hasher.stats().started == before {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), started)
        .await
        .expect("the request never started its password check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_checked_against_the_old_password_opens_nothing_after_a_reset() {
    let app = TestApp::new();
    let (_, user_id) = sign_in(&app).await;
    let new_hash =
        control::auth::hash_password("a brand new passphrase", &app.state.settings).expect("hash");
    // The operator's reset (`control reset-password`): a new hash and every session ended, in
    // one transaction, held open.
    let held = Held::start(&app, move |tx| {
        assert!(accounts::set_password_hash(tx, user_id, &new_hash, None)?);
        sessions::end_all_but(tx, user_id, None)?;
        Ok(())
    })
    .await;
    let before = app.state.sign_in.hasher.stats().started;
    let client = app.anonymous().header("origin", ORIGIN);
    let attacker = client.post(
        "/v1/sessions",
        json!({ "email": EMAIL, "password": PASSWORD }),
    );
    let reset = async {
        check_started(&app, before).await;
        held.commit().await;
    };
    let (r, ()) = tokio::join!(attacker, reset);
    // The old password was right when it was checked and is wrong since the reset: no session.
    r.problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    let live: i64 = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM sessions WHERE user_id = ?1",
                [i64::try_from(user_id).unwrap()],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(
        live, 0,
        "a session opened with the old password outlived the reset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_mint_whose_session_ends_meanwhile_mints_nothing() {
    let app = TestApp::new();
    let (thief, user_id) = sign_in(&app).await;
    // The owner's "sign out everywhere" from another browser (or a password change) ends the
    // thief's session, held open while the thief's mint checks the password.
    let held = Held::start(&app, move |tx| {
        sessions::end_all_but(tx, user_id, None)?;
        Ok(())
    })
    .await;
    let before = app.state.sign_in.hasher.stats().started;
    let body = json!({ "name": "backdoor", "password": PASSWORD, "scopes": ["keys:write"],
                       "key_grant": "full_access" });
    let client = dashboard(&app, &thief);
    let mint = client.post("/v1/management-tokens", body);
    let owner = async {
        check_started(&app, before).await;
        held.commit().await;
    };
    let (r, ()) = tokio::join!(mint, owner);
    r.problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    let tokens = app.alice().get("/v1/management-tokens").await.body;
    let names: Vec<&str> = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"backdoor"),
        "minted after its session ended: {names:?}"
    );
}

async fn put(client: common::Client<'_>, value: &str) -> common::Resp {
    let body = json!({ "leak_response": value }).to_string().into_bytes();
    client
        .send(Method::PUT, "/v1/account/leak-response", Some(body))
        .await
}

#[tokio::test]
async fn only_a_full_access_grant_may_turn_off_revoking_leaked_keys() {
    let app = TestApp::new();
    let (cookie, _) = sign_in(&app).await;
    let mint = |grant: &'static str| {
        let body = json!({ "name": grant, "password": PASSWORD,
                           "scopes": ["keys:write", "account:read"], "key_grant": grant });
        let client = dashboard(&app, &cookie);
        async move {
            let r = client
                .post("/v1/management-tokens", body)
                .await
                .expect(StatusCode::CREATED);
            format!("Bearer {}", r.body["token"].as_str().unwrap())
        }
    };
    for grant in ["read_only", "read_write"] {
        let token = mint(grant).await;
        let r = put(app.client(Some(token.clone())), "notify")
            .await
            .problem(StatusCode::FORBIDDEN, "key_grant_exceeded");
        assert_eq!(r.body["key_grant"], json!([grant]), "{}", r.body);
        let account = app.client(Some(token)).get("/v1/account").await;
        assert_eq!(account.body["leak_response"], "revoke", "{grant}");
    }
    assert!(
        !app.audit_actions()
            .iter()
            .any(|a| a == "account.leak_response_changed")
    );
    // A Full Access grant, and the signed-in user, may.
    let full = mint("full_access").await;
    put(app.client(Some(full)), "notify")
        .await
        .expect(StatusCode::OK);
    put(dashboard(&app, &cookie), "revoke")
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn the_dashboard_pages_show_the_account_only_to_who_may_read_it() {
    let app = TestApp::new();
    let (cookie, _) = sign_in(&app).await;
    let body = json!({ "name": "verifier", "password": PASSWORD, "scopes": ["keys:verify"] });
    let r = dashboard(&app, &cookie)
        .post("/v1/management-tokens", body)
        .await
        .expect(StatusCode::CREATED);
    let verifier = app.client(Some(format!(
        "Bearer {}",
        r.body["token"].as_str().unwrap()
    )));
    verifier
        .get("/v1/account")
        .await
        .problem(StatusCode::FORBIDDEN, "insufficient_scope");
    for page in [
        "/dashboard/keys",
        "/dashboard/audit",
        "/dashboard/tokens",
        "/dashboard/sessions",
        "/dashboard/keys/00112233445566778899aabbccddeeff",
    ] {
        let r = verifier.get(page).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{page}: {}", r.body);
        assert_eq!(r.header("location"), Some("/sign-in"), "{page}");
        assert!(!r.body.to_string().contains("Alice Inc"), "{page}");
    }
    // The signed-in user and a token that may read the account still get the page.
    let page = dashboard(&app, &cookie).get("/dashboard/keys").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.as_str().unwrap().contains("Alice Inc"));
    let page = app.alice().get("/dashboard/keys").await;
    assert_eq!(page.status, StatusCode::OK);
}

#[tokio::test]
async fn a_backup_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    // `control backup` copies a SQLite file (a PostgreSQL database is backed up with its own
    // tools), so this app is on one whatever `LYNXO_TEST_POSTGRES` says.
    let app = TestApp::builder().sqlite().build();
    let to = app.dir.path().join("backup.sqlite3");
    control::backup::backup(&app.dir.path().join("control.sqlite3"), &to).unwrap();
    // Password hashes and every account's data: not for the other users of the host, whatever
    // the umask of the operator's shell (022 makes 0644 files).
    let mode = std::fs::metadata(&to).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup's mode is {mode:o}");
}
