//! The audit trail: append-only, chained with a keyed MAC, anchored outside the database.
//!
//! Each row stores `hash = HMAC-SHA256(chain subkey of kid, prev_hash || canonical row)` and the
//! audit `kid`, where `prev_hash` is the `hash` of the row before it (32 zero bytes for the
//! first). The key is the audit keyring's (`shared::audit::AuditKeyring`), held by the process and
//! never written here: someone who can write this file can edit a row, but cannot give it (or any
//! row after it) a matching `hash`. Deleting or inserting a row breaks the next row's
//! `prev_hash`. Rows cut off the end leave a valid shorter chain: a checkpoint of the head, kept
//! outside the database (`publish::CheckpointPublisher`), reveals them. [`verify_chain`] walks
//! the table and checks it against such a checkpoint. Triggers refuse UPDATE and DELETE through
//! SQL; the chain catches edits made around them.
//!
//! Rows written before schema 4 have no kid and an unkeyed `hash = SHA-256(prev_hash || row)`.
//! They may only form a prefix: the first keyed row (at the latest the `audit.chain_keyed` event
//! [`seal_legacy`] appends at start) chains from the last of them, so once it exists the prefix
//! cannot be rewritten either. An unkeyed row after a keyed one, or past the prefix a checkpoint
//! recorded, is a downgrade and refused.
//!
//! Events are appended in the same transaction as the change they record, on the store's writer
//! thread, which holds the audit keyring.

use crate::store::db::{Db, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::audit::{AuditKeyring, Checkpoint};

use super::{Result, StoreError};
use super::{to_i64, to_u64, writer_audit_keyring};
use crate::events::Event;

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

/// One event of the audit trail, as stored.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Position in the chain.
    pub seq: u64,
    /// Unix seconds.
    pub at: u64,
    /// The account the event belongs to.
    #[schema(required = true)]
    pub account_id: Option<u64>,
    /// Who acted: `user:<id>`, `token:<id>`, `cli`, `system`, ...
    pub actor: String,
    /// Who acted, for a person to read: the user's email, `token "<name>"`, or words for the
    /// service's own actors ([`actor_names`]). Resolved when read, so a token renamed since
    /// shows its name of today; null for a user or token deleted since.
    #[schema(required = true)]
    pub actor_name: Option<String>,
    /// What happened: `key.created`, `key.revoked`, ...
    pub action: String,
    /// What it happened to (a key id, a user id).
    #[schema(required = true)]
    pub target: Option<String>,
    /// Client address.
    #[schema(required = true)]
    pub source: Option<String>,
    /// Event-specific facts.
    #[schema(value_type = Value)]
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

/// The unkeyed chain of rows written before schema 4.
fn legacy_hash(prev: &[u8], canonical: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical.as_bytes());
    h.finalize().to_vec()
}

/// The keyed chain value of a row: what nobody without the audit secret can compute.
fn keyed_hash(key: &shared::mac::MacKey, prev: &[u8], canonical: &str) -> Vec<u8> {
    key.sign_parts(&[prev, canonical.as_bytes()]).to_vec()
}

/// Records `event` in `account_id`'s trail at `at`, done by `who`: [`append`] with the
/// event's action, target and details.
pub fn record(
    tx: &Db<'_>,
    at: u64,
    account_id: Option<u64>,
    who: &Actor,
    event: &Event,
) -> Result<u64> {
    append(
        tx,
        at,
        account_id,
        who,
        event.action(),
        event.target().as_deref(),
        &event.details(),
    )
}

/// Appends an event to the chain, inside the caller's transaction, chained with the active audit
/// key. Runs on the store's writer thread, the only holder of the audit keyring. The service
/// records typed events ([`record`]); this is for the store's own events and the audit
/// benchmark, which appends raw rows.
#[doc(hidden)]
pub fn append(
    tx: &Db<'_>,
    at: u64,
    account_id: Option<u64>,
    who: &Actor,
    action: &str,
    target: Option<&str>,
    details: &Value,
) -> Result<u64> {
    let ring = writer_audit_keyring().ok_or(StoreError::NotWriter)?;
    let kid = ring.active_kid();
    let key = ring.chain(kid).ok_or(StoreError::NoAuditKey)?;
    let last: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
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
    let hash = keyed_hash(key, &prev, &text);
    tx.prepare_cached(
        "INSERT INTO audit_events (seq, at, account_id, actor, action, target, source, details, \
         prev_hash, hash, kid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        to_i64(seq),
        to_i64(at),
        account_id.map(to_i64),
        who.actor,
        action,
        target,
        who.source,
        details,
        prev,
        hash,
        kid
    ])?;
    Ok(seq)
}

