//! What a 1,000-token secret-scanning report costs the control plane: server time through the
//! real router (body read, ECDSA P-256 check, JSON parse, `shared`'s check of each token, the
//! leak transaction with its revocations and audit events, the answer), measured around
//! `oneshot` on a fresh SQLite file with durable commits. Three batches, side by side:
//!
//! - 1,000 genuine live keys reported for the first time: every one recorded and revoked (the
//!   worst case; a fresh database per run);
//! - the same report replayed: every key found, nothing written;
//! - 1,000 look-alikes (valid checksum, bad tag): no database read at all.
//!
//! And how long the first report's write transaction keeps other writers out: on another fresh
//! database, a writer that commits an empty write every millisecond while the report runs; its
//! longest wait is the longest any other write (a key created, a usage batch) waits behind it.
//!
//! `cargo bench -p control --bench leaks [-- RUNS]` (default 5 runs of each).

#[path = "../tests/common/provider.rs"]
mod provider;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use control::store::keys::{self as db, KeyRow};
use control::store::{Store, StoreError};
use control::{AppState, ManualClock, Settings, app, auth};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use shared::key::{Claims, Environment, KeyId};
use shared::scope::Permission;
use tower::ServiceExt as _;

const NOW: u64 = 1_767_225_600;
const TOKENS: usize = 1000;

/// A fresh service with one account holding `TOKENS` live keys; their strings.
fn service(
    provider: &provider::Provider,
    dir: &std::path::Path,
) -> anyhow::Result<(AppState, Vec<String>)> {
    let store = Store::open(
        &dir.join("control.sqlite3"),
        Arc::new(shared::testkit::audit_keyring()),
    )?;
    let settings = Settings {
        argon2: argon2::Params::new(8, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?,
        github_keys_url: Some(provider.url.clone()),
        ..Settings::default()
    };
    let account = auth::bootstrap(
        &store,
        &settings,
        "Bench",
        "bench@example.com",
        "correct horse battery staple",
        NOW,
    )
    .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?
    .account_id;
    let keyring = shared::testkit::keyring();
    let mut rng = shared::testkit::SplitMix(7);
    let mut rows = Vec::with_capacity(TOKENS);
    let mut keys = Vec::with_capacity(TOKENS);
    for _ in 0..TOKENS {
        let id = rng.key_id();
        let claims = Claims {
            kid: keyring.active_kid(),
            account_id: account,
            key_id: id,
            environment: Environment::Production,
            scopes: Permission::ReadWrite.scopes(),
            issued_at: NOW,
            expires_at: None,
        };
        let plain = shared::key::issue(&claims, &keyring).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        rows.push(row(id, account, plain.hint()));
        keys.push(plain.into_inner());
    }
    store
        .write_blocking::<_, StoreError, _>(move |tx| {
            for r in &rows {
                db::insert(tx, r)?;
            }
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("insert: {e}"))?;
    let state = AppState::new(store, keyring, Arc::new(ManualClock::at(NOW)), settings);
    Ok((state, keys))
}

fn row(id: KeyId, account_id: u64, hint: String) -> KeyRow {
    KeyRow {
        id,
        account_id,
        name: "bench".into(),
        description: None,
        environment: Environment::Production,
        scopes: Permission::ReadWrite.scopes(),
        kid: 1,
        hint,
        rate_limit: 600,
        rate_limit_window: 60,
        policy_version: NOW * 1000,
        created_at: NOW,
        expires_at: None,
        last_used_at: None,
        last_used_ip: None,
        last_used_user_agent: None,
        revoked_at: None,
        revoke_reason: None,
        revocation_version: None,
        rotated_from: None,
        rotated_to: None,
        grace_until: None,
        limit_pending: false,
        revocation_in_force: false,
        kid_retired: None,
        budget_id: id,
    }
}

fn report_body(tokens: &[String]) -> Vec<u8> {
    let entries: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({
                "token": t,
                "type": "lynxo_api_key",
                "url": format!("https://github.com/acme/app/blob/0123456789abcdef/config/{i}.yml"),
                "source": "content",
            })
        })
        .collect();
    serde_json::to_vec(&entries).unwrap_or_default()
}

