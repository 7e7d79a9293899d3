//! The audit trail: append-only, hash-chained.
//!
//! Each row stores `hash = SHA-256(prev_hash || canonical row)` where `prev_hash` is the hash of
//! the row before it (32 zero bytes for the first). Editing a row changes its hash; deleting or
//! inserting one breaks the next row's `prev_hash`. [`verify_chain`] walks the whole table.
//! Triggers refuse UPDATE and DELETE through SQL; the chain catches edits made around them.
//! Events are appended in the same transaction as the change they record.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{to_i64, to_u64};
use crate::error::Result;

/// Who did something, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `token:<id>`, `user:<id>`, `cli` or `system`.
    pub actor: String,
    /// The client address, when known.
    pub source: Option<String>,
}

impl Actor {
    /// The service itself (publisher, scheduled work).
    pub fn system() -> Self {
        Self {
            actor: "system".into(),
            source: None,
        }
    }
}

/// One stored event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEvent {
    /// Position in the chain.
    pub seq: u64,
    /// Unix seconds.
    pub at: u64,
    /// The account the event belongs to.
    pub account_id: Option<u64>,
    /// Who acted.
    pub actor: String,
    /// What happened: `key.created`, `key.revoked`, ...
    pub action: String,
    /// What it happened to (a key id, a user id).
    pub target: Option<String>,
    /// Client address.
    pub source: Option<String>,
    /// Event-specific facts.
    pub details: Value,
}

// The canonical form lists every column on purpose: a column left out could be edited unseen.
#[allow(clippy::too_many_arguments)]
fn canonical(
    seq: u64,
    at: u64,
    account_id: Option<u64>,
    actor: &str,
    action: &str,
    target: Option<&str>,
    source: Option<&str>,
    details: &str,
) -> String {
    // A JSON array of fixed order; `details` is the exact stored text.
    let head = serde_json::to_string(&(seq, at, account_id, actor, action, target, source))
        .unwrap_or_default();
    format!("{}, {details}]", &head[..head.len() - 1])
}

fn chain_hash(prev: &[u8], canonical: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical.as_bytes());
    h.finalize().to_vec()
}

/// Appends an event to the chain, inside the caller's transaction.
pub fn append(
    tx: &Transaction<'_>,
    at: u64,
    account_id: Option<u64>,
    who: &Actor,
    action: &str,
    target: Option<&str>,
    details: &Value,
) -> Result<u64> {
    let last: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((seq, hash)) => (to_u64(seq)? + 1, hash),
        None => (1, vec![0; 32]),
    };
    let details = details.to_string();
    let text = canonical(
        seq,
        at,
        account_id,
        &who.actor,
        action,
        target,
        who.source.as_deref(),
        &details,
    );
    let hash = chain_hash(&prev, &text);
    tx.execute(
        "INSERT INTO audit_events (seq, at, account_id, actor, action, target, source, details, \
         prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            to_i64(seq),
            to_i64(at),
            account_id.map(to_i64),
            who.actor,
            action,
            target,
            who.source,
            details,
            prev,
            hash
        ],
    )?;
    Ok(seq)
}

/// The newest event's sequence number and hash (hex): the chain's head. Recorded somewhere
/// else (a log, a ticket), it lets a later check notice rows removed from the end, which the
/// chain alone cannot.
pub fn head(conn: &Connection) -> Result<Option<(u64, String)>> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row
        .map(|(seq, hash)| Ok::<_, rusqlite::Error>((to_u64(seq)?, hex::encode(hash))))
        .transpose()?)
}

