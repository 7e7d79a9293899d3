//! `POST /v1/keys/verify` answers what the edge answers: the same keys, methods and paths go
//! through the edge's own decision code (the `edge` crate's pure `decide`, built natively) and
//! through the control plane's verify endpoint, and the (valid, status, code, reason, scope) of
//! every answer must match.

mod common;

use axum::http::StatusCode;
use common::{START, TestApp};
use edge::config::Config;
use edge::decide::{Incoming, RevocationStatus, decide};
use serde_json::{Value, json};
use shared::key::{Claims, Environment, KeyId};
use shared::mac::Keyring;
use shared::scope::Permission;

/// (valid, status, code, reason, scope): what both sides must agree on.
type Answer = (
    bool,
    Option<u64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn text(v: &Value, name: &str) -> Option<String> {
    v[name].as_str().map(str::to_owned)
}

/// The edge's answer to `key` calling `method path`, the key's id being revoked or not.
fn at_the_edge(
    cfg: &Config,
    now: u64,
    key: &str,
    revoked: bool,
    method: &str,
    path: &str,
) -> Answer {
    let authorization = format!("Bearer {key}");
    let req = Incoming {
        method,
        path,
        query: None,
        authorization: Some(&authorization),
    };
    let status = if revoked {
        RevocationStatus::Revoked
    } else {
        RevocationStatus::Clear
    };
    match decide(&req, cfg, now, |_| status).answer {
        Ok(_) => (true, None, None, None, None),
        Err(reply) => {
            let body: Value = serde_json::from_str(&reply.body).unwrap();
            (
                false,
                Some(u64::from(reply.status)),
                text(&body, "code"),
                text(&body, "reason"),
                text(&body, "scope"),
            )
        }
    }
}

/// The verify endpoint's answer to the same call.
async fn at_the_control_plane(app: &TestApp, key: &str, method: &str, path: &str) -> Answer {
    let body = json!({ "key": key, "method": method, "path": path, "environment": "production" });
    let v = app
        .alice()
        .post("/v1/keys/verify", body)
        .await
        .expect(StatusCode::OK)
        .body;
    (
        v["valid"].as_bool().unwrap(),
        v["status"].as_u64(),
        text(&v, "code"),
        text(&v, "reason"),
        text(&v, "scope"),
    )
}

/// A key no keyring of ours signed, shaped exactly like a real one.
fn forged() -> String {
    let ring = Keyring::from_config(&format!("active=1;1:{}", "66".repeat(32))).unwrap();
    let claims = Claims {
        kid: 1,
        account_id: 1,
        key_id: KeyId([0x42; 16]),
        environment: Environment::Production,
        scopes: Permission::FullAccess.scopes(),
        issued_at: START,
        expires_at: None,
    };
    shared::key::issue(&claims, &ring).unwrap().into_inner()
}

#[tokio::test]
async fn the_verify_endpoint_answers_what_the_edge_answers() {
    let app = TestApp::builder()
        .settings(|s| s.verify_per_minute = 10_000)
        .build();
    let key = |v: &Value| v["key"].as_str().unwrap().to_owned();
    let read_only = key(&app.create_key(json!({ "permission": "read_only" })).await);
    let full = key(&app.create_key(json!({ "permission": "full_access" })).await);
    let custom = key(&app
        .create_key(json!({ "permission": "custom", "scopes": ["jobs:write"] }))
        .await);
    let expiring = key(&app.create_key(json!({ "expires_at": START + 10 })).await);
    let development = key(&app
        .create_key(json!({ "environment": "development" }))
        .await);
    let revoked = app.create_key(json!({ "name": "gone" })).await;
    app.alice()
        .post(
            &format!("/v1/keys/{}/revoke", revoked["id"].as_str().unwrap()),
            json!({ "reason": "parity" }),
        )
        .await
        .expect(StatusCode::OK);
    let revoked = key(&revoked);
    app.advance(20);
    let mut typo = read_only.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();

    let keys: Vec<(&str, String)> = vec![
        ("read only", read_only.clone()),
        ("full access", full),
        ("custom", custom),
        ("expired", expiring),
        ("development", development),
        ("revoked", revoked.clone()),
        ("forged", forged()),
        ("mis-copied", typo),
        ("cut short", read_only[..read_only.len() - 3].to_owned()),
        ("no prefix", read_only[4..].to_owned()),
        ("space around", format!(" {read_only}")),
        (
            "bad character",
            format!("{}-{}", &read_only[..20], &read_only[21..]),
        ),
        ("not a key", "sk_live_123".to_owned()),
    ];
    let routes = [
        ("GET", "/v1/jobs"),
        ("HEAD", "/v1/jobs/abc"),
        ("POST", "/v1/jobs"),
        ("PUT", "/v1/jobs"),
        ("GET", "/v2/nope"),
        ("GET", "/v1/jobs/%2e%2e"),
        ("PATCH", "/v1/account"),
    ];
    // The edge's own test deployment: production, signed with the control plane's test keyring.
    let cfg = edge::testing::config();
    let now = START + 20;
    let mut kinds = std::collections::BTreeSet::new();
    for (name, text) in &keys {
        for (method, path) in routes {
            let edge = at_the_edge(&cfg, now, text, *text == revoked, method, path);
            let control = at_the_control_plane(&app, text, method, path).await;
            assert_eq!(control, edge, "{name} key, {method} {path}");
            kinds.insert((edge.1, edge.2.clone(), edge.3.clone()));
        }
    }
    // The inputs reach every kind of answer, so the comparison covers every mapping.
    for expected in [
        (None, None, None),
        (Some(401), Some("invalid_token"), None),
        (Some(401), Some("invalid_token"), Some("expired")),
        (Some(401), Some("invalid_token"), Some("wrong_environment")),
        (Some(401), Some("invalid_token"), Some("invalid_checksum")),
        (Some(401), Some("invalid_token"), Some("invalid_length")),
        (Some(401), Some("invalid_token"), Some("missing_prefix")),
        (
            Some(401),
            Some("invalid_token"),
            Some("surrounding_whitespace"),
        ),
        (Some(401), Some("invalid_token"), Some("invalid_character")),
        (Some(403), Some("insufficient_scope"), None),
        (Some(404), Some("not_found"), None),
        (Some(405), Some("method_not_allowed"), None),
        (Some(400), Some("invalid_path"), None),
    ] {
        let expected = (
            expected.0,
            expected.1.map(str::to_owned),
            expected.2.map(str::to_owned),
        );
        assert!(kinds.contains(&expected), "no input reached {expected:?}");
    }
}
