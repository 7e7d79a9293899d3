//! End to end: what the worker does with the parts of a request an attacker controls besides
//! the key (bodies and their framing, the identity it hands the origin, headers, query and path
//! encodings), against the real worker under `wrangler dev` in front of the demo origin.
//!
//! The worker's `ORIGIN_URL` is a recording proxy ([`Capture`]) that relays to the demo origin,
//! so each scenario sees exactly what reached the origin and can replay it as an attacker who
//! captured it would. Body scenarios stream their bodies while they read the answer: the worker
//! must answer before a body it refuses has ended.

use std::thread::sleep;
use std::time::{Duration, Instant};

use e2e::capture::{Capture, Captured};
use e2e::http::{self, Response, Stream};
use e2e::keys::{self, SHARDS, issue, key_id, shard_bytes, sign_push};
use e2e::stack::{Options, Stack, unix_now};
use serde_json::Value;
use shared::key::Environment;
use shared::scope::{Permission, Scope, ScopeSet};

/// The worker's `SYNC_MAX_BYTES` in this suite (the harness default).
const SYNC_MAX: usize = 64 * 1024;

struct Ctx {
    stack: Stack,
    capture: Capture,
    /// Read/Write key.
    key: String,
}

impl Ctx {
    fn key_with(&self, n: u64, scopes: ScopeSet) -> String {
        let claims = keys::claims(key_id(0, n), Environment::Development, scopes);
        issue(&self.stack.keyring, &claims)
    }

    fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        self.stack.edge("GET", target, headers, b"")
    }

    /// `POST /v1/jobs?m=<marker>` with a 13-byte JSON body, through the edge.
    fn post_job(&self, auth: &str, marker: &str) -> Response {
        self.stack.edge(
            "POST",
            &format!("/v1/jobs?m={marker}"),
            &[
                ("Authorization", auth),
                ("Content-Type", "application/json"),
            ],
            br#"{"model":"x"}"#,
        )
    }

    /// How many requests reached the origin so far.
    fn reached_origin(&self) -> usize {
        self.capture.requests().len()
    }

    /// The request that reached the origin with `marker` in its target.
    fn seen(&self, marker: &str) -> Captured {
        self.capture
            .find(marker)
            .unwrap_or_else(|| panic!("no request with {marker:?} reached the origin"))
    }

    /// A fresh-looking signature header that no keyring made: what an outsider can send.
    fn forged_sync_signature() -> String {
        format!("t={},kid=1,v1={}", unix_now(), "00".repeat(32))
    }

    /// Streams `body` to the worker; returns the answer (if one came) and how many body
    /// bytes were written before it.
    fn stream(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &Stream,
        wait: Duration,
    ) -> (Option<Response>, usize) {
        http::send_streamed(self.stack.edge, method, target, headers, body, wait)
            .unwrap_or_else(|e| panic!("{method} {target}: {e}\n{}", self.stack.wrangler_log()))
    }
}

/// A body that never ends: `total` bytes in 16 KiB writes, then the client waits.
fn unfinished(total: usize, content_length: Option<usize>) -> Stream {
    Stream {
        total,
        chunk: 16 * 1024,
        content_length,
        finish: false,
        pause: Duration::ZERO,
    }
}

#[track_caller]
fn problem(r: &Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    assert_eq!(body["code"], code, "{body}");
    body
}

#[track_caller]
fn answered(r: Option<Response>, status: u16, code: &str) -> Value {
    let r = r.unwrap_or_else(|| panic!("no answer (wanted {status} {code}) before the body ended"));
    problem(&r, status, code)
}

#[track_caller]
fn reason(r: &Response, status: u16, code: &str, reason: &str) {
    let body = problem(r, status, code);
    assert_eq!(body["reason"], reason, "{body}");
}

