//! Leaked keys die on their own, end to end (issue 13): secret-scanning reports in GitHub's and
//! GitLab's formats, signed with P-256 keys this test generates and whose public-key documents
//! it serves on loopback, and self-revocation, all through the real control plane (`control
//! serve`) publishing to the real worker under `wrangler dev`. A reported live key is refused at
//! the edge; a look-alike, a refused signature and a replay change nothing (or nothing twice).
//!
//! One stack serves every scenario, run in order by one test. Waits are polls with generous
//! deadlines; the time a revocation took to reach the edge is printed, not asserted.

use std::time::{Duration, Instant};

use e2e::control::Control;
use e2e::http::{self, Stream};
use e2e::provider::{Provider, token_hash};
use e2e::stack::{Options, Stack};
use serde_json::{Value, json};

/// How long a revocation may take to reach the edge before the test fails.
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(15);

struct Ctx {
    // Declared first so it stops first: it pushes to the worker.
    control: Control,
    stack: Stack,
    github: Provider,
    gitlab: Provider,
}

impl Ctx {
    /// A new live key: its string and id; the edge accepts it.
    fn live_key(&self, name: &str) -> (String, String) {
        let body = json!({ "name": name, "environment": "development", "permission": "read_only" });
        let created = self.control.expect("POST", "/v1/keys", Some(&body), 201);
        let key = created["key"].as_str().unwrap_or_default().to_owned();
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(self.edge_status(&key), 200);
        (key, id)
    }

    fn edge_status(&self, key: &str) -> u16 {
        self.stack.call_with_key(key).status
    }

    /// Polls the edge until `key` is refused; it must be accepted until then. Returns how long
    /// that took from `from`.
    fn until_refused(&self, key: &str, from: Instant) -> Duration {
        self.stack
            .until_refused(key, from, PROPAGATION_DEADLINE, || {
                format!("control plane log:\n{}", self.control.log())
            })
            .0
    }

