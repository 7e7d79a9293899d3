//! What the keyed audit chain costs: appending events (HMAC-SHA256 per event, in the write
//! transaction) and walking the chain as `verify-audit` does, for N events (default 100,000;
//! `cargo bench -p control --bench audit -- 200000`). Beside it, the same walk's unkeyed
//! SHA-256 over the same bytes, for scale.

use control::store::StoreError;
use std::sync::Arc;
use std::time::Instant;

use control::store::Store;
use control::store::audit::{self, Actor};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::audit::AuditKeyring;

fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let ring = Arc::new(AuditKeyring::from_config(&format!(
        "active=1;1:{}",
        "a5".repeat(32)
    ))?);
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("audit.sqlite3"), Arc::clone(&ring))?;
    let actor = Actor {
        actor: "token:1".into(),
        source: Some("203.0.113.7".into()),
    };
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(1000);
        let who = actor.clone();
        store
            .write_blocking::<_, StoreError, _>(move |tx| {
                for i in 0..batch {
                    audit::append(
                        tx,
                        1_800_000_000 + done + i,
                        Some(1),
                        &who,
                        "key.updated",
                        Some("0123456789abcdef0123456789abcdef"),
                        &json!({ "name": { "from": "ci deploy", "to": "ci deploy 2" }, "i": i }),
                    )?;
                }
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("append: {e}"))?;
        done += batch;
    }
    let append = started.elapsed();

    let started = Instant::now();
    let report = store
        .read_blocking::<_, StoreError, _>(|c| Ok(audit::verify_chain(c, &ring, None)))
        .map_err(|e| anyhow::anyhow!("read: {e}"))??;
    let keyed = started.elapsed();
    assert_eq!(report.events, n);

    // The unkeyed walk of 15c57ae, over the same rows: SHA-256(prev || the same bytes).
    let started = Instant::now();
    let hashed = store
        .read_blocking::<_, StoreError, _>(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, at, account_id, actor, action, target, source, details, prev_hash \
                 FROM audit_events ORDER BY seq",
            )?;
            let mut rows = stmt.query([])?;
            let mut count = 0_u64;
            while let Some(r) = rows.next()? {
                let head = serde_json::to_string(&(
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
                .unwrap_or_default();
                let details: String = r.get(7)?;
                let prev: Vec<u8> = r.get(8)?;
                let text = format!("{}, {details}]", &head[..head.len() - 1]);
                let mut h = Sha256::new();
                h.update(&prev);
                h.update(text.as_bytes());
                std::hint::black_box(h.finalize());
                count += 1;
            }
            Ok(count)
        })
        .map_err(|e| anyhow::anyhow!("read: {e}"))?;
    let unkeyed = started.elapsed();
    assert_eq!(hashed, n);

    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!("events: {n}");
    println!(
        "append, keyed (1000 per transaction): {:.2} s, {:.1} µs/event",
        append.as_secs_f64(),
        per(append)
    );
    println!(
        "verify-audit walk, keyed HMAC-SHA256: {:.2} s, {:.2} µs/event",
        keyed.as_secs_f64(),
        per(keyed)
    );
    println!(
        "same walk, unkeyed SHA-256 (15c57ae): {:.2} s, {:.2} µs/event",
        unkeyed.as_secs_f64(),
        per(unkeyed)
    );
    Ok(())
}
