//! Usage ingestion from the edge and the usage, activity and key-view API built on it.

mod common;

use axum::http::{Method, StatusCode};
use common::{START, TestApp};
use control::store::StoreError;
use control::store::usage::DENIAL_ACTIVITY_KEEP;
use serde_json::{Value, json};
use shared::key::KeyId;
use shared::usage::{Activity, Batch, Count, LastUsed, Outcome, Reason};

const MINUTE: u64 = START / 60;

/// A key id the API returned, as the wire type.
fn kid(text: &str) -> KeyId {
    KeyId::parse_hex(text).expect("a key id")
}

fn count(
    key: &str,
    account: u64,
    minute: u64,
    scope: Option<&str>,
    outcome: Outcome,
    n: u64,
) -> Count {
    Count {
        key_id: kid(key),
        account_id: account,
        minute,
        scope: scope.map(str::to_owned),
        outcome,
        n,
    }
}

fn activity(key: &str, account: u64, at_ms: u64, status: u16, outcome: Outcome) -> Activity {
    Activity {
        key_id: kid(key),
        account_id: account,
        at_ms,
        method: "GET".into(),
        path: "/v1/jobs".into(),
        status,
        outcome,
        client_ip: Some("203.0.113.7".into()),
        country: Some("DE".into()),
        colo: Some("FRA".into()),
        user_agent: Some("curl/8".into()),
        reason: None,
    }
}

fn batch(seq: u64, counts: Vec<Count>) -> Batch {
    Batch {
        source: "meter-test".into(),
        seq,
        counts,
        ..Batch::default()
    }
}

async fn new_key(app: &TestApp, overrides: Value) -> String {
    app.create_key(overrides).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn key_usage(app: &TestApp, id: &str, query: &str) -> Value {
    app.alice()
        .get(&format!("/v1/keys/{id}/usage?{query}"))
        .await
        .expect(StatusCode::OK)
        .body
}

#[tokio::test]
async fn a_batch_is_applied_once_even_when_retried() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let a = app.alice_account;
    let b = batch(
        1,
        vec![
            count(&id, a, MINUTE, Some("jobs:read"), Outcome::Success, 5),
            count(&id, a, MINUTE, None, Outcome::Unauthorized, 2),
        ],
    );
    let first = app.ingest(&b).await.expect(StatusCode::OK).body;
    assert_eq!(first["applied"], true);
    assert_eq!(first["counts"], 2);
    let again = app.ingest(&b).await.expect(StatusCode::OK).body;
    assert_eq!(again["applied"], false);
    let usage = key_usage(&app, &id, "").await;
    assert_eq!(usage["totals"]["requests"], 7);
    assert_eq!(usage["totals"]["allowed"], 5);
    assert_eq!(usage["totals"]["denied"], 2);
    assert_eq!(usage["totals"]["by_outcome"]["2xx"], 5);
    assert_eq!(usage["totals"]["by_outcome"]["401"], 2);
    assert_eq!(usage["by_scope"], json!({ "jobs:read": 5 }));
    // The same sequence number from another source is another batch.
    let mut other = b.clone();
    other.source = "meter-other".into();
    assert_eq!(app.ingest(&other).await.body["applied"], true);
    assert_eq!(key_usage(&app, &id, "").await["totals"]["requests"], 14);
}