/// If the newest event predates the keyed chain, appends `audit.chain_keyed`: from then on the
/// unkeyed prefix is covered by a MAC. Returns the new event's sequence number. Run at start.
pub fn seal_legacy(tx: &Db<'_>, at: u64) -> Result<Option<u64>> {
    let last: Option<(i64, Option<i64>)> = tx
        .query_row(
            "SELECT seq, kid FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((seq, None)) = last else {
        return Ok(None);
    };
    let details = serde_json::json!({ "legacy_events": seq });
    append(
        tx,
        at,
        None,
        &Actor::system(),
        "audit.chain_keyed",
        None,
        &details,
    )
    .map(Some)
}

/// An event's place in the chain: its sequence number and chain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainPoint {
    /// The event's sequence number.
    pub seq: u64,
    /// Its `hash` column.
    pub value: [u8; 32],
}

fn point(seq: i64, value: &[u8]) -> crate::store::db::Result<ChainPoint> {
    let mut v = [0_u8; 32];
    if value.len() != 32 {
        return Err(crate::store::db::Error::column(0, "a hash is 32 bytes"));
    }
    v.copy_from_slice(value);
    Ok(ChainPoint {
        seq: to_u64(seq)?,
        value: v,
    })
}

/// The newest event's sequence number and hash (hex): the chain's head.
pub fn head(conn: &Db<'_>) -> Result<Option<(u64, String)>> {
    Ok(head_point(conn)?.map(|p| (p.seq, hex::encode(p.value))))
}

/// The newest event's place in the chain, as stored (not verified).
pub fn head_point(conn: &Db<'_>) -> Result<Option<ChainPoint>> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(seq, hash)| point(seq, &hash)).transpose()?)
}

/// The sequence number of the last unkeyed (pre-schema-4) event, 0 if none.
pub fn legacy_upto(conn: &Db<'_>) -> Result<u64> {
    let v: Option<i64> = conn.query_row(
        "SELECT max(seq) FROM audit_events WHERE kid IS NULL",
        [],
        |r| r.get(0),
    )?;
    Ok(to_u64(v.unwrap_or(0))?)
}

/// Which of an account's events to read (`GET /v1/audit-events` and its export).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events about this target.
    pub target: Option<String>,
    /// Only this action (`key.revoked`), or, ending in `.`, every action it starts (`key.`).
    pub action: Option<String>,
    /// Only events by this actor (`user:1`, `token:3`).
    pub actor: Option<String>,
    /// Only events at or after this time (Unix seconds).
    pub from: Option<u64>,
    /// Only events before this time (Unix seconds).
    pub to: Option<u64>,
}