type Scenario = (&'static str, fn(&Ctx));

#[test]
fn edge_requests_end_to_end() {
    let started = Instant::now();
    let capture = Capture::start();
    let options = Options {
        vars: vec![("ORIGIN_URL", format!("http://{}", capture.addr))],
        ..Options::default()
    };
    assert_eq!(options.sync_max_bytes, SYNC_MAX);
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), options);
    capture.set_upstream(stack.origin);
    eprintln!("stack up in {:?}", started.elapsed());
    let mut ctx = Ctx {
        stack,
        capture,
        key: String::new(),
    };
    ctx.key = ctx.key_with(1, Permission::ReadWrite.scopes());
    for shard in 0..SHARDS {
        let body = shard_bytes(&ctx.stack.keyring, shard, 1, &[], 3_600);
        let sig = sign_push(&ctx.stack.keyring, shard, &body);
        let target = format!("/_lynxo/sync/revocations/{shard}");
        let r = ctx
            .stack
            .edge("PUT", &target, &[("Lynxo-Signature", &sig)], &body);
        assert_eq!(r.status, 204, "{}", r.text());
    }

    let scenarios: [Scenario; 9] = [
        (
            "a sync body is cut at its limit, whatever its framing",
            sync_body_is_cut_at_its_limit,
        ),
        (
            "a slow sync body times out and few are read at once",
            slow_sync_bodies_are_bounded,
        ),
        (
            "an API body declares its length, and only where a body belongs",
            api_bodies_declare_their_length,
        ),
        (
            "the identity is single-use and binds the request",
            identity_is_single_use_and_binds_the_request,
        ),
        (
            "identity header spellings never reach the origin",
            identity_spellings_never_reach_the_origin,
        ),
        (
            "routing overrides never reach the origin",
            routing_overrides_never_reach_the_origin,
        ),
        (
            "query credentials in every spelling",
            query_credentials_in_every_spelling,
        ),
        ("encoded paths are refused", encoded_paths_are_refused),
        (
            "conflicting framing never reaches the origin",
            conflicting_framing_never_reaches_the_origin,
        ),
    ];
    // Every scenario runs even when one fails, so a run names every broken defence at once.
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        let t = Instant::now();
        eprintln!("scenario: {name}");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&ctx))) {
            Ok(()) => eprintln!("scenario: {name}: ok in {:?}", t.elapsed()),
            Err(_) => {
                eprintln!("scenario: {name}: FAILED");
                failed.push(name);
            }
        }
    }
    assert!(failed.is_empty(), "failed scenarios: {failed:#?}");
    // A genuine push still goes through after every attack above.
    let body = shard_bytes(&ctx.stack.keyring, 3, 2, &[], 3_600);
    let sig = sign_push(&ctx.stack.keyring, 3, &body);
    let r = ctx.stack.edge(
        "PUT",
        "/_lynxo/sync/revocations/3",
        &[("Lynxo-Signature", &sig)],
        &body,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    eprintln!("end to end in {:?}", started.elapsed());
}