#[tokio::test]
async fn a_bad_or_missing_signature_is_refused_and_stores_nothing() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let b = batch(
        1,
        vec![count(
            &id,
            app.alice_account,
            MINUTE,
            None,
            Outcome::Success,
            1,
        )],
    );
    let body = serde_json::to_vec(&b).unwrap();
    app.anonymous()
        .send(Method::POST, "/_lynxo/usage", Some(body.clone()))
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_signature");
    let forged = shared::usage::sign_batch(&app.state.keyring, b"another body", START);
    app.anonymous()
        .header("lynxo-signature", &forged)
        .send(Method::POST, "/_lynxo/usage", Some(body.clone()))
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_signature");
    // A revocation push signature over the same bytes is not a usage signature.
    let sync = shared::limits::sign_push(&app.state.keyring, &body, START);
    app.anonymous()
        .header("lynxo-signature", &sync)
        .send(Method::POST, "/_lynxo/usage", Some(body.clone()))
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_signature");
    // Signed too long ago.
    let stale = shared::usage::sign_batch(&app.state.keyring, &body, START - 301);
    app.anonymous()
        .header("lynxo-signature", &stale)
        .send(Method::POST, "/_lynxo/usage", Some(body))
        .await
        .problem(StatusCode::UNAUTHORIZED, "invalid_signature");
    assert_eq!(key_usage(&app, &id, "").await["totals"]["requests"], 0);
    // The batch's name was not taken either: the real one applies.
    assert_eq!(app.ingest(&b).await.body["applied"], true);
}

