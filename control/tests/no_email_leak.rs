//! What someone types into the sign-in form's email box may be anything, a password included: if
//! it names no user it must reach neither the database (SQLite's file and WAL, or PostgreSQL's
//! rows: `common::database_files`) nor the logs, and a failed
//! sign-in to a real user keeps no copy of the email either.
//!
//! It installs a global log subscriber, so it lives in its own test binary.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{PASSWORD, TestApp, capture_logs, contains, database_files};
use control::store::StoreError;
use serde_json::json;

#[tokio::test]
async fn submitted_emails_are_nowhere_in_the_database_wal_or_logs() {
    let logs = capture_logs();

    let app = TestApp::new();
    // A password typed into the email box, and an address that is nobody's.
    let typed = ["Tr0ub4dor&3@hunter2.example", "no.such.user@example.com"];
    for email in typed {
        app.anonymous()
            .post(
                "/v1/sessions",
                json!({ "email": email, "password": "whatever it is" }),
            )
            .await
            .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    app.anonymous()
        .post(
            "/v1/sessions",
            json!({ "email": "Alice@Example.com", "password": "wrong password!" }),
        )
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    // Alice's failure is recorded (after the answer): wait for it.
    for _ in 0..500 {
        if app
            .audit_actions()
            .iter()
            .any(|a| a == "user.sign_in_failed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failed: Vec<String> = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(|c| {
            let mut stmt = c.prepare(
                "SELECT actor || ' ' || coalesce(target, '') || ' ' || details \
                 FROM audit_events WHERE action = 'user.sign_in_failed'",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .unwrap();
    assert_eq!(failed.len(), 1, "only the known user's failure: {failed:?}");
    assert!(!failed[0].contains('@'), "{failed:?}");

    let files = database_files(&app);
    let logs = logs.bytes();
    assert!(contains(&logs, b"sign-in failed"), "the capture works");
    for email in typed {
        for needle in [email.to_owned(), email.to_lowercase()] {
            let files = files.iter().map(|(name, bytes)| (*name, bytes));
            for (name, bytes) in files.chain([("logs", &logs)]) {
                assert!(
                    !contains(bytes, needle.as_bytes()),
                    "{name} contains {needle}"
                );
            }
        }
    }
    // Alice's email is in the users table (that is how she signs in), but no log line has it.
    assert!(!contains(&logs, b"alice@example.com"));
    assert!(!contains(&logs, PASSWORD.as_bytes()));
}

/// A refused write names no value in its error (what a 500 logs as its cause): SQLite's never
/// do, and PostgreSQL's DETAIL ("Key (email)=(...) already exists", "Failing row contains
/// (...)") is left out. Bob's email set to Alice's breaks the unique index; every error of the
/// chain is read, as the error handler reads it.
#[tokio::test]
async fn a_refused_write_names_no_value_in_its_error() {
    let app = TestApp::new();
    let error = app
        .state
        .store
        .write_blocking::<_, StoreError, _>(|tx| {
            Ok(tx.execute(
                "UPDATE users SET email = ?1 WHERE email <> ?1",
                ["alice@example.com"],
            )?)
        })
        .unwrap_err();
    let mut chain = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = cause {
        chain.push(e.to_string());
        chain.push(format!("{e:?}"));
        cause = e.source();
    }
    let said = chain.join("\n");
    assert!(said.to_lowercase().contains("unique"), "{said}");
    assert!(!said.contains("alice@example.com"), "{said}");
}