/// Finding 2: a body the worker reads is read as a stream it stops at `SYNC_MAX_BYTES`, so
/// nobody can make the isolate hold more, however the body is framed.
fn sync_body_is_cut_at_its_limit(ctx: &Ctx) {
    let forged = Ctx::forged_sync_signature();
    let signed = [("Lynxo-Signature", forged.as_str())];
    let wait = Duration::from_secs(20);
    // Chunked, no length, never ending: 413 as soon as the limit is passed, not at the end.
    for target in ["/_lynxo/sync/revocations/3", "/_lynxo/sync/limits"] {
        let (r, written) = ctx.stream("PUT", target, &signed, &unfinished(48 << 20, None), wait);
        let body = answered(r, 413, "payload_too_large");
        assert_eq!(body["limit"], SYNC_MAX);
        eprintln!("  {target}: 413 after {written} bytes written of 48 MiB, body never ended");
    }
    // A declared length over the limit: refused before a byte of the body is read.
    let (r, _) = ctx.stream(
        "PUT",
        "/_lynxo/sync/revocations/3",
        &signed,
        &unfinished(0, Some(48 << 20)),
        wait,
    );
    answered(r, 413, "payload_too_large");
    // No signature at all, or one that cannot be genuine: refused before reading.
    let (r, _) = ctx.stream(
        "PUT",
        "/_lynxo/sync/revocations/3",
        &[],
        &unfinished(48 << 20, None),
        wait,
    );
    answered(r, 401, "missing_signature");
    let stale = format!("t=1,kid=1,v1={}", "00".repeat(32));
    let (r, _) = ctx.stream(
        "PUT",
        "/_lynxo/sync/limits",
        &[("Lynxo-Signature", &stale)],
        &unfinished(48 << 20, None),
        wait,
    );
    answered(r, 401, "invalid_signature");
    // A method that takes no body there: refused before reading it. GET is the signed read of a
    // shard (the publisher's read-back), which never has a body.
    for (method, status, code) in [
        ("POST", 405, "method_not_allowed"),
        ("DELETE", 405, "method_not_allowed"),
        ("GET", 400, "body_not_allowed"),
    ] {
        let (r, _) = ctx.stream(
            method,
            "/_lynxo/sync/revocations/3",
            &signed,
            &unfinished(48 << 20, None),
            wait,
        );
        answered(r, status, code);
    }
}