    /// Posts `body` to a report endpoint with these signature headers; the raw answer.
    fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> http::Response {
        http::send(self.stack.control, "POST", path, headers, body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// A report signed by GitHub's (or GitLab's) provider.
    fn report(&self, gitlab: bool, body: &[u8]) -> http::Response {
        let (provider, path, id, sig) = self.provider(gitlab);
        let signature = provider.sign(body);
        self.post(
            path,
            &[
                (id, provider.identifier.as_str()),
                (sig, signature.as_str()),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    fn provider(&self, gitlab: bool) -> (&Provider, &'static str, &'static str, &'static str) {
        if gitlab {
            (
                &self.gitlab,
                "/secret-scanning/gitlab",
                "Gitlab-Public-Key-Identifier",
                "Gitlab-Public-Key-Signature",
            )
        } else {
            (
                &self.github,
                "/secret-scanning/github",
                "Github-Public-Key-Identifier",
                "Github-Public-Key-Signature",
            )
        }
    }

    /// The account's audit actions, oldest first.
    fn actions(&self) -> Vec<String> {
        let page = self
            .control
            .expect("GET", "/v1/audit-events?limit=1000", None, 200);
        let mut actions: Vec<String> = page["data"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|e| e["action"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        actions.reverse();
        actions
    }

    fn count(&self, action: &str) -> usize {
        self.actions().iter().filter(|a| *a == action).count()
    }

    fn key_status(&self, id: &str) -> Value {
        self.control
            .expect("GET", &format!("/v1/keys/{id}"), None, 200)
    }
}

/// A look-alike of `key`: its claims signed with another secret (valid checksum, bad tag).
fn forged(key: &str) -> String {
    let claims = shared::key::check(key, &shared::testkit::keyring(), None)
        .unwrap_or_else(|e| panic!("a genuine key: {e:?}"));
    shared::testkit::forged(&claims).into_inner()
}

/// A partner's report of a live key and of a look-alike of another: the live key is refused at
/// the edge, labelled `true_positive`; the look-alike is `false_positive` and its original
/// keeps working. Then every refused report, and the replay, change nothing.
fn partner_report_revokes_at_the_edge(ctx: &mut Ctx, gitlab: bool) {
    let who = if gitlab { "gitlab" } else { "github" };
    let (leaked, leaked_id) = ctx.live_key(&format!("{who} leaked"));
    let (kept, kept_id) = ctx.live_key(&format!("{who} kept"));
    let look_alike = forged(&kept);
    let url = format!("https://{who}.com/acme/app/blob/main/.env");
    let body = if gitlab {
        json!([
            {"type": "lynxo_api_key", "token": leaked, "url": url},
            {"type": "lynxo_api_key", "token": look_alike, "url": url},
        ])
    } else {
        json!([
            {"token": leaked, "type": "lynxo_api_key", "url": url, "source": "content"},
            {"token": look_alike, "type": "lynxo_api_key", "url": url, "source": "content"},
        ])
    }
    .to_string();
    let fetched_before = ctx.provider(gitlab).0.fetches();
    let sent = Instant::now();
    let r = ctx.report(gitlab, body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let took = ctx.until_refused(&leaked, sent);
    eprintln!(
        "{who}: the reported key answered 401 at the edge {took:?} after the report was sent"
    );
    assert_eq!(
        r.json(),
        json!([
            {"token_hash": token_hash(&leaked), "token_type": "lynxo_api_key", "label": "true_positive"},
            {"token_hash": token_hash(&look_alike), "token_type": "lynxo_api_key", "label": "false_positive"},
        ])
    );
    assert_eq!(
        ctx.edge_status(&kept),
        200,
        "the look-alike's original works"
    );
    assert_eq!(ctx.key_status(&kept_id)["status"], "active");
    let view = ctx.key_status(&leaked_id);
    assert_eq!(view["revoke_reason"], "leaked");
    let leaks = ctx
        .control
        .expect("GET", &format!("/v1/keys/{leaked_id}/leaks"), None, 200);
    assert_eq!(leaks["leaks"][0]["url"], url.as_str());
    assert_eq!(leaks["leaks"][0]["reporter"], who);
    assert_eq!(leaks["leaks"][0]["action"], "revoked");
    // The first report fetched the document once (or none if an earlier one had).
    assert!(ctx.provider(gitlab).0.fetches() - fetched_before <= 1);

    // Refused reports and the replay change nothing.
    let (provider, path, id_header, sig_header) = ctx.provider(gitlab);
    let other_provider = if gitlab { &ctx.github } else { &ctx.gitlab };
    let (another, another_id) = ctx.live_key(&format!("{who} bystander"));
    let about_another = json!([{"token": another, "type": "t", "url": "x"}]).to_string();
    let before = ctx.actions();
    let refused = |headers: &[(&str, &str)], body: &[u8]| {
        let r = ctx.post(path, headers, body);
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["code"], "invalid_signature");
    };
    // A wrong signature (the other provider's key under this identifier).
    let wrong = other_provider.sign(about_another.as_bytes());
    refused(
        &[
            (id_header, provider.identifier.as_str()),
            (sig_header, wrong.as_str()),
        ],
        about_another.as_bytes(),
    );
    // A genuine signature over another body.
    let over_other = provider.sign(body.as_bytes());
    refused(
        &[
            (id_header, provider.identifier.as_str()),
            (sig_header, over_other.as_str()),
        ],
        about_another.as_bytes(),
    );
    // An unknown identifier: exactly one refetch, then 401.
    let fetched = provider.fetches();
    let good = provider.sign(about_another.as_bytes());
    refused(
        &[(id_header, "rotated-away-key"), (sig_header, good.as_str())],
        about_another.as_bytes(),
    );
    assert_eq!(provider.fetches(), fetched + 1, "one refetch");
    refused(
        &[
            (id_header, "another-unknown-key"),
            (sig_header, good.as_str()),
        ],
        about_another.as_bytes(),
    );
    assert_eq!(
        provider.fetches(),
        fetched + 1,
        "no second refetch within the minute"
    );
    // The replay: the same labels, nothing recorded twice.
    let r = ctx.report(gitlab, body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["label"], "true_positive");
    assert_eq!(
        ctx.actions(),
        before,
        "refusals and the replay changed nothing"
    );
    assert_eq!(ctx.edge_status(&another), 200);
    assert_eq!(ctx.key_status(&another_id)["status"], "active");
}

fn github_report(ctx: &mut Ctx) {
    partner_report_revokes_at_the_edge(ctx, false);
}

fn gitlab_report(ctx: &mut Ctx) {
    partner_report_revokes_at_the_edge(ctx, true);
}

/// Bodies no provider sends: each refused whole, the live key in them untouched.
fn hostile_reports(ctx: &mut Ctx) {
    let (key, id) = ctx.live_key("hostile");
    let before = ctx.actions();
    let (provider, path, id_header, sig_header) = ctx.provider(false);
    // Malformed JSON after a valid signature.
    let r = ctx.report(false, format!("[{{\"token\": \"{key}\"").as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    // 1,001 tokens, the live key last.
    let mut tokens: Vec<Value> = (0..1000)
        .map(|i| json!({"token": format!("lnx_dev_{i}"), "type": "t"}))
        .collect();
    tokens.push(json!({"token": key, "type": "t"}));
    let many = serde_json::to_vec(&tokens).unwrap_or_default();
    let r = ctx.report(false, &many);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["code"], "too_many_tokens");
    // A huge body, declared, then chunked with no length: cut at 1 MiB, before any parsing.
    let signature = provider.sign(b"[]");
    let headers = [
        (id_header, provider.identifier.as_str()),
        (sig_header, signature.as_str()),
        ("Content-Type", "application/json"),
    ];
    for content_length in [Some(64 << 20), None] {
        let stream = Stream {
            total: 8 << 20,
            chunk: 64 * 1024,
            content_length,
            finish: true,
            pause: Duration::ZERO,
        };
        let (answer, written) = http::send_streamed(
            ctx.stack.control,
            "POST",
            path,
            &headers,
            &stream,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("streamed report: {e}"));
        let answer = answer.unwrap_or_else(|| panic!("no answer to a huge report"));
        assert_eq!(answer.status, 413, "{}", answer.text());
        assert!(
            written < 8 << 20,
            "the service stopped reading ({written} bytes written)"
        );
    }
    assert_eq!(ctx.actions(), before);
    assert_eq!(ctx.edge_status(&key), 200);
    assert_eq!(ctx.key_status(&id)["status"], "active");
}

/// The same report twice at once: one revocation, one leak record.
fn concurrent_replays(ctx: &mut Ctx) {
    let (key, id) = ctx.live_key("concurrent");
    let body =
        json!([{"token": key, "type": "t", "url": "https://github.com/a/b", "source": "commit"}])
            .to_string();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| ctx.report(false, body.as_bytes()));
        let b = s.spawn(|| ctx.report(false, body.as_bytes()));
        (a.join(), b.join())
    });
    let (a, b) = (
        a.unwrap_or_else(|_| panic!("report thread")),
        b.unwrap_or_else(|_| panic!("report thread")),
    );
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body, b.body);
    ctx.until_refused(&key, Instant::now());
    let leaks = ctx
        .control
        .expect("GET", &format!("/v1/keys/{id}/leaks"), None, 200);
    assert_eq!(leaks["total"], 1);
    let revocations =
        ctx.control
            .expect("GET", &format!("/v1/audit-events?target={id}"), None, 200)["data"]
            .as_array()
            .map_or(0, |e| {
                e.iter().filter(|e| e["action"] == "key.revoked").count()
            });
    assert_eq!(revocations, 1);
}

/// Whoever holds a key revokes it with no account; a forged one is not revoked; both answers
/// are byte-identical.
fn self_revocation(ctx: &mut Ctx) {
    let (key, id) = ctx.live_key("held");
    let (kept, kept_id) = ctx.live_key("held look-alike original");
    let look_alike = forged(&kept);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let forged_answer = ctx.post(
        "/v1/keys/revoke",
        &form,
        format!("token={look_alike}").as_bytes(),
    );
    let sent = Instant::now();
    let genuine_answer = ctx.post("/v1/keys/revoke", &form, format!("token={key}").as_bytes());
    let took = ctx.until_refused(&key, sent);
    eprintln!("self-revocation: 401 at the edge {took:?} after the request was sent");
    assert_eq!(forged_answer.status, 200);
    assert_eq!(genuine_answer.status, 200);
    assert_eq!(forged_answer.body, genuine_answer.body);
    let strip_date = |r: &http::Response| -> Vec<(String, String)> {
        r.headers
            .iter()
            .filter(|(n, _)| n != "date")
            .cloned()
            .collect()
    };
    assert_eq!(strip_date(&forged_answer), strip_date(&genuine_answer));
    assert_eq!(ctx.edge_status(&kept), 200, "a look-alike revokes nothing");
    assert_eq!(ctx.key_status(&kept_id)["status"], "active");
    let view = ctx.key_status(&id);
    assert_eq!(view["revoke_reason"], "revoked_by_holder");
    let events = ctx
        .control
        .expect("GET", &format!("/v1/audit-events?target={id}"), None, 200);
    let by_holder = events["data"].as_array().is_some_and(|e| {
        e.iter()
            .any(|e| e["action"] == "key.revoked" && e["actor"] == "holder")
    });
    assert!(by_holder, "{events}");
    assert!(ctx.count("key.leaked") >= 1);
}

#[test]
fn leaked_keys_are_refused_at_the_edge() {
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let (github, gitlab) = (Provider::new(21), Provider::new(22));
    let control = Control::start_with_env(
        &stack,
        &[
            ("LYNXO_GITHUB_KEYS_URL", github.url.as_str()),
            ("LYNXO_GITLAB_KEYS_URL", gitlab.url.as_str()),
            // The scenarios call it more than a client would.
            ("LYNXO_SELF_REVOKE_RATE_LIMIT", "600"),
        ],
    );
    let mut ctx = Ctx {
        control,
        stack,
        github,
        gitlab,
    };
    e2e::run_scenarios(
        &mut ctx,
        &[
            ("github report", github_report),
            ("gitlab report", gitlab_report),
            ("hostile reports", hostile_reports),
            ("concurrent replays", concurrent_replays),
            ("self-revocation", self_revocation),
        ],
    );
}
