//! Keys the control plane issues tell nothing about their account to whoever reads them: the
//! body of every key from create and rotate, decoded, holds neither the account id nor the key
//! id nor the issue time, and shows no run of zeros; only the keyring opens it.

mod common;

use axum::http::StatusCode;
use common::{START, TestApp, keyring};
use serde_json::{Value, json};
use shared::key::{self, KeyId};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The payload bytes of a key text: the base62 digits after `lnx_<env>_`, checksum excluded.
fn payload_of(text: &str) -> Vec<u8> {
    let body = &text[text.rfind('_').unwrap() + 1..];
    shared::base62::decode(&body[..key::PAYLOAD_CHARS]).unwrap()
}

#[track_caller]
fn assert_sealed(app: &TestApp, issued: &Value) {
    let text = issued["key"].as_str().unwrap();
    let payload = payload_of(text);
    let key_id = KeyId::parse_hex(issued["id"].as_str().unwrap()).unwrap();
    let created_at = issued["created_at"].as_u64().unwrap();
    for (what, bytes) in [
        ("account id", &app.alice_account.to_be_bytes()[..]),
        ("key id", &key_id.0[..]),
        ("first half of the key id", &key_id.0[..8]),
        ("second half of the key id", &key_id.0[8..]),
        ("issue time", &created_at.to_be_bytes()[..]),
    ] {
        assert!(!contains(&payload, bytes), "{what} readable in {text}");
    }
    let body = &text[text.rfind('_').unwrap() + 1..];
    assert!(!body.contains("000000"), "a run of zeros in {text}");

    // Sealed, not lost: the keyring opens it to the same account and key.
    let claims = key::verify(text, &keyring(), START).unwrap();
    assert_eq!(claims.account_id, app.alice_account);
    assert_eq!(claims.key_id, key_id);
}

#[tokio::test]
async fn issued_keys_do_not_reveal_their_account_or_key_id() {
    let app = TestApp::new();
    let mut issued = vec![
        app.create_key(json!({})).await,
        app.create_key(json!({ "environment": "development", "permission": "read_only" }))
            .await,
        app.create_key(json!({
            "environment": "staging",
            "permission": "custom",
            "scopes": ["jobs:read"],
            "expires_at": START + 3600,
        }))
        .await,
        app.create_key(json!({ "permission": "full_access" })).await,
    ];
    let rotated = app
        .alice()
        .post(
            &format!("/v1/keys/{}/rotate", issued[0]["id"].as_str().unwrap()),
            json!({ "grace_period_seconds": 0 }),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    issued.push(rotated["key"].clone());
    for key in &issued {
        assert_sealed(&app, key);
    }
}