/// An account's events, newest first, before `before_seq` if given.
pub fn list(
    conn: &Connection,
    account_id: u64,
    target: Option<&str>,
    before_seq: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditEvent>> {
    // Two statements rather than `?4 IS NULL OR target = ?4`, so each uses its index.
    let mut stmt = conn.prepare_cached(if target.is_some() {
        "SELECT seq, at, account_id, actor, action, target, source, details FROM audit_events \
         WHERE account_id = ?1 AND target = ?4 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    } else {
        "SELECT seq, at, account_id, actor, action, target, source, details FROM audit_events \
         WHERE account_id = ?1 AND seq < ?2 AND ?4 IS NULL ORDER BY seq DESC LIMIT ?3"
    })?;
    let rows = stmt.query_map(
        params![
            to_i64(account_id),
            before_seq.map_or(i64::MAX, to_i64),
            limit,
            target
        ],
        |r| {
            let details: String = r.get(7)?;
            Ok(AuditEvent {
                seq: to_u64(r.get(0)?)?,
                at: to_u64(r.get(1)?)?,
                account_id: r.get::<_, Option<i64>>(2)?.map(to_u64).transpose()?,
                actor: r.get(3)?,
                action: r.get(4)?,
                target: r.get(5)?,
                source: r.get(6)?,
                details: serde_json::from_str(&details).unwrap_or(Value::String(details)),
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A row's `prev_hash` is not the previous row's hash: a row was deleted or inserted.
    #[error("audit event {seq}: does not follow the previous event (row deleted or inserted)")]
    Broken {
        /// The first row that does not follow.
        seq: u64,
    },
    /// A row's content does not match its hash: the row was edited.
    #[error("audit event {seq}: content does not match its hash (row edited)")]
    Tampered {
        /// The edited row.
        seq: u64,
    },
    /// The table could not be read.
    #[error("audit events could not be read: {0}")]
    Read(String),
}

/// Walks the whole chain. Returns how many events it checked.
pub fn verify_chain(conn: &Connection) -> Result<u64, ChainError> {
    let read = |e: rusqlite::Error| ChainError::Read(e.to_string());
    let mut stmt = conn
        .prepare(
            "SELECT seq, at, account_id, actor, action, target, source, details, prev_hash, hash \
             FROM audit_events ORDER BY seq",
        )
        .map_err(read)?;
    let mut rows = stmt.query([]).map_err(read)?;
    let mut prev = vec![0_u8; 32];
    let mut expected_seq = 1_u64;
    let mut count = 0;
    while let Some(r) = rows.next().map_err(read)? {
        let seq = to_u64(r.get(0).map_err(read)?).map_err(read)?;
        let at = to_u64(r.get(1).map_err(read)?).map_err(read)?;
        let account_id = r
            .get::<_, Option<i64>>(2)
            .map_err(read)?
            .map(to_u64)
            .transpose()
            .map_err(read)?;
        let actor: String = r.get(3).map_err(read)?;
        let action: String = r.get(4).map_err(read)?;
        let target: Option<String> = r.get(5).map_err(read)?;
        let source: Option<String> = r.get(6).map_err(read)?;
        let details: String = r.get(7).map_err(read)?;
        let prev_hash: Vec<u8> = r.get(8).map_err(read)?;
        let hash: Vec<u8> = r.get(9).map_err(read)?;
        if seq != expected_seq || prev_hash != prev {
            return Err(ChainError::Broken { seq });
        }
        let text = canonical(
            seq,
            at,
            account_id,
            &actor,
            &action,
            target.as_deref(),
            source.as_deref(),
            &details,
        );
        if chain_hash(&prev_hash, &text) != hash {
            return Err(ChainError::Tampered { seq });
        }
        prev = hash;
        expected_seq = seq + 1;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use serde_json::json;

    fn store_with_events(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite3")).unwrap();
        store
            .write_blocking(move |tx| {
                for i in 0..n {
                    append(
                        tx,
                        100 + i,
                        None,
                        &Actor::system(),
                        "test.event",
                        Some("x"),
                        &json!({ "i": i }),
                    )?;
                }
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    /// Runs raw SQL the way an attacker with the file would: around the triggers.
    fn tamper(store: &Store, sql: &str) {
        let sql = sql.to_owned();
        store
            .write_blocking(move |tx| {
                tx.execute_batch(&format!(
                    "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete; {sql}"
                ))?;
                Ok(())
            })
            .unwrap();
    }

    fn verify(store: &Store) -> Result<u64, ChainError> {
        store.read_blocking(|c| Ok(verify_chain(c))).unwrap()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (_dir, store) = store_with_events(5);
        assert_eq!(verify(&store), Ok(5));
    }

    #[test]
    fn the_head_reveals_a_truncated_tail() {
        let (_dir, store) = store_with_events(3);
        let before = store.read_blocking(head).unwrap().unwrap();
        assert_eq!(before.0, 3);
        assert_eq!(before.1.len(), 64);
        tamper(&store, "DELETE FROM audit_events WHERE seq = 3");
        // The chain itself still verifies; only the recorded head shows the loss.
        assert_eq!(verify(&store), Ok(2));
        let after = store.read_blocking(head).unwrap().unwrap();
        assert_ne!(after, before);
    }

    #[test]
    fn sql_cannot_update_or_delete_events() {
        let (_dir, store) = store_with_events(2);
        for sql in [
            "UPDATE audit_events SET actor = 'x'",
            "DELETE FROM audit_events",
        ] {
            let r = store.write_blocking(|tx| Ok(tx.execute(sql, [])?));
            assert!(r.is_err(), "{sql}");
        }
    }

    #[test]
    fn each_kind_of_tampering_is_detected() {
        let cases: [(&str, ChainError); 4] = [
            (
                "UPDATE audit_events SET details = '{\"i\":9}' WHERE seq = 2",
                ChainError::Tampered { seq: 2 },
            ),
            (
                "UPDATE audit_events SET actor = 'user:1' WHERE seq = 3",
                ChainError::Tampered { seq: 3 },
            ),
            (
                "DELETE FROM audit_events WHERE seq = 2",
                ChainError::Broken { seq: 3 },
            ),
            (
                "UPDATE audit_events SET seq = seq + 10 WHERE seq = 1",
                ChainError::Broken { seq: 2 },
            ),
        ];
        for (sql, expected) in cases {
            let (_dir, store) = store_with_events(4);
            tamper(&store, sql);
            assert_eq!(verify(&store), Err(expected), "{sql}");
        }
    }
}