/// An account's events, newest first, before `before_seq` if given.
pub fn list(
    conn: &Db<'_>,
    account_id: u64,
    target: Option<&str>,
    before_seq: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditEvent>> {
    let filter = AuditFilter {
        target: target.map(str::to_owned),
        ..AuditFilter::default()
    };
    list_filtered(conn, account_id, &filter, before_seq, limit)
}

/// An account's events that pass `filter`, newest first, before `before_seq` if given, each
/// with its actor's name.
pub fn list_filtered(
    conn: &Db<'_>,
    account_id: u64,
    filter: &AuditFilter,
    before_seq: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditEvent>> {
    let mut events = select(conn, account_id, filter, before_seq, limit, 0, false)?;
    let names = actor_names(conn, account_id, events.iter().map(|e| e.actor.as_str()))?;
    for e in &mut events {
        e.actor_name = names.get(&e.actor).cloned();
    }
    Ok(events)
}

/// Where an export of at most `max` events that pass `filter`, before `before_seq`, ends: the
/// sequence number to pass as `before` for the rest, or `None` when `max` holds them all.
/// Read with the export's first page in one transaction, so events appended meanwhile neither
/// push older ones past the cap nor slip in.
pub fn export_bounds(
    conn: &Db<'_>,
    account_id: u64,
    filter: &AuditFilter,
    before_seq: Option<u64>,
    max: u32,
) -> Result<(u64, Option<u64>)> {
    let start: i64 = conn.query_row(
        "SELECT coalesce(max(seq), 0) + 1 FROM audit_events",
        [],
        |r| r.get(0),
    )?;
    let head = to_u64(start)?;
    let start = before_seq.map_or(head, |b| b.min(head));
    let edge = select(
        conn,
        account_id,
        filter,
        Some(start),
        2,
        max.saturating_sub(1),
        true,
    )?;
    let next = (edge.len() == 2).then(|| edge[0].seq);
    Ok((start, next))
}

/// The rows of [`list_filtered`], `offset` skipped; `seq_only` leaves the columns other than
/// the sequence number empty (for [`export_bounds`]).
fn select(
    conn: &Db<'_>,
    account_id: u64,
    filter: &AuditFilter,
    before_seq: Option<u64>,
    limit: u32,
    offset: u32,
    seq_only: bool,
) -> Result<Vec<AuditEvent>> {
    // With a target, its index; otherwise the account's events by sequence number. The other
    // filters are checked on those rows (an action prefix ends in `.`: `key.` matches
    // `key.created`, compared by `substr` so no `LIKE` wildcard in it means anything).
    let sql = format!(
        "SELECT seq, at, account_id, actor, action, target, source, {} FROM audit_events \
         WHERE account_id = ?1 AND seq < ?2 AND {} \
         AND (CAST(?5 AS TEXT) IS NULL OR action = ?5 \
              OR (substr(?5, length(?5)) = '.' AND substr(action, 1, length(?5)) = ?5)) \
         AND (CAST(?6 AS TEXT) IS NULL OR actor = ?6) \
         AND (CAST(?7 AS BIGINT) IS NULL OR at >= ?7) AND (CAST(?8 AS BIGINT) IS NULL OR at < ?8) \
         ORDER BY seq DESC LIMIT ?3 OFFSET ?9",
        if seq_only { "''" } else { "details" },
        if filter.target.is_some() {
            "target = ?4"
        } else {
            "CAST(?4 AS TEXT) IS NULL"
        },
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            to_i64(account_id),
            before_seq.map_or(i64::MAX, to_i64),
            limit,
            filter.target,
            filter.action,
            filter.actor,
            filter.from.map(to_i64),
            filter.to.map(to_i64),
            offset,
        ],
        |r| {
            let details: String = r.get(7)?;
            Ok(AuditEvent {
                seq: to_u64(r.get(0)?)?,
                at: to_u64(r.get(1)?)?,
                account_id: r.get::<_, Option<i64>>(2)?.map(to_u64).transpose()?,
                actor: r.get(3)?,
                actor_name: None,
                action: r.get(4)?,
                target: r.get(5)?,
                source: r.get(6)?,
                details: serde_json::from_str(&details).unwrap_or(Value::String(details)),
            })
        },
    )?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// The name of each distinct actor among `actors`, for a person to read: a user of the account
/// by email, a management token of the account by name (`token "ci reader"`), and the
/// service's own actors in words. An id of another account, or one deleted since, has none.
pub fn actor_names<'a>(
    conn: &Db<'_>,
    account_id: u64,
    actors: impl Iterator<Item = &'a str>,
) -> Result<std::collections::HashMap<String, String>> {
    let mut names = std::collections::HashMap::new();
    for actor in actors {
        if names.contains_key(actor) {
            continue;
        }
        let (kind, id) = actor.split_once(':').unwrap_or((actor, ""));
        let id: Option<i64> = id.parse().ok();
        let name = match (kind, id) {
            ("user", Some(id)) => conn
                .prepare_cached("SELECT email FROM users WHERE id = ?1 AND account_id = ?2")?
                .query_row(params![id, to_i64(account_id)], |r| r.get::<_, String>(0))
                .optional()?,
            ("token", Some(id)) => conn
                .prepare_cached(
                    "SELECT name FROM management_tokens WHERE id = ?1 AND account_id = ?2",
                )?
                .query_row(params![id, to_i64(account_id)], |r| r.get::<_, String>(0))
                .optional()?
                .map(|n| format!("token \"{n}\"")),
            ("secret_scanning", None) => Some(format!("{} secret scanning", provider(actor))),
            ("cli", None) => Some("command line (lynxo-control)".to_owned()),
            ("system", None) => Some("Lynxo (automatic)".to_owned()),
            ("holder", None) => Some("the key's holder (self-revocation)".to_owned()),
            ("anonymous", None) => Some("not signed in".to_owned()),
            _ => None,
        };
        if let Some(name) = name {
            names.insert(actor.to_owned(), name);
        }
    }
    Ok(names)
}

/// `GitHub` for `secret_scanning:github`: the reporter as its provider spells itself.
fn provider(actor: &str) -> &str {
    match actor.rsplit(':').next() {
        Some("github") => "GitHub",
        Some("gitlab") => "GitLab",
        Some(other) => other,
        None => actor,
    }
}

/// Where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A row's `prev_hash` is not the previous row's hash, or its sequence number skips: a row
    /// was deleted or inserted.
    #[error("audit event {seq}: does not follow the previous event (row deleted or inserted)")]
    Broken {
        /// The first row that does not follow.
        seq: u64,
    },
    /// A row's content does not match its chain value: the row was edited.
    #[error("audit event {seq}: content does not match its MAC (row edited)")]
    Tampered {
        /// The edited row.
        seq: u64,
    },
    /// A row names an audit kid the keyring does not hold.
    #[error("audit event {seq}: chained by audit kid {kid}, which is not in the audit keyring")]
    UnknownKid {
        /// The row.
        seq: u64,
        /// Its kid.
        kid: i64,
    },
    /// An unkeyed row after a keyed one, or beyond the unkeyed prefix a checkpoint recorded: the
    /// chain was rewritten without the key.
    #[error(
        "audit event {seq}: unkeyed where the chain is keyed (rewritten without the audit key)"
    )]
    Downgraded {
        /// The row.
        seq: u64,
    },
    /// The table ends before the anchored event: rows were cut off the end.
    #[error(
        "audit trail truncated: the checkpoint anchors event {anchored}, the table ends at {head}"
    )]
    Truncated {
        /// The checkpoint's sequence number.
        anchored: u64,
        /// The last event in the table (0: none).
        head: u64,
    },
    /// The anchored event's chain value is not the checkpoint's: the chain up to it was replaced.
    #[error("audit event {seq}: differs from the checkpoint that anchors it (chain replaced)")]
    Diverged {
        /// The anchored event.
        seq: u64,
    },
    /// The table could not be read.
    #[error("audit events could not be read: {0}")]
    Read(String),
}