/// Server time of one signed report; asserts every label is `expected`.
async fn time_report(
    state: &AppState,
    provider: &provider::Provider,
    body: &[u8],
    expected: &str,
) -> anyhow::Result<Duration> {
    let request = Request::post("/secret-scanning/github")
        .header("github-public-key-identifier", &provider.identifier)
        .header("github-public-key-signature", provider.sign(body))
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Body::from(body.to_vec()))?;
    let router = app(state.clone());
    let started = Instant::now();
    let response = router.oneshot(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let took = started.elapsed();
    anyhow::ensure!(status == StatusCode::OK, "status {status}");
    let labels: Vec<Value> = serde_json::from_slice(&bytes)?;
    anyhow::ensure!(labels.len() == TOKENS, "{} labels", labels.len());
    anyhow::ensure!(
        labels.iter().all(|l| l["label"] == expected),
        "a label is not {expected}"
    );
    Ok(took)
}

/// The longest wait of a writer committing an empty write every millisecond while a first report
/// of `keys` runs on `state`.
async fn writer_wait_during_report(
    state: &AppState,
    provider: &provider::Provider,
    keys: &[String],
) -> anyhow::Result<Duration> {
    let body = report_body(keys);
    time_report(state, provider, b"[]", "none").await.ok();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, done) = (state.store.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut longest = Duration::ZERO;
            while !done.load(Ordering::SeqCst) {
                tick.tick().await;
                let started = Instant::now();
                store
                    .write::<_, StoreError, _>(|_| Ok(()))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                longest = longest.max(started.elapsed());
            }
            anyhow::Ok(longest)
        })
    };
    let report = time_report(state, provider, &body, "true_positive").await;
    done.store(true, Ordering::SeqCst);
    let longest = writer.await??;
    report?;
    Ok(longest)
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name}: n={} min {:.1} ms, median {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let provider = provider::Provider::new(42);
    let (mut first, mut replay, mut look_alikes) = (Vec::new(), Vec::new(), Vec::new());
    let mut writer_waits = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let (state, keys) = service(&provider, dir.path())?;
        let body = report_body(&keys);
        // Fetch the provider's keys once, outside the measurement (it happens once per process).
        time_report(&state, &provider, b"[]", "none").await.ok();
        first.push(time_report(&state, &provider, &body, "true_positive").await?);
        replay.push(time_report(&state, &provider, &body, "true_positive").await?);
        let forged: Vec<String> = keys
            .iter()
            .map(|k| {
                let claims = shared::key::check(k, &state.keyring, None)
                    .unwrap_or_else(|_| unreachable!("issued above"));
                shared::testkit::forged(&claims).into_inner()
            })
            .collect();
        let forged_body = report_body(&forged);
        look_alikes.push(time_report(&state, &provider, &forged_body, "false_positive").await?);
        let revoked = state
            .store
            .read::<_, StoreError, _>(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM api_keys WHERE revoke_reason = 'leaked'",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(revoked == TOKENS as i64, "{revoked} revoked");
        let dir = tempfile::tempdir()?;
        let (state, keys) = service(&provider, dir.path())?;
        writer_waits.push(writer_wait_during_report(&state, &provider, &keys).await?);
    }
    println!("secret-scanning report of {TOKENS} tokens, server time ({runs} runs each):");
    summary("  1,000 live keys, first report (all revoked)", first);
    summary("  the same report replayed (nothing written)", replay);
    summary("  1,000 look-alikes (no database read)", look_alikes);
    summary(
        "  another writer's longest wait during a first report",
        writer_waits,
    );
    Ok(())
}