/// Sends `request` as raw bytes to the worker and reads to the end: the status (0 if
/// the connection closed without an answer) and the whole response.
fn raw(ctx: &Ctx, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(ctx.stack.edge).unwrap_or_else(|e| panic!("connect: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = stream.write_all(request.as_bytes());
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Finding 2: a body that arrives slowly, or a length that lies, lets go of its read slot, and
/// the isolate reads only a few bodies at once.
fn slow_sync_bodies_are_bounded(ctx: &Ctx) {
    let forged = Ctx::forged_sync_signature();
    let edge = ctx.stack.edge;
    // Two pushes that declare 2 KiB and send 1 KiB, then stall: they hold both read slots.
    let stalled: Vec<_> = (0..2)
        .map(|_| {
            let forged = forged.clone();
            std::thread::spawn(move || {
                http::send_streamed(
                    edge,
                    "PUT",
                    "/_lynxo/sync/revocations/3",
                    &[("Lynxo-Signature", &forged)],
                    &unfinished(1024, Some(2048)),
                    Duration::from_secs(30),
                )
            })
        })
        .collect();
    sleep(Duration::from_secs(2));
    // A third is turned away at once, before its body is read.
    let (r, _) = ctx.stream(
        "PUT",
        "/_lynxo/sync/revocations/3",
        &[("Lynxo-Signature", &forged)],
        &unfinished(48 << 20, None),
        Duration::from_secs(5),
    );
    let r = r.unwrap_or_else(|| panic!("no answer while two bodies were being read"));
    problem(&r, 503, "sync_busy");
    assert_eq!(r.header("retry-after"), Some("1"));
    // The stalled ones are cut off by the read timeout (10 s), which frees their slots.
    for handle in stalled {
        let (r, written) = handle
            .join()
            .unwrap_or_else(|_| panic!("sender panicked"))
            .unwrap_or_else(|e| panic!("stalled push: {e}"));
        assert_eq!(written, 1024);
        answered(r, 408, "body_timeout");
    }
}

/// Findings 2 and 4: an API body is never read by the worker; it must declare its length (which
/// the identity signature binds), and methods without a body are refused one.
fn api_bodies_declare_their_length(ctx: &Ctx) {
    let auth = format!("Bearer {}", ctx.key);
    let before = ctx.reached_origin();
    let wait = Duration::from_secs(20);
    // Chunked: 411 before the body ends, with or without a key, and nothing reaches the origin.
    for headers in [vec![("Authorization", auth.as_str())], vec![]] {
        let (r, _) = ctx.stream(
            "POST",
            "/v1/jobs",
            &headers,
            &unfinished(48 << 20, None),
            wait,
        );
        answered(r, 411, "length_required");
    }
    for method in ["GET", "DELETE", "HEAD"] {
        let (r, _) = ctx.stream(
            method,
            "/v1/jobs/j_1",
            &[("Authorization", &auth)],
            &unfinished(48 << 20, None),
            wait,
        );
        let r = r.unwrap_or_else(|| panic!("{method}: no answer before the body ended"));
        assert_eq!(r.status, 400, "{method}");
        if method != "HEAD" {
            problem(&r, 400, "body_not_allowed");
        }
        let (r, _) = ctx.stream(
            method,
            "/v1/jobs/j_1",
            &[("Authorization", &auth)],
            &unfinished(5, Some(5)),
            wait,
        );
        assert_eq!(r.map(|r| r.status), Some(400), "{method} with a length");
    }
    assert_eq!(
        ctx.reached_origin(),
        before,
        "a refused body reached the origin"
    );
    // With a length it streams through: the origin gets that length, not a chunked body.
    let r = ctx.post_job(&auth, "length");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_len"], 13);
    let seen = ctx.seen("m=length");
    assert_eq!(seen.header("transfer-encoding"), None);
    assert_eq!(seen.header("content-length"), Some("13"));
}

/// The identity headers and body of a captured request, to send again.
fn replay_headers(seen: &Captured) -> Vec<(&str, &str)> {
    seen.headers
        .iter()
        .filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            n.starts_with("lynxo-") || n == "content-type"
        })
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

fn replay(ctx: &Ctx, seen: &Captured, method: &str, target: &str, body: &[u8]) -> Response {
    http::send(
        ctx.stack.origin,
        method,
        target,
        &replay_headers(seen),
        body,
    )
    .unwrap_or_else(|e| panic!("replaying to the origin: {e}"))
}

/// Finding 4: a captured identity works once, for exactly the request it was made for.
fn identity_is_single_use_and_binds_the_request(ctx: &Ctx) {
    let auth = format!("Bearer {}", ctx.key);
    let r = ctx.get("/v1/jobs?limit=5&m=id", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = ctx.seen("m=id");
    assert_eq!(seen.target, "/v1/jobs?limit=5&m=id");
    let signature = seen
        .header("lynxo-identity-signature")
        .unwrap_or_else(|| panic!("no signature: {seen:?}"))
        .to_owned();
    let request_id = seen.header("lynxo-request-id").unwrap_or_default();
    assert!(
        request_id.len() == 32 && request_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{request_id:?}"
    );
    assert!(signature.contains(",v2="), "{signature}");
    // The origin shows what it verified, never the signature.
    let echo = r.json();
    assert_eq!(echo["request_id"], request_id);
    assert!(echo["headers"].get("lynxo-identity-signature").is_none());
    assert!(!r.text().contains(&signature[signature.len() - 64..]));

    // The same request again, as captured: spent.
    reason(
        &replay(ctx, &seen, "GET", &seen.target, b""),
        401,
        "identity_rejected",
        "replayed",
    );
    // Changed to do something else: the signature does not cover it.
    for (method, target) in [
        ("GET", "/v1/jobs?limit=500&m=id"),
        ("GET", "/v1/jobs?m=id"),
        ("GET", "/v1/jobs?limit=5&m=id&cursor=x"),
        ("DELETE", "/v1/jobs?limit=5&m=id"),
        ("GET", "/v1/account?limit=5&m=id"),
    ] {
        reason(
            &replay(ctx, &seen, method, target, b""),
            401,
            "identity_rejected",
            "bad_signature",
        );
    }
    // Every request through the edge gets its own id.
    let again = ctx.get("/v1/jobs?limit=5&m=id", &[("Authorization", &auth)]);
    assert_eq!(again.status, 200);
    assert_ne!(again.json()["request_id"], request_id);

    // A body of another length under a captured POST's signature is refused; one of the same
    // length finds the id spent.
    let r = ctx.post_job(&auth, "replay");
    assert_eq!(r.status, 200, "{}", r.text());
    let post = ctx.seen("m=replay");
    reason(
        &replay(ctx, &post, "POST", &post.target, br#"{"model":"xx"}"#),
        401,
        "identity_rejected",
        "bad_signature",
    );
    reason(
        &replay(ctx, &post, "POST", &post.target, br#"{"model":"y"}"#),
        401,
        "identity_rejected",
        "replayed",
    );
}

/// Finding 4: frameworks that merge `lynxo_account_id` with `lynxo-account-id` never see a
/// client's value.
fn identity_spellings_never_reach_the_origin(ctx: &Ctx) {
    let auth = format!("Bearer {}", ctx.key);
    let r = ctx.get(
        "/v1/account?m=spellings",
        &[
            ("Authorization", &auth),
            ("lynxo_account_id", "1"),
            ("Lynxo_Scopes", "*"),
            ("LYNXO_ENVIRONMENT", "production"),
            ("x_lynxo_admin", "true"),
            ("X-Lynxo-Admin", "true"),
            ("Lynxo-Account-Id", "1"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = ctx.seen("m=spellings");
    let normal = |n: &str| n.to_ascii_lowercase().replace('_', "-");
    for (name, value) in &seen.headers {
        let n = normal(name);
        assert!(
            !n.starts_with("x-lynxo-"),
            "{name}: {value} reached the origin"
        );
        if n.starts_with("lynxo-") {
            assert_eq!(name, &n, "{name} reached the origin");
        }
    }
    let accounts: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(n, _)| normal(n) == "lynxo-account-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(accounts, ["42"]);
    assert_eq!(r.json()["environment"], "development");
}

/// 9a: the origin acts on the request line the edge authorised, nothing that overrides it.
fn routing_overrides_never_reach_the_origin(ctx: &Ctx) {
    let read_only = format!("Bearer {}", ctx.key_with(2, Permission::ReadOnly.scopes()));
    let overrides = [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/v1/jobs/42/cancel"),
        ("X-Rewrite-URL", "/v1/jobs/42/cancel"),
        ("X-Forwarded-Host", "admin.lynxo.ai"),
        ("X-Forwarded-Prefix", "/admin"),
        ("Forwarded", "host=admin.lynxo.ai;proto=https"),
        ("X_HTTP_Method_Override", "DELETE"),
        ("Cookie", "session=1"),
        ("X-Unlisted", "1"),
    ];
    let mut headers = vec![("Authorization", read_only.as_str())];
    headers.extend(overrides);
    let r = ctx.get(
        "/v1/jobs/42?_method=DELETE&%5Fmethod=DELETE&_METHOD=PATCH&_method[]=DELETE&a=1;_method=DELETE",
        &headers,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = ctx.seen("/v1/jobs/42?");
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/v1/jobs/42?a=1");
    for (name, _) in overrides {
        assert!(seen.header(name).is_none(), "{name} reached the origin");
    }
    // What the operator allows in FORWARD_HEADERS does go through (the demo origin's switch).
    let r = ctx.get(
        "/v1/jobs",
        &[("Authorization", &read_only), ("Demo-Status", "201")],
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

/// 9b: a key in the query is found in any spelling of its name, and no key-shaped value reaches
/// the origin under any name.
fn query_credentials_in_every_spelling(ctx: &Ctx) {
    let auth = format!("Bearer {}", ctx.key);
    let second = ctx.key_with(3, ScopeSet::FULL_ACCESS);
    let before = ctx.reached_origin();
    for name in [
        "api%5Fkey",
        "API_KEY",
        "Api-Key",
        "access_token[]",
        "access%5Ftoken",
        "ACCESS_TOKEN%5B%5D",
        "api%255Fkey",
    ] {
        let r = ctx.get(
            &format!("/v1/jobs?a=1&{name}={second}"),
            &[("Authorization", &auth)],
        );
        reason(&r, 400, "invalid_request", "multiple_credentials");
    }
    let encoded = second.replace('_', "%5F");
    for query in [
        format!("q={second}"),
        format!("apikey={second}"),
        format!("token={encoded}"),
        format!("filter=key%3D{second}"),
    ] {
        let r = ctx.get(&format!("/v1/jobs?{query}"), &[("Authorization", &auth)]);
        reason(&r, 400, "invalid_request", "key_in_url");
    }
    let r = ctx.get(&format!("/v1/jobs/{second}"), &[("Authorization", &auth)]);
    reason(&r, 400, "invalid_request", "key_in_url");
    assert_eq!(
        ctx.reached_origin(),
        before,
        "a refused request reached the origin"
    );
    // A key sent alone in an encoded query credential works, and is not forwarded.
    let r = ctx.get(&format!("/v1/jobs?a=qc&API%5FKEY={encoded}&b=2"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ctx.seen("a=qc").target, "/v1/jobs?a=qc&b=2");
}

/// 9c: one reading of the path, at the edge: an id that some origin could decode or normalise
/// into another route is refused, and what the runtime normalises is authorised as normalised.
fn encoded_paths_are_refused(ctx: &Ctx) {
    let webhooks_only = format!(
        "Bearer {}",
        ctx.key_with(4, ScopeSet::EMPTY.with(Scope::WebhooksRead))
    );
    let before = ctx.reached_origin();
    for target in [
        "/v1/webhooks/x%2F..%2F..%2Faccount",
        "/v1/webhooks/x%2f..%2f..%2faccount",
        "/v1/webhooks/x%5C..%5C..%5Caccount",
        "/v1/webhooks/x%2E%2E",
        "/v1/webhooks/%2E%2E%2F%2E%2E%2Faccount",
        "/v1/webhooks/x%252F..%252F..%252Faccount",
        "/v1/webhooks/x%C0%AF..%C0%AF..%C0%AFaccount",
        "/v1/webhooks/..;/..;/account",
        "/v1/webhooks/w_1;jsessionid=1",
        "/v1/webhooks/w%5F1",
        "/v1/webhooks/w%00",
        "/v1/webhooks/caf%C3%A9",
    ] {
        let r = ctx.get(target, &[("Authorization", &webhooks_only)]);
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        problem(&r, 400, "invalid_path");
    }
    assert_eq!(
        ctx.reached_origin(),
        before,
        "a refused path reached the origin"
    );
    // Dot segments the runtime resolves itself: authorised as the path they resolve to.
    for target in [
        "/v1/webhooks/x/../../account",
        "/v1/webhooks/x/%2e%2e/%2E%2E/account",
        "/v1/webhooks/x;/../../account",
    ] {
        let r = ctx.get(target, &[("Authorization", &webhooks_only)]);
        let body = problem(&r, 403, "insufficient_scope");
        assert_eq!(body["scope"], "account:read");
    }
    let r = ctx.get("/v1/webhooks/w_1", &[("Authorization", &webhooks_only)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ctx.seen("/v1/webhooks/w_1").target, "/v1/webhooks/w_1");
}

/// Request smuggling: a body framed two ways at once never reaches the origin in either reading.
fn conflicting_framing_never_reaches_the_origin(ctx: &Ctx) {
    let auth = format!("Bearer {}", ctx.key);
    let before = ctx.reached_origin();
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
    ] {
        let (status, text) = raw(
            ctx,
            &format!(
                "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\n{framing}Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
        );
        eprintln!("  {framing:?}: {status}");
        // Refused by the runtime's parser or by the worker; never admitted.
        assert!(
            !(200..400).contains(&status),
            "{framing:?} answered {status}: {text}"
        );
    }
    assert_eq!(
        ctx.reached_origin(),
        before,
        "an ambiguous body reached the origin"
    );
}