/// What a walk of the chain found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked.
    pub events: u64,
    /// The last unkeyed event (0: none).
    pub legacy_upto: u64,
    /// The last event checked.
    pub head: Option<ChainPoint>,
}

/// Walks the whole chain with the audit keyring and, given the newest checkpoint from outside
/// the database, checks that the table still holds the event it anchors, unchanged.
pub fn verify_chain(
    conn: &Db<'_>,
    keyring: &AuditKeyring,
    anchor: Option<&Checkpoint>,
) -> Result<ChainReport, ChainError> {
    let report = walk(conn, keyring, None, anchor, anchor.map(|a| a.legacy_upto))?;
    if let Some(a) = anchor {
        check_anchor(conn, a, report.head.map_or(0, |h| h.seq))?;
    }
    Ok(report)
}

/// Checks the events after `from` (a point checked before, say by the last checkpoint) up to the
/// newest. `legacy_limit`: the last unkeyed event allowed.
pub fn verify_after(
    conn: &Db<'_>,
    keyring: &AuditKeyring,
    from: ChainPoint,
    legacy_limit: u64,
) -> Result<ChainReport, ChainError> {
    walk(conn, keyring, Some(from), None, Some(legacy_limit))
}

/// Whether the table still holds `anchor`'s event with its chain value, `head` being the last.
pub fn check_anchor(conn: &Db<'_>, anchor: &Checkpoint, head: u64) -> Result<(), ChainError> {
    if head < anchor.seq {
        return Err(ChainError::Truncated {
            anchored: anchor.seq,
            head,
        });
    }
    let read = |e: crate::store::db::Error| ChainError::Read(e.to_string());
    let value: Option<Vec<u8>> = conn
        .query_row(
            "SELECT hash FROM audit_events WHERE seq = ?1",
            [to_i64(anchor.seq)],
            |r| r.get(0),
        )
        .optional()
        .map_err(read)?;
    match value {
        Some(v) if v == anchor.head => Ok(()),
        Some(_) => Err(ChainError::Diverged { seq: anchor.seq }),
        None => Err(ChainError::Broken { seq: anchor.seq }),
    }
}