#[tokio::test]
async fn invalid_batches_are_refused() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let a = app.alice_account;
    // A key id that is not one is refused as the batch is read, naming where it is.
    let mut entries = batch(1, vec![count(&id, a, MINUTE, None, Outcome::Success, 1)]);
    entries
        .activity
        .push(activity(&id, a, START * 1000, 200, Outcome::Success));
    let entries = serde_json::to_string(&entries).unwrap();
    let last = entries.rfind(&id).unwrap();
    let short_in_activity = format!(
        "{}{}{}",
        &entries[..last],
        &id[..31],
        &entries[last + id.len()..]
    );
    for (bad, field) in [
        (entries.replacen(&id, "ABC", 1), "counts[0].key_id"),
        (
            entries.replacen(&id, &id.to_uppercase(), 1),
            "counts[0].key_id",
        ),
        (short_in_activity, "activity[0].key_id"),
    ] {
        let sig = shared::usage::sign_batch(&app.state.keyring, bad.as_bytes(), START);
        let refused = app
            .anonymous()
            .header("lynxo-signature", &sig)
            .send(Method::POST, "/_lynxo/usage", Some(bad.into_bytes()))
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(refused.body["field"], field, "{}", refused.body);
        assert_eq!(refused.body["detail"], "must be 32 lowercase hex digits");
    }
    let zero = batch(1, vec![count(&id, a, MINUTE, None, Outcome::Success, 0)]);
    app.ingest(&zero)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let no_seq = batch(0, vec![]);
    app.ingest(&no_seq)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let body = b"{not json".to_vec();
    let sig = shared::usage::sign_batch(&app.state.keyring, &body, START);
    app.anonymous()
        .header("lynxo-signature", &sig)
        .send(Method::POST, "/_lynxo/usage", Some(body))
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_json");
    // None of them took a name.
    assert_eq!(app.ingest(&batch(1, vec![])).await.body["applied"], true);
    // What a retry could never fix is refused; what can be repaired is: entries dated over an
    // hour ahead are skipped, long strings are cut.
    let mut b = batch(
        2,
        vec![
            count(&id, a, MINUTE + 24 * 60, None, Outcome::Success, 1),
            count(&id, a, MINUTE, None, Outcome::Success, 1),
        ],
    );
    let mut long = activity(&id, a, START * 1000, 200, Outcome::Success);
    long.user_agent = Some("é".repeat(300));
    long.method = "X".repeat(100);
    b.activity.push(long);
    let r = app.ingest(&b).await.expect(StatusCode::OK).body;
    assert_eq!(
        (r["counts"].as_u64(), r["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    let page = app
        .alice()
        .get(&format!("/v1/keys/{id}/activity"))
        .await
        .body;
    let entry = &page["data"][0];
    assert_eq!(entry["user_agent"].as_str().unwrap().len(), 256);
    assert_eq!(entry["method"].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn a_large_batch_fits_its_own_body_limit() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let a = app.alice_account;
    let mut b = batch(1, vec![]);
    // About 1 MiB: far above the 64 KiB limit of the admin API.
    for i in 0..1000 {
        let mut e = activity(&id, a, START * 1000 - i, 200, Outcome::Success);
        e.user_agent = Some("x".repeat(256));
        e.path = format!("/v1/jobs/{}", "y".repeat(500));
        b.activity.push(e);
    }
    let r = app.ingest(&b).await.expect(StatusCode::OK);
    assert_eq!(r.body["activity"], 1000);
}

#[tokio::test]
async fn entries_of_unknown_keys_or_another_account_are_skipped() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let (a, bob) = (app.alice_account, app.bob_account);
    let mut b = batch(
        1,
        vec![
            count(&id, a, MINUTE, None, Outcome::Success, 1),
            count(&id, bob, MINUTE, None, Outcome::Success, 100),
            count(&"ab".repeat(16), a, MINUTE, None, Outcome::Success, 100),
        ],
    );
    b.last_used.push(LastUsed {
        key_id: kid(&id),
        account_id: bob,
        at_ms: START * 1000,
        client_ip: Some("198.51.100.1".into()),
        user_agent: None,
    });
    b.activity
        .push(activity(&id, bob, START * 1000, 200, Outcome::Success));
    let r = app.ingest(&b).await.expect(StatusCode::OK).body;
    assert_eq!(
        (r["applied"].as_bool(), r["skipped"].as_u64()),
        (Some(true), Some(4))
    );
    assert_eq!(key_usage(&app, &id, "").await["totals"]["requests"], 1);
    let key = app.alice().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(key["last_used_at"], Value::Null);
    let bob_usage = app.bob().get("/v1/usage").await.expect(StatusCode::OK).body;
    assert_eq!(bob_usage["totals"]["requests"], 0);
    // Bob cannot read Alice's key's usage or activity.
    app.bob()
        .get(&format!("/v1/keys/{id}/usage"))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    app.bob()
        .get(&format!("/v1/keys/{id}/activity"))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    let activity = app
        .alice()
        .get(&format!("/v1/keys/{id}/activity"))
        .await
        .body;
    assert_eq!(activity["data"], json!([]));
}

#[tokio::test]
async fn buckets_at_every_granularity_sum_to_the_same_totals() {
    let app = TestApp::new();
    app.advance(3 * 86_400);
    let now = START + 3 * 86_400;
    let id = new_key(&app, json!({})).await;
    let a = app.alice_account;
    // Requests spread over the last two days, at odd minutes.
    let mut counts = Vec::new();
    let mut expected = 0;
    for i in 0..60_u64 {
        let minute = now / 60 - i * 47;
        let n = i + 1;
        expected += n;
        let outcome = Outcome::ALL[i as usize % Outcome::ALL.len()];
        counts.push(count(&id, a, minute, Some("jobs:read"), outcome, n));
    }
    app.ingest(&batch(1, counts)).await.expect(StatusCode::OK);
    let from = now - 3 * 86_400;
    for (g, size) in [("minute", 60), ("hour", 3600), ("day", 86_400)] {
        // Minute granularity holds at most 1500 buckets: walk the range in pieces.
        let step = 1500 * size;
        let mut total = 0;
        let mut by_outcome_total = 0;
        let mut start = from;
        // `to` is exclusive: one past now includes the current bucket.
        let end = now + 1;
        loop {
            let to = (start + step).min(end);
            let u = key_usage(&app, &id, &format!("from={start}&to={to}&granularity={g}")).await;
            let series = u["series"].as_array().unwrap();
            let (ufrom, uto) = (u["from"].as_u64().unwrap(), u["to"].as_u64().unwrap());
            assert_eq!(series.len() as u64, (uto - ufrom) / size, "dense series");
            for (i, b) in series.iter().enumerate() {
                assert_eq!(b["start"].as_u64().unwrap(), ufrom + i as u64 * size);
                let sum: u64 = b["by_outcome"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_u64().unwrap())
                    .sum();
                assert_eq!(
                    b["by_outcome"].as_object().unwrap().len(),
                    Outcome::ALL.len()
                );
                assert_eq!(sum, b["requests"].as_u64().unwrap());
                by_outcome_total += sum;
            }
            total += u["totals"]["requests"].as_u64().unwrap();
            let t = &u["totals"];
            assert_eq!(
                t["allowed"].as_u64().unwrap() + t["denied"].as_u64().unwrap(),
                t["requests"].as_u64().unwrap()
            );
            // Next piece starts where this one's buckets ended.
            if uto >= end {
                break;
            }
            start = uto;
        }
        assert_eq!(total, expected, "{g}");
        assert_eq!(by_outcome_total, expected, "{g}");
    }
    let account = app
        .alice()
        .get(&format!("/v1/usage?from={from}&granularity=day"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(account["totals"]["requests"], expected);
    assert_eq!(account["keys"][0]["key_id"], id.as_str());
    assert_eq!(account["keys"][0]["requests"], expected);
    assert_eq!(account["keys"][0]["name"], "ci deploy");
    assert_eq!(account["by_scope"]["jobs:read"], expected);
}

#[tokio::test]
async fn usage_ranges_are_checked() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let u = key_usage(&app, &id, "").await;
    assert_eq!(u["granularity"], "hour");
    assert_eq!(
        u["to"],
        START + 3600,
        "the hour that began now is the last bucket"
    );
    assert_eq!(u["from"], START + 3600 - 86_400);
    assert_eq!(u["series"].as_array().unwrap().len(), 24);
    assert_eq!(u["series"][0]["by_outcome"]["429"], 0);
    for bad in [
        "from=10&to=5",
        "granularity=week",
        "from=0&granularity=minute",
        "from=0&to=253402300800",
    ] {
        app.alice()
            .get(&format!("/v1/keys/{id}/usage?{bad}"))
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    app.alice()
        .get("/v1/usage?from=-1")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_query");
    app.alice()
        .get(&format!("/v1/keys/{}/usage", "0".repeat(32)))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    app.anonymous()
        .get("/v1/usage")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn activity_is_newest_first_with_a_cursor_and_an_outcome_filter() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let a = app.alice_account;
    let mut b = batch(1, vec![]);
    for i in 0..10_u64 {
        let (status, outcome) = if i % 3 == 0 {
            (429, Outcome::RateLimited)
        } else {
            (200, Outcome::Success)
        };
        b.activity.push(activity(
            &id,
            a,
            START * 1000 - 10_000 + i * 100,
            status,
            outcome,
        ));
    }
    app.ingest(&b).await.expect(StatusCode::OK);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/keys/{id}/activity?limit=4&before={c}"),
            None => format!("/v1/keys/{id}/activity?limit=4"),
        };
        let page = app.alice().get(&path).await.expect(StatusCode::OK).body;
        for e in page["data"].as_array().unwrap() {
            seen.push(e["at_ms"].as_u64().unwrap());
            assert_eq!(e["client_ip"], "203.0.113.7");
            assert_eq!(e["country"], "DE");
            assert_eq!(e["colo"], "FRA");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    let denied = app
        .alice()
        .get(&format!("/v1/keys/{id}/activity?outcome=denied"))
        .await
        .body;
    let denied = denied["data"].as_array().unwrap();
    assert_eq!(denied.len(), 4);
    assert!(
        denied
            .iter()
            .all(|e| e["status"] == 429 && e["outcome"] == "429")
    );
    for bad in ["limit=0", "limit=501", "outcome=200", "before=abc"] {
        app.alice()
            .get(&format!("/v1/keys/{id}/activity?{bad}"))
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
}

/// Each entry's `(at_ms, reason)`, oldest first, of the key's activity log (up to 500).
async fn reasons(app: &TestApp, id: &str) -> Vec<(u64, Value)> {
    let page = app
        .alice()
        .get(&format!("/v1/keys/{id}/activity?limit=500"))
        .await
        .expect(StatusCode::OK)
        .body;
    let mut out: Vec<(u64, Value)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["at_ms"].as_u64().unwrap(), e["reason"].clone()))
        .collect();
    out.sort_by_key(|(at, _)| *at);
    out
}

/// The edge records why it answered each request itself, from its own decision; the activity
/// API shows that reason and derives one only for a row without it (sent before the edge
/// recorded it). The derivation got one case wrong: a production key that is also revoked,
/// refused by a development edge for its environment (the edge checks that first).
#[tokio::test]
async fn the_activity_log_shows_the_edges_own_reason() {
    let app = TestApp::new();
    let id = new_key(&app, json!({ "environment": "production" })).await;
    let a = app.alice_account;
    app.alice()
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({ "reason": "leaked" }),
        )
        .await
        .expect(StatusCode::OK);
    app.advance(60);
    let t0 = control::Clock::now(app.clock.as_ref()) * 1000;
    let entry = |i: u64, status: u16, outcome: Outcome, reason: Option<Reason>| Activity {
        reason,
        ..activity(&id, a, t0 + i, status, outcome)
    };
    let mut b = batch(1, vec![]);
    b.activity = vec![
        entry(
            1,
            401,
            Outcome::Unauthorized,
            Some(Reason::WrongEnvironment),
        ),
        // From an edge older than the field: derived from the key's dates.
        entry(2, 401, Outcome::Unauthorized, None),
        entry(3, 404, Outcome::EdgeRefused, Some(Reason::NotFound)),
        entry(
            4,
            429,
            Outcome::RateLimited,
            Some(Reason::RateLimitExceeded),
        ),
        entry(5, 502, Outcome::EdgeError, Some(Reason::OriginUnavailable)),
        entry(6, 401, Outcome::Unauthorized, Some(Reason::Revoked)),
        entry(7, 403, Outcome::Forbidden, Some(Reason::InsufficientScope)),
        // A reason that is not its outcome's is dropped: none for the origin's answer, the
        // derived one for a refusal.
        entry(8, 200, Outcome::Success, Some(Reason::Revoked)),
        entry(9, 403, Outcome::Forbidden, Some(Reason::Expired)),
        entry(10, 404, Outcome::EdgeRefused, None),
    ];
    let answer = app.ingest(&b).await.expect(StatusCode::OK).body;
    assert_eq!(answer["activity"], 10, "{answer}");
    let want = [
        json!("wrong_environment"),
        json!("revoked"),
        json!("not_found"),
        json!("rate_limit_exceeded"),
        json!("origin_unavailable"),
        json!("revoked"),
        json!("insufficient_scope"),
        Value::Null,
        json!("insufficient_scope"),
        Value::Null,
    ];
    let got = reasons(&app, &id).await;
    let want: Vec<(u64, Value)> = (1..).map(|i| t0 + i).zip(want).collect();
    assert_eq!(got, want);

    // Raw bodies, as an edge newer than this build (or a broken one) might send them.
    let raw = |seq: u64, at: u64, reason: &str| {
        let mut batch = serde_json::to_value(batch(seq, vec![])).unwrap();
        let mut e = serde_json::to_value(entry(at, 401, Outcome::Unauthorized, None)).unwrap();
        e["reason"] = serde_json::from_str(reason).unwrap();
        batch["activity"] = json!([e]);
        serde_json::to_vec(&batch).unwrap()
    };
    // A code this build does not know, or longer than any: stored as none (then derived).
    for (seq, at, reason) in [
        (2, 11, r#""quota_exhausted""#.to_owned()),
        (3, 12, format!(r#""{}""#, "x".repeat(100_000))),
        (4, 13, "null".to_owned()),
    ] {
        let answer = app
            .ingest_body(raw(seq, at, &reason))
            .await
            .expect(StatusCode::OK)
            .body;
        assert_eq!(answer["activity"], 1, "{answer}");
    }
    // Not a string: no edge sends it; refused whole, nothing stored.
    app.ingest_body(raw(5, 14, "7"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let got = reasons(&app, &id).await;
    assert_eq!(got.len(), 13, "{got:?}");
    for (at, reason) in &got[10..] {
        assert_eq!(reason, "revoked", "{at}");
    }
}

#[tokio::test]
async fn denials_outlive_the_activity_cap_but_not_thirty_days() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let a = app.alice_account;
    let t0 = START * 1000 - 60_000;
    let mut first = batch(1, vec![]);
    for i in 0..3 {
        first
            .activity
            .push(activity(&id, a, t0 + i, 403, Outcome::Forbidden));
    }
    app.ingest(&first).await.expect(StatusCode::OK);
    for seq in 2..5 {
        let mut b = batch(seq, vec![]);
        for i in 0..100 {
            b.activity
                .push(activity(&id, a, t0 + seq * 1000 + i, 200, Outcome::Success));
        }
        app.ingest(&b).await.expect(StatusCode::OK);
    }
    let page = app
        .alice()
        .get(&format!("/v1/keys/{id}/activity?limit=500"))
        .await
        .body;
    let data = page["data"].as_array().unwrap();
    let denials = data.iter().filter(|e| e["outcome"] == "403").count();
    assert_eq!(
        (data.len(), denials),
        (203, 3),
        "200 newest forwarded + every denial"
    );
    // The oldest forwarded ones went: the earliest kept is from the second of the three batches.
    let oldest_ok = data
        .iter()
        .filter(|e| e["outcome"] == "2xx")
        .map(|e| e["at_ms"].as_u64().unwrap())
        .min()
        .unwrap();
    assert_eq!(oldest_ok, t0 + 3000);
    // Thirty days later, denials are gone too (hidden at once, deleted by the next compaction
    // pass: `store::retention`, in bounded steps rather than inside an ingestion).
    app.advance(30 * 86_400 + 60);
    let page = app
        .alice()
        .get(&format!("/v1/keys/{id}/activity?outcome=denied"))
        .await
        .body;
    assert_eq!(page["data"], json!([]));
    let done = control::store::retention::compact(
        &app.state.store,
        app.state.settings.retention,
        control::Clock::now(app.clock.as_ref()),
        control::store::retention::STEP_ROWS,
    )
    .await
    .unwrap();
    assert_eq!(done.activity_deleted, 203);
    let rows: i64 = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(|c| {
            Ok(c.query_row("SELECT count(*) FROM activity", [], |r| r.get(0))?)
        })
        .unwrap();
    assert_eq!(rows, 0);
}

/// Finding 5 of issue 10: 1,200 refused requests of one key (600 answered 403, 600 answered 401)
/// were stored as 1,208 activity rows, for 30 days. Now the counts stay exact and the rows are a
/// bounded sample: at most 10 per key, minute and outcome, and the latest 200 per key.
#[tokio::test]
async fn a_flood_of_denials_is_counted_exactly_and_stored_as_a_bounded_sample() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let a = app.alice_account;
    let t0 = START * 1000 - 120_000;
    let minute = t0 / 60_000;
    // Two minutes of refusals, in batches of at most 1000 entries, as several meters send them.
    let mut seq = 0;
    for (outcome, status) in [(Outcome::Forbidden, 403), (Outcome::Unauthorized, 401)] {
        for half in 0..2_u64 {
            seq += 1;
            let mut b = batch(seq, vec![count(&id, a, minute + half, None, outcome, 300)]);
            for i in 0..300 {
                b.activity.push(activity(
                    &id,
                    a,
                    t0 + half * 60_000 + i * 100,
                    status,
                    outcome,
                ));
            }
            let answer = app.ingest(&b).await.expect(StatusCode::OK).body;
            assert_eq!(answer["activity"], 10, "{answer}");
            assert_eq!(answer["sampled_out"], 290, "{answer}");
        }
    }
    let rows: i64 = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(|c| {
            Ok(c.query_row("SELECT count(*) FROM activity", [], |r| r.get(0))?)
        })
        .unwrap();
    eprintln!("denial rows stored for 1,200 refused requests of one key: {rows}");
    assert_eq!(rows, 40, "10 per key, minute and outcome");
    let usage = key_usage(
        &app,
        &id,
        &format!("from={}&granularity=minute", minute * 60),
    )
    .await;
    assert_eq!(usage["totals"]["by_outcome"]["403"], 600, "{usage}");
    assert_eq!(usage["totals"]["by_outcome"]["401"], 600, "{usage}");
    assert_eq!(usage["totals"]["denied"], 1200, "{usage}");
    assert_eq!(usage["totals"]["allowed"], 0, "{usage}");
    // A flood over many minutes keeps the latest 200 rows of the key's denials.
    for m in 0..30_u64 {
        seq += 1;
        let mut b = batch(seq, vec![]);
        for i in 0..20 {
            b.activity.push(activity(
                &id,
                a,
                START * 1000 + m * 60_000 + i,
                429,
                Outcome::RateLimited,
            ));
        }
        app.ingest(&b).await.expect(StatusCode::OK);
    }
    let rows: i64 = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(|c| {
            Ok(c.query_row("SELECT count(*) FROM activity", [], |r| r.get(0))?)
        })
        .unwrap();
    assert_eq!(rows, DENIAL_ACTIVITY_KEEP);
}

#[tokio::test]
async fn the_edges_own_answers_are_never_allowed_traffic() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let a = app.alice_account;
    let b = batch(
        1,
        vec![
            count(&id, a, MINUTE, Some("jobs:read"), Outcome::Success, 1),
            count(&id, a, MINUTE, None, Outcome::EdgeRefused, 300),
            count(&id, a, MINUTE, None, Outcome::EdgeError, 2),
        ],
    );
    app.ingest(&b).await.expect(StatusCode::OK);
    let usage = key_usage(
        &app,
        &id,
        &format!("from={}&granularity=minute", MINUTE * 60),
    )
    .await;
    let t = &usage["totals"];
    assert_eq!(
        (t["allowed"].as_u64(), t["denied"].as_u64()),
        (Some(1), Some(302)),
        "{usage}"
    );
    assert_eq!(t["by_outcome"]["edge_4xx"], 300);
    assert_eq!(t["by_outcome"]["edge_5xx"], 2);
    assert_eq!(t["by_outcome"]["4xx"], 0);
}

#[tokio::test]
async fn key_views_show_last_use_requests_24h_and_unused_scopes() {
    let app = TestApp::new();
    app.advance(3600);
    let now = START + 3600;
    let id = new_key(&app, json!({ "permission": "full_access" })).await;
    let a = app.alice_account;
    let created = app.alice().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(created["requests_24h"], 0);
    assert_eq!(created["unused_scopes"].as_array().unwrap().len(), 9);
    assert_eq!(created["unused_scopes_since"], now);
    assert_eq!(created["idle"], false);
    let mut b = batch(
        1,
        vec![
            count(&id, a, now / 60, Some("jobs:read"), Outcome::Success, 3),
            count(
                &id,
                a,
                now / 60 - 1,
                Some("files:read"),
                Outcome::ClientError,
                2,
            ),
            // Denied requests do not count as use of a scope.
            count(&id, a, now / 60, Some("jobs:write"), Outcome::Forbidden, 4),
            // Older than 24 hours: not in requests_24h.
            count(
                &id,
                a,
                now / 60 - 1440,
                Some("usage:read"),
                Outcome::Success,
                50,
            ),
        ],
    );
    b.last_used.push(LastUsed {
        key_id: kid(&id),
        account_id: a,
        at_ms: now * 1000 - 500,
        client_ip: Some("203.0.113.9".into()),
        user_agent: Some("lynxo-python/1.0".into()),
    });
    app.ingest(&b).await.expect(StatusCode::OK);
    // An older last use in a later batch does not move it back.
    let mut late = batch(2, vec![]);
    late.last_used.push(LastUsed {
        key_id: kid(&id),
        account_id: a,
        at_ms: now * 1000 - 5000,
        client_ip: Some("192.0.2.1".into()),
        user_agent: None,
    });
    app.ingest(&late).await.expect(StatusCode::OK);
    let key = app.alice().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(key["last_used_at"], now - 1);
    assert_eq!(key["last_used_ip"], "203.0.113.9");
    assert_eq!(key["last_used_user_agent"], "lynxo-python/1.0");
    assert_eq!(key["requests_24h"], 9);
    assert_eq!(
        key["unused_scopes"],
        json!([
            "jobs:write",
            "files:write",
            "webhooks:read",
            "webhooks:write",
            "account:read",
            "account:write"
        ]),
        "every write scope of a Full Access key used only for reads"
    );
    let list = app.alice().get("/v1/keys").await.body;
    assert_eq!(list["data"][0]["requests_24h"], 9);
    assert_eq!(list["data"][0]["unused_scopes"], key["unused_scopes"]);
}

#[tokio::test]
async fn keys_idle_for_thirty_days_are_flagged_and_filtered() {
    let app = TestApp::new();
    let used = new_key(&app, json!({ "name": "used" })).await;
    let idle = new_key(&app, json!({ "name": "idle" })).await;
    app.advance(31 * 86_400);
    let now = START + 31 * 86_400;
    let fresh = new_key(&app, json!({ "name": "fresh" })).await;
    let mut b = batch(1, vec![]);
    b.last_used.push(LastUsed {
        key_id: kid(&used),
        account_id: app.alice_account,
        at_ms: (now - 86_400) * 1000,
        client_ip: None,
        user_agent: None,
    });
    app.ingest(&b).await.expect(StatusCode::OK);
    let list = app.alice().get("/v1/keys?idle=true").await.body;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![idle.as_str()]);
    assert_eq!(list["data"][0]["idle"], true);
    let list = app.alice().get("/v1/keys?idle=false").await.body;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let fresh_view = app.alice().get(&format!("/v1/keys/{fresh}")).await.body;
    assert_eq!(fresh_view["idle"], false);
    // A revoked key is not idle: it is revoked.
    app.alice()
        .post(
            &format!("/v1/keys/{idle}/revoke"),
            json!({ "reason": "idle" }),
        )
        .await
        .expect(StatusCode::OK);
    let list = app.alice().get("/v1/keys?idle=true").await.body;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn an_acknowledged_batch_survives_a_restart() {
    let app = TestApp::new();
    let id = new_key(&app, json!({})).await;
    let b = batch(
        7,
        vec![count(
            &id,
            app.alice_account,
            MINUTE,
            None,
            Outcome::Success,
            11,
        )],
    );
    app.ingest(&b).await.expect(StatusCode::OK);
    // "Restart": a new store on the same file (the old one's writer committed before answering).
    let reopened =
        control::store::Store::open(app.state.store.path(), common::audit_keyring()).unwrap();
    let n: i64 = reopened
        .read_blocking::<_, StoreError, _>(|c| {
            Ok(c.query_row("SELECT sum(n) FROM usage_minutes", [], |r| r.get(0))?)
        })
        .unwrap();
    assert_eq!(n, 11);
    let applied: i64 = reopened
        .read_blocking::<_, StoreError, _>(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM usage_batches WHERE source = 'meter-test' AND seq = 7",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(applied, 1, "a retry after the restart is recognised");
}
