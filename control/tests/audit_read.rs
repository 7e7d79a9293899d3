//! The audit trail as a person reads it (issue 18, point 10): actors by name, filters by event
//! type, target, actor and time, and the CSV/JSON export: bounded, another account's events in
//! neither, a formula in a key name or revoke reason never a formula in the CSV, bad filters a
//! clear 422.

mod common;

use axum::http::StatusCode;
use common::{START, TestApp};
use control::store::StoreError;
use control::store::audit::{self, Actor};
use serde_json::{Value, json};

fn actions(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn events_name_their_actor_and_filter_by_type_target_actor_and_time() {
    let app = TestApp::new();
    let a = app.create_key(json!({ "name": "first" })).await;
    let a_id = a["id"].as_str().unwrap();
    app.advance(3600);
    let b = app.create_key(json!({ "name": "second" })).await;
    let b_id = b["id"].as_str().unwrap();
    app.alice()
        .post(
            &format!("/v1/keys/{b_id}/revoke"),
            json!({ "reason": "leaked" }),
        )
        .await
        .expect(StatusCode::OK);

    let all = app
        .alice()
        .get("/v1/audit-events")
        .await
        .expect(StatusCode::OK)
        .body;
    let revoked = &all["data"][0];
    assert_eq!(revoked["action"], "key.revoked", "{all}");
    let actor = revoked["actor"].as_str().unwrap();
    assert!(actor.starts_with("token:"), "{revoked}");
    let name = revoked["actor_name"].as_str().unwrap();
    assert!(
        name.starts_with("token \""),
        "a token is named by its name: {name}"
    );

    let only = |q: &str| {
        let q = q.to_owned();
        let app = &app;
        async move {
            app.alice()
                .get(&format!("/v1/audit-events?{q}"))
                .await
                .expect(StatusCode::OK)
                .body
        }
    };
    assert_eq!(actions(&only("action=key.revoked").await), ["key.revoked"]);
    let keys = actions(&only("action=key.").await);
    assert_eq!(
        keys,
        ["key.revoked", "key.created", "key.created"],
        "{keys:?}"
    );
    // A prefix must end in `.`: `key` alone is an exact type, which no event has.
    assert!(actions(&only("action=key").await).is_empty());
    // `_` and `%` are not wildcards.
    assert!(actions(&only("action=key._").await).is_empty());
    assert_eq!(
        actions(&only(&format!("target={a_id}")).await),
        ["key.created"]
    );
    assert_eq!(
        actions(&only(&format!("target={b_id}&action=key.revoked")).await),
        ["key.revoked"]
    );
    let by_actor = only(&format!("actor={actor}&action=key.")).await;
    assert_eq!(actions(&by_actor).len(), 3, "{by_actor}");
    assert!(actions(&only("actor=user:999999").await).is_empty());
    // Time: the first key was made at START, the second an hour later.
    let early = only(&format!("action=key.&from={START}&to={}", START + 60)).await;
    assert_eq!(actions(&early), ["key.created"]);
    assert_eq!(early["data"][0]["target"], a_id);
    let late = only(&format!("action=key.&from={}", START + 3600)).await;
    assert_eq!(actions(&late), ["key.revoked", "key.created"]);
    // A filter pages like the rest.
    let first = only("action=key.&limit=1").await;
    let next = first["next_before"].as_u64().unwrap();
    let second = only(&format!("action=key.&limit=1&before={next}")).await;
    assert_eq!(actions(&second), ["key.created"]);
    assert_eq!(second["data"][0]["target"], b_id);
}

#[tokio::test]
async fn another_accounts_events_match_no_filter_and_no_export() {
    let app = TestApp::new();
    let key = app.create_key(json!({ "name": "alice's" })).await;
    let id = key["id"].as_str().unwrap();
    let alice_actor = app
        .alice()
        .get("/v1/audit-events?action=key.created")
        .await
        .body["data"][0]["actor"]
        .as_str()
        .unwrap()
        .to_owned();
    for q in [
        format!("target={id}"),
        format!("actor={alice_actor}"),
        "action=key.".to_owned(),
    ] {
        let page = app
            .bob()
            .get(&format!("/v1/audit-events?{q}"))
            .await
            .expect(StatusCode::OK)
            .body;
        assert!(actions(&page).is_empty(), "{q}: {page}");
    }
    for format in ["csv", "json"] {
        let export = app
            .bob()
            .get(&format!("/v1/audit-events/export?format={format}"))
            .await
            .expect(StatusCode::OK);
        let text = export.body.to_string();
        assert!(!text.contains(id), "{format}: {text}");
        assert!(!text.contains("alice@example.com"), "{format}: {text}");
    }
    app.anonymous()
        .get("/v1/audit-events/export")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn bad_filters_are_a_clear_422() {
    let app = TestApp::new();
    let long = "k".repeat(65);
    for (q, field) in [
        ("action=key.%25", "action"),
        ("action=key%20created", "action"),
        ("action=", "action"),
        (&*format!("action={long}"), "action"),
        ("actor=user%3A1%27--", "actor"),
        ("actor=", "actor"),
        ("from=9223372036854775808", "to"),
        ("target=", "target"),
    ] {
        for path in ["/v1/audit-events", "/v1/audit-events/export"] {
            let r = app
                .alice()
                .get(&format!("{path}?{q}"))
                .await
                .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
            assert_eq!(r.body["field"], field, "{path}?{q}: {}", r.body);
        }
    }
    // A range that ends before it starts is empty, not an error.
    let empty = app
        .alice()
        .get("/v1/audit-events?from=10&to=5")
        .await
        .expect(StatusCode::OK);
    assert_eq!(empty.body["data"], serde_json::json!([]), "{}", empty.body);
    app.alice()
        .get("/v1/audit-events/export?format=json&from=10&to=5")
        .await
        .expect(StatusCode::OK);
    app.alice()
        .get("/v1/audit-events/export?format=xml")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let r = app.alice().get("/v1/audit-events/export?from=x").await;
    assert!(r.status.is_client_error(), "{r:?}");
    let r = app.alice().get("/v1/audit-events/export?nope=1").await;
    assert!(r.status.is_client_error(), "{r:?}");
}

#[tokio::test]
async fn the_csv_export_is_readable_and_no_cell_is_a_formula() {
    let app = TestApp::new();
    let key = app
        .create_key(json!({ "name": "=HYPERLINK(\"https://evil.example\",\"x\")" }))
        .await;
    let id = key["id"].as_str().unwrap();
    app.alice()
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({ "reason": "@SUM(1+1) -2 +3" }),
        )
        .await
        .expect(StatusCode::OK);

    let r = app
        .alice()
        .get("/v1/audit-events/export?format=csv&action=key.")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(
        r.header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment")),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("lynxo-next-before"), None);
    let csv = r.body.as_str().unwrap().to_owned();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "seq,time,event,target,actor,actor_name,source,details"
    );
    for line in &lines[1..] {
        for cell in line.split("\",\"") {
            let cell = cell.trim_start_matches('"');
            assert!(
                !cell.starts_with(['=', '+', '-', '@']),
                "a formula cell: {cell} in {line}"
            );
        }
        assert!(line.contains(" UTC\""), "the time is a date: {line}");
        assert!(line.contains("token \"\""), "the actor is named: {line}");
    }
    // The name sits inside the details cell (after "name: "), the reason likewise: neither
    // opens a cell. A cell that would, does not stay a formula.
    assert!(csv.contains("reason: @SUM(1+1) -2 +3"), "{csv}");
    assert!(!csv.contains("1796190882"));
    let mut out = String::new();
    control::audit::csv_cell(&mut out, "=HYPERLINK(\"x\")");
    assert_eq!(out, "\"'=HYPERLINK(\"\"x\"\")\"");

    let json_export = app
        .alice()
        .get("/v1/audit-events/export?format=json&action=key.")
        .await
        .expect(StatusCode::OK);
    assert_eq!(json_export.header("content-type"), Some("application/json"));
    let events = json_export.body.as_array().unwrap();
    assert_eq!(events.len(), lines.len() - 1);
    assert!(events.iter().all(|e| e["actor_name"].is_string()));
}

#[tokio::test]
async fn an_export_is_bounded_and_names_where_the_rest_begins() {
    let app = TestApp::new();
    let account = app.alice_account;
    let total = control::audit::EXPORT_MAX as usize + 7;
    app.state
        .store
        .write_blocking::<_, StoreError, _>(move |tx| {
            for i in 0..total {
                audit::append(
                    tx,
                    START + i as u64,
                    Some(account),
                    &Actor::system(),
                    "test.filler",
                    Some(&format!("t{i}")),
                    &json!({ "at": START + i as u64 }),
                )?;
            }
            Ok(())
        })
        .unwrap();
    let r = app
        .alice()
        .get("/v1/audit-events/export?format=json&action=test.filler")
        .await
        .expect(StatusCode::OK);
    let first = r.body.as_array().unwrap().clone();
    assert_eq!(first.len(), control::audit::EXPORT_MAX as usize);
    let next = r.header("lynxo-next-before").unwrap().to_owned();
    assert_eq!(
        next,
        first.last().unwrap()["seq"].as_u64().unwrap().to_string()
    );
    // Newer events meanwhile change nothing of the rest.
    app.create_key(json!({})).await;
    let rest = app
        .alice()
        .get(&format!(
            "/v1/audit-events/export?format=json&action=test.filler&before={next}"
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(rest.header("lynxo-next-before"), None);
    let rest = rest.body.as_array().unwrap().clone();
    assert_eq!(rest.len(), 7);
    let mut seqs: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "no event twice");
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first");
    // And the CSV of the same: as many rows, one header.
    let csv = app
        .alice()
        .get("/v1/audit-events/export?action=test.filler")
        .await
        .expect(StatusCode::OK)
        .body;
    let rows = csv
        .as_str()
        .unwrap()
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(rows, control::audit::EXPORT_MAX as usize + 1);
}
