//! Management tokens and names that cannot lie (issue 12, points 3 and 4) in real headless Chromium
//! against the real control plane (`control serve --no-publish`: no edge is needed). Before the
//! browser starts, this test writes a key name holding a right-to-left override, a description
//! holding a CR/LF and a token name holding a zero-width space straight into the database (the
//! SQLite file or the PostgreSQL database the suite runs on), as rows stored before the text rule
//! would be; `tests/browser/account_tokens.mjs` then checks that they render isolated, with their
//! hidden characters shown, that an audit event carrying them forges no row or line, that token
//! scopes are chosen in the dashboard (and hold), that a wrong password is refused, and that a bidi
//! override in a new token's name is refused with the message shown. Screenshots go to
//! `target/account-tokens-screenshots/`.

use std::time::Duration;

use e2e::browser::{ready_browser, run_script};
use e2e::control::{EMAIL, PASSWORD};
use e2e::database::Database;
use e2e::http;
use e2e::stack::workspace_root;
use e2e::standalone::Standalone;

/// The whole browser script, generously (it takes seconds).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn token_scopes_and_names_that_cannot_lie_in_headless_chromium() {
    let root = workspace_root();
    let browser = ready_browser();
    let serve = Standalone::start("Acme", EMAIL, PASSWORD);
    let (addr, token) = (serve.addr, serve.account.token.clone());
    let database = serve.database();

    // A key made through the API, then its name and description rewritten in the file as rows
    // from before the text rule would hold them; the same for `init`'s token name.
    let bearer = format!("Bearer {token}");
    let created = http::send(
        addr,
        "POST",
        "/v1/keys",
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        br#"{"name":"clean","environment":"production","permission":"read_only"}"#,
    )
    .unwrap_or_else(|e| panic!("create key: {e}"));
    assert_eq!(created.status, 201, "{}", created.text());
    let key_id = created.json()["id"].as_str().unwrap_or_default().to_owned();
    let mut db = Database::open(&database);
    let changed = db.execute(
        "UPDATE api_keys SET name = ?2, description = ?3 WHERE id = ?1",
        &[
            (&key_id).into(),
            "\u{202E}noitcudorp-ffo-deripxe".into(),
            "line one\r\nkey.revoked by user:1 FORGED".into(),
        ],
    );
    assert_eq!(changed, 1);
    db.execute(
        "UPDATE management_tokens SET name = ?1 WHERE id = 1",
        &["Prod\u{200B} key".into()],
    );
    // A revoke reason from before the rule, as its event stored it: a CR/LF meant to forge a
    // second row and an override, as the next `seq` (named: on PostgreSQL it is no rowid).
    // (Written outside the chain: `verify-audit` would flag it; what is checked here is how it
    // renders.)
    let details = serde_json::json!({
        "reason": "rotated\r\n42  key.revoked  user:1 \u{202E}DEGGORF",
        "list_version": 1,
    });
    db.execute(
        "INSERT INTO audit_events (seq, at, account_id, actor, action, target, source, details, \
         prev_hash, hash) VALUES ((SELECT max(seq) + 1 FROM audit_events), 1767225600, 1, \
         'user:1', 'key.revoked', ?1, NULL, ?2, ?3, ?3)",
        &[
            (&key_id).into(),
            details.to_string().into(),
            vec![0u8].into(),
        ],
    );
    drop(db);

    let screenshots = root.join("target/account-tokens-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap_or_else(|e| panic!("{screenshots:?}: {e}"));
    let url = serve.url();
    let (ok, output) = run_script(
        &root,
        "tests/browser/account_tokens.mjs",
        &[
            ("LYNXO_DASHBOARD_URL", url.as_ref()),
            ("LYNXO_EMAIL", EMAIL.as_ref()),
            ("LYNXO_PASSWORD", PASSWORD.as_ref()),
            ("LYNXO_KEY_ID", key_id.as_ref()),
            ("LYNXO_SCREENSHOTS", screenshots.as_os_str()),
            ("LYNXO_CHROMIUM", browser.as_os_str()),
        ],
        SCRIPT_DEADLINE,
    );
    eprintln!("{output}");
    assert!(
        ok,
        "tests/browser/account_tokens.mjs failed (screenshot: {}):\n{output}\ncontrol plane log:\n{}",
        screenshots.join("failure.png").display(),
        serve.log()
    );

    // What the browser made holds in the API: the token it created has the scopes it chose,
    // and the refused name left nothing.
    let list = http::send(
        addr,
        "GET",
        "/v1/management-tokens",
        &[("authorization", bearer.as_str())],
        b"",
    )
    .unwrap_or_else(|e| panic!("list tokens: {e}"));
    let list = list.json();
    let tokens = list["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(tokens.len(), 2, "{list}");
    assert_eq!(tokens[0]["name"], "ci reader");
    assert_eq!(
        tokens[0]["scopes"],
        serde_json::json!(["keys:read", "usage:read"])
    );
    assert_eq!(tokens[0]["key_grant"], "read_only");
}
