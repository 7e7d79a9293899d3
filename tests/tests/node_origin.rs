//! End to end: a Node origin (`examples/node-origin/server.mjs`, checking identities with the
//! `@lynxo/keys` package as a user installs it, from its `npm pack` tarball) behind the real
//! worker under `wrangler dev`. Requests through the edge reach it and are accepted; the same
//! requests sent straight to it, with their identity replayed, changed, or forged, or with
//! another query or body, are refused.
//!
//! The package is built first (`js/build.sh`) when `js/pkg` is older than its sources.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use e2e::capture::{Capture, Captured};
use e2e::http::{self, Response};
use e2e::keys::{self, key_id};
use e2e::stack::{Options, Stack, unix_now, workspace_root};
use serde_json::Value;
use shared::identity::{Identity, Request, RequestId, SIGNATURE_HEADER};
use shared::key::Environment;
use shared::mac::Keyring;
use shared::scope::Permission;

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(m) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(m);
            }
        }
    }
    newest
}

/// Builds the package and installs it into the example when its sources changed since.
fn build_package(root: &Path) {
    let installed = root.join("examples/node-origin/node_modules/@lynxo/keys/package.json");
    let built = installed.metadata().and_then(|m| m.modified()).ok();
    let sources = ["js/src", "js/package", "shared/src"]
        .iter()
        .map(|d| newest(&root.join(d)))
        .chain(["js/Cargo.toml", "Cargo.lock"].iter().map(|f| {
            let modified = root.join(f).metadata().and_then(|m| m.modified());
            modified.unwrap_or(SystemTime::UNIX_EPOCH)
        }))
        .max();
    if built.is_some() && built >= sources {
        return;
    }
    let status = Command::new("bash")
        .arg(root.join("js/build.sh"))
        .current_dir(root)
        .status()
        .unwrap_or_else(|e| panic!("running js/build.sh: {e}"));
    assert!(status.success(), "js/build.sh failed");
}

#[track_caller]
fn refused(r: &Response, reason: &str) {
    assert_eq!(r.status, 401, "{}", r.text());
    let body = r.json();
    assert_eq!(body["code"], "identity_rejected", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

/// Sends `c` again straight to the origin, with `target`, `headers` and `body`.
fn to_origin(
    stack: &Stack,
    c: &Captured,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    http::send(stack.origin, &c.method, target, headers, body)
        .unwrap_or_else(|e| panic!("to the origin: {e}"))
}

#[test]
fn node_origin_accepts_the_edge_and_refuses_everything_else() {
    let root = workspace_root();
    build_package(&root);
    let capture = Capture::start();
    let options = Options {
        vars: vec![("ORIGIN_URL", format!("http://{}", capture.addr))],
        ..Options::default()
    };
    let server = root.join("examples/node-origin/server.mjs");
    let stack = Stack::start(&server.to_string_lossy(), options);
    capture.set_upstream(stack.origin);
    stack.push_empty_revocations();

    // Through the edge: accepted, with the identity the edge established.
    let claims = keys::claims(
        key_id(0, 1),
        Environment::Development,
        Permission::ReadWrite.scopes(),
    );
    let auth = format!("Bearer {}", keys::issue(&stack.keyring, &claims));
    let get = stack.edge(
        "GET",
        "/v1/jobs?limit=5&n=get",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(get.status, 200, "{}", get.text());
    let echo: Value = get.json();
    assert_eq!(echo["origin"], "node", "{echo}");
    assert_eq!(echo["account_id"], claims.account_id.to_string(), "{echo}");
    assert_eq!(echo["key_id"], claims.key_id.to_string(), "{echo}");
    assert_eq!(echo["environment"], "development", "{echo}");
    assert_eq!(echo["query"], "limit=5&n=get", "{echo}");
    let body = br#"{"name":"x"}"#;
    let post = stack.edge(
        "POST",
        "/v1/jobs?n=post",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    assert_eq!(post.status, 200, "{}", post.text());
    assert_eq!(post.json()["body_len"], body.len(), "{}", post.text());

    // Straight to the origin: what the edge sent, replayed verbatim, changed, or forged.
    let got = capture.find("n=get").expect("the wiretap saw the GET");
    let posted = capture.find("n=post").expect("the wiretap saw the POST");
    let headers = got.replay_headers();
    refused(
        &to_origin(&stack, &got, &got.target, &[], b""),
        "missing_header",
    );
    refused(
        &to_origin(&stack, &got, &got.target, &headers, b""),
        "replayed",
    );
    refused(
        &to_origin(&stack, &got, "/v1/jobs?limit=500&n=get", &headers, b""),
        "bad_signature",
    );
    refused(
        &to_origin(&stack, &got, "/v1/jobs", &headers, b""),
        "bad_signature",
    );
    let post_headers = posted.replay_headers();
    refused(
        &to_origin(
            &stack,
            &posted,
            &posted.target,
            &post_headers,
            br#"{"name":"xy"}"#,
        ),
        "bad_signature",
    );
    refused(
        &to_origin(&stack, &posted, &posted.target, &post_headers, body),
        "replayed",
    );
    // A client raising its own scopes under the edge's signature.
    let escalated: Vec<(&str, &str)> = headers
        .iter()
        .map(|&(n, v)| {
            if n.eq_ignore_ascii_case("lynxo-scopes") {
                (n, "*")
            } else {
                (n, v)
            }
        })
        .collect();
    refused(
        &to_origin(&stack, &got, &got.target, &escalated, b""),
        "bad_signature",
    );
    // An identity signed with a keyring the edge does not share, for a fresh request id.
    let identity = Identity {
        account_id: claims.account_id,
        key_id: claims.key_id,
        environment: claims.environment,
        scopes: claims.scopes,
    };
    let request = Request {
        method: "GET",
        path: "/v1/jobs",
        query: "",
        body_length: 0,
    };
    let forger = Keyring::from_config(&format!("active=3;3:{}", "77".repeat(32))).expect("ring");
    let request_id = RequestId([0x5a; 16]);
    let mut forged: Vec<(&str, String)> = identity.headers().into_iter().collect();
    forged.push(("lynxo-request-id", request_id.to_string()));
    forged.push((
        SIGNATURE_HEADER,
        identity.sign(&forger, &request, request_id, unix_now()),
    ));
    let forged: Vec<(&str, &str)> = forged.iter().map(|(n, v)| (*n, v.as_str())).collect();
    refused(
        &to_origin(&stack, &got, "/v1/jobs", &forged, b""),
        "bad_signature",
    );
}