fn walk(
    conn: &Db<'_>,
    keyring: &AuditKeyring,
    from: Option<ChainPoint>,
    anchor: Option<&Checkpoint>,
    legacy_limit: Option<u64>,
) -> Result<ChainReport, ChainError> {
    let read = |e: crate::store::db::Error| ChainError::Read(e.to_string());
    let mut stmt = conn
        .prepare(
            "SELECT seq, at, account_id, actor, action, target, source, details, prev_hash, hash, \
             kid FROM audit_events WHERE seq > ?1 ORDER BY seq",
        )
        .map_err(read)?;
    let after = from.map_or(0, |p| p.seq);
    let mut rows = stmt.query([to_i64(after)]).map_err(read)?;
    let mut prev = from.map_or(vec![0_u8; 32], |p| p.value.to_vec());
    let mut expected_seq = after + 1;
    // A walk that starts after a checked point starts after the unkeyed prefix, if any.
    let mut keyed_seen = from.is_some_and(|p| legacy_limit.is_none_or(|l| p.seq > l));
    let mut report = ChainReport {
        events: 0,
        legacy_upto: 0,
        head: from,
    };
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
        let kid: Option<i64> = r.get(10).map_err(read)?;
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
        let expected = match kid {
            None => {
                if keyed_seen || legacy_limit.is_some_and(|l| seq > l) {
                    return Err(ChainError::Downgraded { seq });
                }
                report.legacy_upto = seq;
                legacy_hash(&prev_hash, &text)
            }
            Some(kid) => {
                keyed_seen = true;
                let key = u8::try_from(kid)
                    .ok()
                    .and_then(|k| keyring.chain(k))
                    .ok_or(ChainError::UnknownKid { seq, kid })?;
                keyed_hash(key, &prev_hash, &text)
            }
        };
        if expected != hash {
            return Err(ChainError::Tampered { seq });
        }
        report.head = Some(point(to_i64(seq), &hash).map_err(read)?);
        prev = hash;
        expected_seq = seq + 1;
        report.events += 1;
    }
    if let Some(a) = anchor {
        // The prefix the checkpoint recorded must still be there, every row of it.
        if report.legacy_upto != a.legacy_upto && report.head.is_some_and(|h| h.seq >= a.seq) {
            return Err(ChainError::Downgraded {
                seq: report.legacy_upto.max(1),
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, test_audit_keyring};
    use serde_json::json;

    fn store_with_events(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite3"), test_audit_keyring()).unwrap();
        append_events(&store, n);
        (dir, store)
    }

    fn append_events(store: &Store, n: u64) {
        store
            .write_blocking::<_, StoreError, _>(move |tx| {
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
    }

    /// Runs raw SQL the way an attacker with the file would: around the triggers.
    fn tamper(store: &Store, sql: &str) {
        let sql = sql.to_owned();
        store
            .write_blocking::<_, StoreError, _>(move |tx| {
                tx.execute_batch(&format!(
                    "DROP TRIGGER IF EXISTS audit_events_no_update; \
                     DROP TRIGGER IF EXISTS audit_events_no_delete; {sql}"
                ))?;
                Ok(())
            })
            .unwrap();
    }

    /// What an attacker without the audit key can do after editing rows: recompute every chain
    /// value from `from` on, as SHA-256 (optionally marking the rows unkeyed) or as an HMAC under
    /// a key of their own.
    fn rechain(store: &Store, from: u64, how: Rechain) {
        store
            .write_blocking::<_, StoreError, _>(move |tx| {
                tx.execute_batch(
                    "DROP TRIGGER IF EXISTS audit_events_no_update; \
                     DROP TRIGGER IF EXISTS audit_events_no_delete;",
                )?;
                let rows: Vec<StoredRow> = {
                    let mut stmt = tx.prepare(
                        "SELECT seq, at, account_id, actor, action, target, source, details, \
                         prev_hash FROM audit_events ORDER BY seq",
                    )?;
                    let rows = stmt.query_map([], |r| {
                        Ok((
                            to_u64(r.get(0)?)?,
                            to_u64(r.get(1)?)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                            r.get(8)?,
                        ))
                    })?;
                    rows.collect::<crate::store::db::Result<_>>()?
                };
                let forged_key = shared::mac::MacKey::new(b"the attacker's own key");
                let mut prev: Option<Vec<u8>> = None;
                for (seq, at, account, actor, action, target, source, details, stored_prev) in rows
                {
                    let prev_hash = prev.take().unwrap_or(stored_prev);
                    let text = canonical(
                        seq,
                        at,
                        account.map(|a| a as u64),
                        &actor,
                        &action,
                        target.as_deref(),
                        source.as_deref(),
                        &details,
                    );
                    let stored_hash: Vec<u8> = tx.query_row(
                        "SELECT hash FROM audit_events WHERE seq = ?1",
                        [seq as i64],
                        |r| r.get(0),
                    )?;
                    let hash = if seq < from {
                        stored_hash
                    } else {
                        let hash = match how {
                            Rechain::Sha256 | Rechain::Sha256Unkeyed => {
                                legacy_hash(&prev_hash, &text)
                            }
                            Rechain::OwnKey => keyed_hash(&forged_key, &prev_hash, &text),
                        };
                        tx.execute(
                            "UPDATE audit_events SET prev_hash = ?2, hash = ?3 WHERE seq = ?1",
                            params![seq as i64, prev_hash, hash],
                        )?;
                        if how == Rechain::Sha256Unkeyed {
                            tx.execute(
                                "UPDATE audit_events SET kid = NULL WHERE seq = ?1",
                                [seq as i64],
                            )?;
                        }
                        hash
                    };
                    prev = Some(hash);
                }
                Ok(())
            })
            .unwrap();
    }

    /// seq, at, account, actor, action, target, source, details, prev_hash.
    type StoredRow = (
        u64,
        u64,
        Option<i64>,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        Vec<u8>,
    );

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Rechain {
        Sha256,
        Sha256Unkeyed,
        OwnKey,
    }

    fn verify(store: &Store) -> Result<u64, ChainError> {
        verify_anchored(store, None)
    }

    fn verify_anchored(store: &Store, anchor: Option<Checkpoint>) -> Result<u64, ChainError> {
        store
            .read_blocking::<_, StoreError, _>(move |c| {
                Ok(verify_chain(c, &test_audit_keyring(), anchor.as_ref()).map(|r| r.events))
            })
            .unwrap()
    }

    /// The checkpoint the control plane would anchor now.
    fn checkpoint(store: &Store) -> Checkpoint {
        let head = store
            .read_blocking::<_, StoreError, _>(head_point)
            .unwrap()
            .unwrap();
        let legacy = store
            .read_blocking::<_, StoreError, _>(legacy_upto)
            .unwrap();
        Checkpoint {
            kid: 1,
            seq: head.seq,
            legacy_upto: legacy,
            at: 1_000,
            head: head.value,
        }
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (_dir, store) = store_with_events(5);
        assert_eq!(verify(&store), Ok(5));
        let anchor = checkpoint(&store);
        assert_eq!(verify_anchored(&store, Some(anchor)), Ok(5));
        append_events(&store, 2);
        assert_eq!(verify_anchored(&store, Some(anchor)), Ok(7));
        let from = ChainPoint {
            seq: anchor.seq,
            value: anchor.head,
        };
        let after = store
            .read_blocking::<_, StoreError, _>(move |c| {
                Ok(verify_after(c, &test_audit_keyring(), from, 0))
            })
            .unwrap()
            .unwrap();
        assert_eq!((after.events, after.head.map(|h| h.seq)), (2, Some(7)));
    }

    #[test]
    fn rows_cut_off_the_end_are_caught_by_the_checkpoint() {
        let (_dir, store) = store_with_events(5);
        let anchor = checkpoint(&store);
        tamper(&store, "DELETE FROM audit_events WHERE seq >= 4");
        // The shorter chain is valid in itself; only the anchor shows the loss.
        assert_eq!(verify(&store), Ok(3));
        assert_eq!(
            verify_anchored(&store, Some(anchor)),
            Err(ChainError::Truncated {
                anchored: 5,
                head: 3
            })
        );
        // New events past the anchored sequence number do not hide it: the anchored event is
        // not the one that was anchored.
        append_events(&store, 3);
        assert_eq!(
            verify_anchored(&store, Some(anchor)),
            Err(ChainError::Diverged { seq: 5 })
        );
    }

    #[test]
    fn sql_cannot_update_or_delete_events() {
        let (_dir, store) = store_with_events(2);
        for sql in [
            "UPDATE audit_events SET actor = 'x'",
            "DELETE FROM audit_events",
        ] {
            let r = store.write_blocking::<_, StoreError, _>(|tx| Ok(tx.execute(sql, [])?));
            assert!(r.is_err(), "{sql}");
        }
    }

    #[test]
    fn each_kind_of_tampering_is_detected() {
        let cases: [(&str, ChainError); 5] = [
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
            (
                "UPDATE audit_events SET kid = 9 WHERE seq = 4",
                ChainError::UnknownKid { seq: 4, kid: 9 },
            ),
        ];
        for (sql, expected) in cases {
            let (_dir, store) = store_with_events(4);
            tamper(&store, sql);
            assert_eq!(verify(&store), Err(expected), "{sql}");
        }
    }

    #[test]
    fn an_edited_row_is_caught_even_with_every_hash_recomputed() {
        for (how, expected) in [
            (Rechain::Sha256, ChainError::Tampered { seq: 2 }),
            (Rechain::OwnKey, ChainError::Tampered { seq: 2 }),
            (Rechain::Sha256Unkeyed, ChainError::Downgraded { seq: 2 }),
        ] {
            let (_dir, store) = store_with_events(4);
            tamper(
                &store,
                "UPDATE audit_events SET details = '{\"i\":99}' WHERE seq = 2",
            );
            rechain(&store, 2, how);
            assert_eq!(verify(&store), Err(expected.clone()), "{how:?}");
        }
    }

    /// Inserts `n` rows as schema 3 wrote them: no kid, unkeyed SHA-256.
    fn legacy_rows(store: &Store, n: u64) {
        store
            .write_blocking::<_, StoreError, _>(move |tx| {
                let mut prev = vec![0_u8; 32];
                for seq in 1..=n {
                    let details = json!({ "old": seq }).to_string();
                    let text =
                        canonical(seq, 50, Some(1), "cli", "old.event", None, None, &details);
                    let hash = legacy_hash(&prev, &text);
                    tx.execute(
                        "INSERT INTO audit_events (seq, at, account_id, actor, action, target, \
                         source, details, prev_hash, hash) \
                         VALUES (?1, 50, 1, 'cli', 'old.event', NULL, NULL, ?2, ?3, ?4)",
                        params![seq as i64, details, prev, hash],
                    )?;
                    prev = hash;
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn an_unkeyed_prefix_is_sealed_and_then_protected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite3"), test_audit_keyring()).unwrap();
        legacy_rows(&store, 3);
        assert_eq!(verify(&store), Ok(3), "a database from before schema 4");
        let sealed = store
            .write_blocking::<_, StoreError, _>(|tx| seal_legacy(tx, 60))
            .unwrap();
        assert_eq!(sealed, Some(4));
        assert_eq!(
            store
                .write_blocking::<_, StoreError, _>(|tx| seal_legacy(tx, 61))
                .unwrap(),
            None
        );
        append_events(&store, 2);
        assert_eq!(verify(&store), Ok(6));
        let anchor = checkpoint(&store);
        assert_eq!(anchor.legacy_upto, 3);
        assert_eq!(verify_anchored(&store, Some(anchor)), Ok(6));

        // Rewriting an unkeyed row and its unkeyed successors now breaks the keyed seal.
        tamper(
            &store,
            "UPDATE audit_events SET actor = 'user:9' WHERE seq = 2",
        );
        rechain(&store, 2, Rechain::Sha256);
        assert_eq!(verify(&store), Err(ChainError::Tampered { seq: 4 }));
    }

    #[test]
    fn unkeyed_rows_after_the_prefix_are_a_downgrade() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite3"), test_audit_keyring()).unwrap();
        legacy_rows(&store, 2);
        store
            .write_blocking::<_, StoreError, _>(|tx| seal_legacy(tx, 60))
            .unwrap();
        append_events(&store, 2);
        let anchor = checkpoint(&store);
        // Everything rewritten as one unkeyed chain, with the rewritten rows still in place: the
        // chain alone shows a keyed row turned unkeyed ...
        rechain(&store, 3, Rechain::Sha256Unkeyed);
        assert_eq!(
            verify(&store),
            Ok(5),
            "an all-unkeyed chain looks like an old one"
        );
        // ... which the checkpoint's record of the prefix refuses.
        assert_eq!(
            verify_anchored(&store, Some(anchor)),
            Err(ChainError::Downgraded { seq: 3 })
        );
    }
}
